//! The loader: YAML files → raw documents → a validated [`DesiredState`], or every problem.
//!
//! Stage one reads each document's header (`apiVersion`, `kind`, `metadata.name`) and its raw
//! typed form; stage two, knowing the name of every document, parses each value and checks the
//! references between documents. Nothing stops at the first problem: a broken document still
//! registers its name, so one typo does not cascade into "missing MirrorSet" noise elsewhere.
//! No step scans again what came before (maps and kept counts instead; hints of bounded cost),
//! so the time grows with the size of the files, never with its square.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use super::diagnostic::{Diagnostic, Diagnostics, Position};
use super::image::{ImageRef, Target};
use super::raw::{self, API_VERSION, KINDS};
use super::source::{Source, SourceFile, is_hidden};
use super::yaml::{self, Budget, MAX_DEPTH, MAX_VALUES, PositionIndex, Refused, Segment};
use super::{DesiredState, LoadError, Origin, Schedule};
use secrets::{SECRET_HINT, private_keys, report_secrets};
use suggest::{Suggester, listed};

/// Loads and validates every YAML file of `source`.
pub fn load(source: &dyn Source) -> Result<DesiredState, LoadError> {
    let files = source.yaml_files()?;
    let mut diags = Diagnostics::default();
    if files.is_empty() {
        diags.push(
            Diagnostic::error(source.describe(), "no desired-state documents found (no *.yaml or *.yml files)").hint(
                "point Lifeboat at the folder that holds the Registry, MirrorSet, PrePullSet, BackupPolicy and FailoverSet files",
            ),
        );
        return Err(LoadError::Invalid(diags));
    }
    let suggester = Suggester::new();
    let mut docs = Vec::new();
    for file in &files {
        match &file.text {
            Err(reason) => {
                let mut d = Diagnostic::error(&file.display, reason.message());
                d.line = reason.line();
                if let Some(hint) = reason.hint() {
                    d = d.hint(hint);
                }
                diags.push(d);
            }
            Ok(text) => {
                let mut budget = Budget::new();
                for (number, segment) in yaml::split_documents(text).into_iter().enumerate() {
                    if budget.spent() {
                        break;
                    }
                    if let Some(doc) = read_document(file, number + 1, segment, &mut diags, &suggester, &mut budget) {
                        docs.push(doc);
                    }
                }
            }
        }
    }
    let names = Names::collect(&docs);
    let mut checker = Checker {
        source,
        names,
        diags,
        state: DesiredState::default(),
        first_doc: HashMap::new(),
        target_tags: BTreeMap::new(),
        mirror_repos: BTreeMap::new(),
        failover_upstreams: BTreeMap::new(),
        registry_hosts: HashMap::new(),
        suggester,
    };
    // FailoverSets are read from the validated MirrorSets and Registries, wherever they are
    // written: they come last.
    let (failover, others): (Vec<&Document<'_>>, Vec<&Document<'_>>) =
        docs.iter().partition(|d| d.kind == "FailoverSet");
    for doc in others.into_iter().chain(failover) {
        checker.check(doc);
    }
    let Checker { mut diags, mut state, .. } = checker;
    // A private key is reported where it is written; no other message may quote it, as serde's
    // `invalid type: string "-----BEGIN ..."` would.
    diags.rewrite(|text| private_keys().replace_all(text, "<private key>").into_owned());
    diags = diags.sorted();
    tracing::debug!(
        source = %source.describe(),
        files = files.len(),
        documents = docs.len(),
        errors = diags.error_count(),
        warnings = diags.warning_count(),
        "loaded desired state"
    );
    if diags.has_errors() {
        return Err(LoadError::Invalid(diags));
    }
    state.warnings = diags;
    Ok(state)
}

/// A document after stage one.
struct Document<'a> {
    file: &'a SourceFile,
    index: PositionIndex,
    kind: &'static str,
    name: Option<String>,
    /// `Kind/name`, or `Kind in document N` without a name.
    label: String,
    /// The typed document, when it deserialized.
    raw: Option<Raw>,
}

enum Raw {
    Registry(raw::RegistryDocument),
    MirrorSet(raw::MirrorSetDocument),
    PrePullSet(raw::PrePullSetDocument),
    BackupPolicy(raw::BackupPolicyDocument),
    FailoverSet(raw::FailoverSetDocument),
}

impl Document<'_> {
    fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::error(&self.file.display, message).at(self.index.find(path));
        d.document = Some(self.label.clone());
        d.path = (!path.is_empty()).then(|| path.to_string());
        d
    }

    fn origin(&self) -> Origin {
        Origin { file: self.file.display.clone(), line: self.index.find("kind").map_or(1, |p| p.line) }
    }
}

/// Stage one: header, secrets, typed deserialization. Returns `None` when the document cannot
/// even be classified (syntax error, not a mapping, unknown apiVersion or kind).
fn read_document<'a>(
    file: &'a SourceFile,
    number: usize,
    segment: Segment<'_>,
    diags: &mut Diagnostics,
    suggester: &Suggester,
    budget: &mut Budget,
) -> Option<Document<'a>> {
    let fallback_label = format!("document {number}");
    let located = |message: String, position: Option<Position>| {
        let mut d = Diagnostic::error(&file.display, message).at(position);
        d.document = Some(fallback_label.clone());
        d
    };
    // Positions first: this pass also refuses a document too deep to hand to serde_yaml.
    let syntax_error = |e: yaml::YamlError| {
        located(format!("YAML syntax error: {}", e.message), e.position)
            .hint("check indentation and quoting around this place; a `:` or `#` inside a value needs quotes")
    };
    let index = match PositionIndex::build(segment, budget) {
        Ok(index) => index,
        Err(Refused::TooDeep(position)) => {
            diags.push(
                located(format!("the document nests mappings and sequences deeper than {MAX_DEPTH} levels"), Some(position))
                    .hint("desired-state documents need fewer than 10 levels: look for an unclosed `[` or `{`, or a value indented too far"),
            );
            return None;
        }
        Err(Refused::TooMany(position)) => {
            diags.push(
                located(
                    format!("the file holds more than {MAX_VALUES} values (keys, values and list items); the rest of it was not read"),
                    Some(position),
                )
                .hint("desired-state files are small (a MirrorSet of 80,000 tags holds about 80,000): split the documents over several files, or choose tags with tagRules instead of listing them"),
            );
            return None;
        }
        Err(Refused::Syntax(e)) => {
            diags.push(syntax_error(e));
            return None;
        }
    };
    let value: serde_yaml::Value = match yaml::from_segment(segment) {
        Ok(v) => v,
        Err(e) => {
            diags.push(syntax_error(e));
            return None;
        }
    };
    let Some(mapping) = value.as_mapping() else {
        report_secrets(&index, file, &fallback_label, diags);
        diags.push(
            located("a document must be a mapping with apiVersion, kind, metadata and spec".into(), index.find(""))
                .hint("start the document with `apiVersion: lifeboat.dev/v1alpha1`"),
        );
        return None;
    };
    let text_field = |key: &str| mapping.get(key).and_then(serde_yaml::Value::as_str);
    // serde reads any scalar into a string, so the name is taken the same way here.
    let name = mapping.get("metadata").and_then(|m| m.get("name")).and_then(|v| match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    });
    let label = match (text_field("kind"), &name) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        (Some(kind), None) => format!("{kind} in {fallback_label}"),
        _ => fallback_label.clone(),
    };
    let secret_keys = report_secrets(&index, file, &label, diags);
    let located = |message: String, position: Option<Position>| {
        let mut d = Diagnostic::error(&file.display, message).at(position);
        d.document = Some(label.clone());
        d
    };
    let api_version = text_field("apiVersion");
    if api_version != Some(API_VERSION) {
        let message = match api_version {
            None => "the document has no apiVersion".to_string(),
            Some(v) => format!("unknown apiVersion `{v}`"),
        };
        diags.push(
            located(message, index.find("apiVersion"))
                .hint(format!("this release of Lifeboat reads `apiVersion: {API_VERSION}`")),
        );
        return None;
    }
    // The status report Lifeboat commits may sit inside the desired-state folder: its
    // documents are not desired state, and are left alone.
    if text_field("kind").is_some_and(|k| crate::desired::raw::STATUS_KINDS.contains(&k)) {
        return None;
    }
    let kind = match text_field("kind") {
        Some(k) => match KINDS.iter().find(|known| **known == k) {
            Some(known) => *known,
            None => {
                let hint = match suggester.closest(k, KINDS.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? The kinds are {}", KINDS.join(", ")),
                    None => format!("the kinds are {}", KINDS.join(", ")),
                };
                diags.push(located(format!("unknown kind `{k}`"), index.find("kind")).hint(hint));
                return None;
            }
        },
        None => {
            diags.push(
                located("the document has no kind".into(), index.find(""))
                    .hint(format!("add `kind:` with one of {}", KINDS.join(", "))),
            );
            return None;
        }
    };
    let mut doc = Document { file, index, kind, name, label, raw: None };
    let typed = match kind {
        "Registry" => yaml::from_segment(segment).map(Raw::Registry),
        "MirrorSet" => yaml::from_segment(segment).map(Raw::MirrorSet),
        "PrePullSet" => yaml::from_segment(segment).map(Raw::PrePullSet),
        "FailoverSet" => yaml::from_segment(segment).map(Raw::FailoverSet),
        _ => yaml::from_segment(segment).map(Raw::BackupPolicy),
    };
    match typed {
        Ok(raw) => doc.raw = Some(raw),
        Err(e) => {
            // A secret key already reported is not reported again as an unknown field.
            let unknown = e.message.split_once("unknown field `").and_then(|(_, rest)| rest.split_once('`'));
            if !unknown.is_some_and(|(field, _)| secret_keys.iter().any(|k| k == field)) {
                diags.push(shape_error(&doc, e, suggester));
            }
        }
    }
    Some(doc)
}

/// Turns a serde error into a diagnostic with the field path split out and a hint.
fn shape_error(doc: &Document<'_>, e: yaml::YamlError, suggester: &Suggester) -> Diagnostic {
    let (path, message) = match e.message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (Some(p.to_string()), m.to_string()),
        _ => (None, e.message.clone()),
    };
    let mut d = Diagnostic::error(&doc.file.display, message.clone()).at(e.position);
    d.document = Some(doc.label.clone());
    d.path = path;
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        d.hint = Some(match suggester.closest(field, candidates.iter().copied()) {
            _ if field == "<<" => "YAML merge keys (`<<`) are not supported: write the fields out".into(),
            Some(c) => format!("did you mean `{c}`?"),
            None if candidates.is_empty() => "remove this field".into(),
            None => format!("remove this field; the fields here are {}", candidates.join(", ")),
        });
    } else if message.starts_with("invalid type") && message.ends_with("expected a string") {
        d.hint = Some("write the value as text, in quotes if it contains special characters".into());
    } else if message.starts_with("missing field") {
        d.hint = Some("add the field; the schema in schema/lifeboat.schema.json lists every field".into());
    } else if message.starts_with("unknown variant") {
        d.hint = Some("use one of the values listed".into());
    }
    d
}

/// The names of every classified document, broken or not.
struct Names {
    mirror_sets: BTreeSet<String>,
    /// Hosts that MirrorSets write to: where pre-pull and backup images are expected to live.
    mirror_hosts: BTreeSet<String>,
}

impl Names {
    fn collect(docs: &[Document<'_>]) -> Names {
        let mirror_sets = docs.iter().filter(|d| d.kind == "MirrorSet").filter_map(|d| d.name.clone()).collect();
        let mirror_hosts = docs
            .iter()
            .filter_map(|d| match &d.raw {
                Some(Raw::MirrorSet(m)) => Target::parse(&m.spec.target).ok().map(|t| t.host),
                _ => None,
            })
            .collect();
        Names { mirror_sets, mirror_hosts }
    }
}

/// Stage two: values and cross-references.
struct Checker<'s> {
    source: &'s dyn Source,
    names: Names,
    diags: Diagnostics,
    state: DesiredState,
    /// First document seen per (kind, name), for duplicate reports.
    first_doc: HashMap<(&'static str, String), String>,
    /// Every fixed mirror reference written so far, with who writes it.
    target_tags: BTreeMap<String, String>,
    /// Every mirror repository written so far: the upstream repository it holds, and who
    /// writes it.
    mirror_repos: BTreeMap<String, (String, String)>,
    /// Every upstream a FailoverSet fails over so far: the set, its node selector, and where.
    failover_upstreams: BTreeMap<String, failover::Claim>,
    /// The Registry document kept for each host.
    registry_hosts: HashMap<String, String>,
    suggester: Suggester,
}

impl Checker<'_> {
    fn check(&mut self, doc: &Document<'_>) {
        let Some(name) = &doc.name else {
            // A document that deserialized has a name; otherwise the typed stage reported why.
            if doc.raw.is_some() {
                self.diags.push(doc.diagnostic("metadata.name", "the document has no usable metadata.name"));
            }
            return;
        };
        if let Err(message) = check_name(name) {
            self.diags.push(
                doc.diagnostic("metadata.name", message)
                    .hint("use lowercase letters, digits and `-`, such as `vendor-base`"),
            );
        }
        let at = format!("{}:{}", doc.file.display, doc.index.find("metadata.name").map_or(1, |p| p.line));
        if let Some(first) = self.first_doc.get(&(doc.kind, name.clone())) {
            self.diags.push(
                doc.diagnostic(
                    "metadata.name",
                    format!("duplicate {} name `{name}`, first defined at {first}", doc.kind),
                )
                .hint("give each document of a kind its own name"),
            );
            return;
        }
        self.first_doc.insert((doc.kind, name.clone()), at);
        match &doc.raw {
            None => {}
            Some(Raw::Registry(r)) => {
                if let Some(registry) = self.registry(doc, &r.spec) {
                    self.add_registry(doc, name, registry);
                }
            }
            Some(Raw::MirrorSet(m)) => {
                if let Some(set) = self.mirror_set(doc, name, &m.spec) {
                    self.state.mirror_sets.insert(name.clone(), set);
                }
            }
            Some(Raw::PrePullSet(p)) => {
                if let Some(set) = self.pre_pull_set(doc, &p.spec) {
                    self.state.pre_pull_sets.insert(name.clone(), set);
                }
            }
            Some(Raw::BackupPolicy(b)) => {
                if let Some(policy) = self.backup_policy(doc, &b.spec) {
                    self.state.backup_policies.insert(name.clone(), policy);
                }
            }
            Some(Raw::FailoverSet(f)) => {
                if let Some(set) = self.failover_set(doc, name, &f.spec) {
                    self.state.failover_sets.insert(name.clone(), set);
                }
            }
        }
    }

    /// Checks one field: its value, or a diagnostic at `path` and `None`.
    fn field<T>(&mut self, doc: &Document<'_>, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.diags.push(doc.diagnostic(path, message));
                None
            }
        }
    }

    /// Errors so far; a conversion returns `None` when it added any.
    fn errors(&self) -> usize {
        self.diags.error_count()
    }

    fn warn(&mut self, doc: &Document<'_>, path: &str, message: impl Into<String>) {
        self.diags.push(doc.diagnostic(path, message).warning());
    }

    /// A path to a file inside the desired-state tree, which must exist.
    fn repo_file(&mut self, doc: &Document<'_>, path: &str, value: &str) -> Option<String> {
        // The same normal form for every source: no `.` or empty components.
        let components: Vec<&str> = value.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let normalized = components.join("/");
        let problem = if value.starts_with('/') {
            Some(format!("`{value}` is absolute; files named in the desired state are relative to its root"))
        } else if components.contains(&"..") {
            Some(format!("`{value}` leaves the desired-state tree"))
        } else if components.iter().any(|c| is_hidden(c)) {
            Some(format!("`{value}` is inside a hidden folder or is a hidden file, which Lifeboat does not read"))
        } else if !self.source.has_file(&normalized) {
            Some(format!("`{value}` does not exist in the desired state ({})", self.source.describe()))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.diags.push(
                    doc.diagnostic(path, message)
                        .hint("commit the file next to the YAML and give its path relative to the desired-state root"),
                );
                None
            }
            None => Some(normalized),
        }
    }

    fn schedule(&mut self, doc: &Document<'_>, path: &str, expression: &str) -> Option<Schedule> {
        let result = Schedule::from_str(expression);
        if let Err(e) = &result {
            let mut d = doc.diagnostic(path, e.message.clone());
            if e.never_runs {
                d = d.hint(
                    "check the day of the month against the month: February has at most 29 days, and April, June, \
                     September and November have 30",
                );
            } else if !expression.trim().starts_with('@') {
                d = d.hint(
                    "write five fields, minute hour day-of-month month day-of-week, such as \"0 * * * *\" for hourly",
                );
            }
            self.diags.push(d);
        }
        result.ok()
    }

    /// Reports every name in `spec.mirrorSets` that no MirrorSet document has.
    fn mirror_set_refs(&mut self, doc: &Document<'_>, mirror_sets: &[String]) {
        for (i, set) in mirror_sets.iter().enumerate() {
            if !self.names.mirror_sets.contains(set) {
                let hint = match self.suggester.closest(set, self.names.mirror_sets.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if self.names.mirror_sets.is_empty() => {
                        "no MirrorSet is defined; add one or remove this reference".into()
                    }
                    None => format!("the MirrorSets are {}", listed(self.names.mirror_sets.iter().map(String::as_str))),
                };
                self.diags.push(
                    doc.diagnostic(&format!("spec.mirrorSets[{i}]"), format!("MirrorSet `{set}` does not exist"))
                        .hint(hint),
                );
            }
        }
    }

    /// MirrorSet names and explicit mirror references shared by pre-pull sets and backups.
    fn image_selection(
        &mut self,
        doc: &Document<'_>,
        mirror_sets: &[String],
        images: &[String],
    ) -> (BTreeSet<String>, BTreeSet<ImageRef>) {
        self.mirror_set_refs(doc, mirror_sets);
        let refs: BTreeSet<ImageRef> = images
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let path = format!("spec.images[{i}]");
                let image = self.field(doc, &path, ImageRef::parse(r))?;
                let host = &image.repository.host;
                if !self.names.mirror_hosts.is_empty() && !self.names.mirror_hosts.contains(host) {
                    let mirrors = listed(self.names.mirror_hosts.iter().map(String::as_str));
                    self.diags.push(
                        doc.diagnostic(
                            &path,
                            format!(
                                "`{r}` is not on a mirror host ({mirrors}): during an outage it is pulled from `{host}`"
                            ),
                        )
                        .hint("name the mirrored copy of the image, or add its source to a MirrorSet")
                        .warning(),
                    );
                }
                Some(image)
            })
            .collect();
        if mirror_sets.is_empty() && images.is_empty() {
            self.diags.push(
                doc.diagnostic("spec", "no image is selected")
                    .hint("name MirrorSets in `mirrorSets:` or mirror references in `images:`"),
            );
        }
        (mirror_sets.iter().cloned().collect(), refs)
    }
}

/// The regex crate's message ends with the reason after its picture of the pattern.
fn regex_problem(pattern: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text.rsplit("error: ").next().unwrap_or(&text).trim();
    format!("`{pattern}` is not a valid regular expression: {reason}")
}

/// A DNS-1123 label: what Kubernetes accepts as the name of most objects.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(format!("`{name}` is not a valid name")) }
}

/// A DNS-1123 subdomain: the names of Secrets and PriorityClasses.
fn check_subdomain(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| check_name(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid {what} name: lowercase letters, digits, `-` and `.`, at most 253 characters"
        ))
    }
}

mod backup;
mod failover;
mod mirror;
mod prepull;
mod registry;
mod secrets;
mod suggest;

#[cfg(test)]
mod tests;
