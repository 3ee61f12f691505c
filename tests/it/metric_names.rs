//! The metric names the deployment files and the READMEs use are the ones the daemon exports.
//!
//! The exported names come from the daemon's own exposition (`Metrics::encode`), so this check
//! cannot drift from the code: every `lifeboat_*` name in the alert rules and their unit tests,
//! the PrometheusRule, the Grafana dashboards, `deploy/README.md` and the README's metrics table
//! is a series Lifeboat exports, and that table documents every metric Lifeboat exports.

use std::collections::BTreeSet;

use crate::support::root;

/// One metric family of the exposition, as its `# TYPE` line names it.
struct Family {
    name: String,
    kind: String,
}

impl Family {
    /// The names PromQL selects this family's series by: counters gain `_total`, histograms
    /// `_bucket`, `_sum` and `_count`.
    fn series(&self) -> Vec<String> {
        match self.kind.as_str() {
            "counter" => vec![format!("{}_total", self.name)],
            "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
            "gauge" => vec![self.name.clone()],
            other => panic!("{} is a {other}: teach this test the names of its series", self.name),
        }
    }

    /// The name a reader looks the family up by: a histogram by its own name, anything else by
    /// its one series.
    fn documented_as(&self) -> String {
        match self.kind.as_str() {
            "histogram" => self.name.clone(),
            _ => self.series().remove(0),
        }
    }
}

/// Every metric family the daemon exports, storage gauges included (they are registered only
/// when Lifeboat is given a folder on the mirror's storage).
fn exported() -> Vec<Family> {
    let storage = tempfile::tempdir().unwrap();
    let metrics = lifeboat::metrics::Metrics::new(Some(storage.path().to_path_buf()));
    let families: Vec<Family> =
        metrics.families().iter().map(|(name, kind)| Family { name: name.clone(), kind: kind.clone() }).collect();
    assert!(families.len() > 20, "only {} metric families registered", families.len());
    // The exposition agrees with the list: each family it shows is in it, with that type.
    for line in metrics.encode().lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap_or_else(|| panic!("no type in `# TYPE {line}`"));
        assert!(
            families.iter().any(|f| f.name == name && f.kind == kind),
            "{name} ({kind}) is exported but not listed"
        );
    }
    families
}

/// The names a file may use: every series, and a histogram's own name (prose names it so).
fn known_names(families: &[Family]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = families.iter().flat_map(Family::series).collect();
    names.extend(families.iter().filter(|f| f.kind == "histogram").map(|f| f.name.clone()));
    names
}

/// A `lifeboat_*` name found in a file: its line, the name, and whether it ends in `*` (a
/// family of names sharing that prefix, as in `lifeboat_mirror_storage_*`).
#[derive(Debug, PartialEq)]
struct Use {
    line: usize,
    name: String,
    prefix: bool,
}

/// Every `lifeboat_*` word of `text`. A word is letters, digits and `_`; `lifeboat_` inside a
/// longer word (`my_lifeboat_x`) is not a use.
fn uses(text: &str) -> Vec<Use> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices("lifeboat_") {
            if line[..at].chars().next_back().is_some_and(word) {
                continue;
            }
            let rest = &line[at..];
            let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
            found.push(Use { line: n + 1, name: rest[..end].to_string(), prefix: rest[end..].starts_with('*') });
        }
    }
    found
}

/// Problems with the uses in `text` (from `file`): names Lifeboat does not export.
fn unknown_uses(file: &str, text: &str, known: &BTreeSet<String>) -> Vec<String> {
    uses(text)
        .into_iter()
        .filter(|u| if u.prefix { !known.iter().any(|k| k.starts_with(&u.name)) } else { !known.contains(&u.name) })
        .map(|u| {
            let what = if u.prefix { format!("{}*", u.name) } else { u.name };
            format!("{file}:{}: {what} is not a metric Lifeboat exports", u.line)
        })
        .collect()
}

/// The README's metrics table: the lines of its rows, from the `### Metrics` heading to the next
/// heading, each with its line number.
fn readme_metrics_table(readme: &str) -> Vec<(usize, &str)> {
    let mut rows = Vec::new();
    let mut inside = false;
    for (n, line) in readme.lines().enumerate() {
        if line.starts_with('#') {
            inside = line.trim() == "### Metrics";
            continue;
        }
        if inside && line.starts_with("| `") {
            rows.push((n + 1, line));
        }
    }
    rows
}

/// The names in the first column of a table row.
fn first_cell_names(row: &str) -> Vec<String> {
    let cell = row.trim_start_matches('|').split('|').next().unwrap_or_default();
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The files whose `lifeboat_*` names must all be exported, relative to the project root.
fn files_naming_metrics() -> Vec<String> {
    let mut files = vec!["deploy/base/prometheusrule.yaml".to_string(), "deploy/README.md".to_string()];
    for (dir, ext) in [("deploy/prometheus", "yaml"), ("deploy/grafana", "json")] {
        let mut found: Vec<String> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == ext))
            .map(|path| format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()))
            .collect();
        assert!(!found.is_empty(), "no .{ext} file in {dir}");
        found.sort();
        files.extend(found);
    }
    files
}

#[test]
fn every_metric_the_rules_dashboards_and_readmes_name_is_one_lifeboat_exports() {
    let known = known_names(&exported());
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in files_naming_metrics() {
        let text = std::fs::read_to_string(root().join(&file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        checked += uses(&text).len();
        problems.extend(unknown_uses(&file, &text, &known));
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme_metrics_table(&readme);
    assert!(!table.is_empty(), "README.md has no metrics table under `### Metrics`");
    for (line, row) in table {
        for name in first_cell_names(row) {
            checked += 1;
            if !known.contains(&name) {
                problems.push(format!("README.md:{line}: {name} is not a metric Lifeboat exports"));
            }
        }
    }
    assert!(checked > 100, "only {checked} metric names found: is the scan still reading the files?");
    assert!(
        problems.is_empty(),
        "{}\n(the metrics are registered in src/metrics.rs; counters are queried with _total, histograms \
         with _bucket, _sum and _count)",
        problems.join("\n")
    );
}

#[test]
fn the_readme_metrics_table_documents_every_metric_lifeboat_exports() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let documented: BTreeSet<String> =
        readme_metrics_table(&readme).into_iter().flat_map(|(_, row)| first_cell_names(row)).collect();
    let missing: Vec<String> =
        exported().iter().map(Family::documented_as).filter(|name| !documented.contains(name)).collect();
    assert!(
        missing.is_empty(),
        "README.md's metrics table (under `### Metrics`) does not document: {}",
        missing.join(", ")
    );
}

#[test]
fn names_are_found_as_whole_words_with_their_lines() {
    let text = "expr: rate(lifeboat_sync_runs_total[5m])\n# see my_lifeboat_x and `lifeboat_mirror_storage_*`";
    assert_eq!(
        uses(text),
        vec![
            Use { line: 1, name: "lifeboat_sync_runs_total".into(), prefix: false },
            Use { line: 2, name: "lifeboat_mirror_storage_".into(), prefix: true },
        ]
    );
    let known = BTreeSet::from(["lifeboat_sync_runs_total".to_string()]);
    assert_eq!(
        unknown_uses("rules.yaml", text, &known),
        vec!["rules.yaml:2: lifeboat_mirror_storage_* is not a metric Lifeboat exports"]
    );
    assert_eq!(first_cell_names("| `lifeboat_a`, `lifeboat_b` | `set` | Meaning |"), ["lifeboat_a", "lifeboat_b"]);
}
