//! The status report from passes run against the in-memory registry.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::desired::source::MemorySource;
use crate::desired::{LoadError, load};
use crate::readiness::Readiness;
use crate::reconcile;
use crate::registry::fake::FakeRegistry;

const UP: &str = "up.example";
const MIRROR: &str = "mirror.example:5000";

fn digest(n: u32) -> Digest {
    crate::registry::manifest::sha256(format!("image {n}").as_bytes())
}

fn state() -> DesiredState {
    let text = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: base}}\nspec:\n  target: {MIRROR}/m\n  signatures: {{keys: [keys/k.pub]}}\n  images:\n    - source: {UP}/app\n      tags: [\"1.0\", \"1.1\", \"2.0\"]\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {{name: critical}}\nspec:\n  mirrorSets: [base]\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  mirrorSets: [base]\n  destination: /var/backups/lifeboat\n  retention: {{keep: 7}}\n"
    );
    let source = MemorySource {
        files: BTreeMap::from([("mirrors.yaml".to_string(), text), ("keys/k.pub".to_string(), String::new())]),
    };
    match load(&source) {
        Ok(s) => s,
        Err(LoadError::Invalid(d)) => panic!("{d}"),
        Err(e) => panic!("{e}"),
    }
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, hour, 0, 0).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// 1.0 signed and copied; 1.1 unsigned, so rejected; 2.0 absent upstream.
fn registry() -> FakeRegistry {
    let registry = FakeRegistry::default();
    registry.push(&format!("{UP}/app"), "1.0", &digest(1));
    registry.push(&format!("{UP}/app"), "1.1", &digest(2));
    registry.sign(&format!("{UP}/app"), &digest(1));
    registry
}

fn pass(
    desired: &DesiredState,
    registry: &FakeRegistry,
    when: DateTime<Utc>,
    earlier: &BTreeMap<String, SetPass>,
) -> BTreeMap<String, SetPass> {
    let pass = rt().block_on(reconcile::mirror::run(desired, registry));
    let last_success = earlier.iter().filter_map(|(n, p)| Some((n.clone(), p.last_success?))).collect();
    pass.by_set(when, when, &last_success)
}

fn text(files: &BTreeMap<String, Vec<u8>>, path: &str) -> String {
    String::from_utf8(files[path].clone()).unwrap()
}

fn alerts() -> Vec<String> {
    vec!["LifeboatSyncFailing".into(), "LifeboatSyncLagging".into()]
}

/// A desired-state tree id.
const TREE: &str = "0123456789abcdef0123456789abcdef01234567";

/// No status committed yet.
static NONE: BTreeMap<String, Vec<u8>> = BTreeMap::new();
static NO_BACKUPS: BTreeMap<String, BackupObservation> = BTreeMap::new();
static NO_PRE_PULL: std::sync::LazyLock<crate::prepull::PrePullPass> = std::sync::LazyLock::new(Default::default);

/// A report on a valid desired state with no status committed yet.
fn first_input<'a>(
    desired: &'a DesiredState,
    tree: &'a str,
    passes: &'a BTreeMap<String, SetPass>,
    alerts: &'a [String],
    now: DateTime<Utc>,
) -> Input<'a> {
    Input {
        desired: Desired::Valid { state: desired, tree },
        passes,
        previous: &NONE,
        now,
        alerts,
        backups: &NO_BACKUPS,
        pre_pull: &NO_PRE_PULL,
    }
}

/// The nightly policy's folder: one archive, written and verified at `time`, with `integrity`.
fn backups(time: DateTime<Utc>, integrity: Readiness) -> BTreeMap<String, BackupObservation> {
    let archive = ArchiveFacts {
        name: format!("nightly-{}.tar.zst", time.format("%Y%m%dT%H%M%SZ")),
        created_at: time,
        size: 734_003_200,
        aggregate: "ab".repeat(32),
        integrity,
        checked: "every file re-hashed".into(),
        encrypted: true,
        images: 12,
        parts: 1,
        base: None,
    };
    let observation = BackupObservation {
        destination: "/var/backups/lifeboat".into(),
        archives: 1,
        newest: Some(archive),
        ..Default::default()
    };
    BTreeMap::from([("nightly".to_string(), observation)])
}

/// A rendered document, read back.
fn doc<T: serde::de::DeserializeOwned>(rendered: &Rendered, path: &str) -> T {
    serde_yaml::from_slice(&rendered.files[path]).unwrap()
}

#[test]
fn a_pass_is_reported_per_image_with_the_dr_checklist() {
    let desired = state();
    let registry = registry();
    let passes = pass(&desired, &registry, at(10), &BTreeMap::new());
    let alerts = alerts();
    let input = first_input(&desired, TREE, &passes, &alerts, at(10));
    let rendered = render(&input);
    assert_eq!(
        rendered.files.keys().cloned().collect::<Vec<_>>(),
        ["BackupPolicy/nightly.yaml", "MirrorSet/base.yaml", "PrePullSet/critical.yaml", "README.md", "lifeboat.yaml"]
    );
    insta::assert_snapshot!("mirror_set", text(&rendered.files, "MirrorSet/base.yaml"));
    insta::assert_snapshot!("readme", text(&rendered.files, "README.md"));
    insta::assert_snapshot!("index", text(&rendered.files, INDEX));
    // The same input renders the same bytes.
    assert!(render(&input) == rendered);
}

#[test]
fn nothing_new_renders_nothing_until_the_heartbeat_is_due() {
    let desired = state();
    let registry = registry();
    let alerts = alerts();
    let first = pass(&desired, &registry, at(10), &BTreeMap::new());
    let input = first_input(&desired, TREE, &first, &alerts, at(10));
    let written = render_if_changed(&input, None).expect("a first report is always written");
    // The next pass copies nothing: same content, one hour later.
    let second = pass(&desired, &registry, at(11), &first);
    let input = Input { passes: &second, previous: &written.files, now: at(11), ..input };
    assert!(render_if_changed(&input, None).is_none(), "no commit when only times changed");
    assert!(render_if_changed(&input, Some(chrono::Duration::hours(2))).is_none(), "heartbeat not due yet");
    let later = Input { now: at(12), ..input };
    let beat = render_if_changed(&later, Some(chrono::Duration::hours(2))).expect("heartbeat due after two hours");
    assert_eq!(beat.fingerprint, written.fingerprint);
    // What did not change is carried over: when 1.0 was copied, and who signed it.
    let mirror_set: MirrorSetStatus = doc(&beat, "MirrorSet/base.yaml");
    let tag = &mirror_set.images[0].tags["1.0"];
    assert_eq!(tag.state, TagState::InSync);
    assert_eq!(tag.last_change.as_deref(), Some("2026-11-02T10:00:00Z"));
    assert!(!tag.signer.is_empty(), "{tag:?}");
    assert_eq!(mirror_set.last_success.as_deref(), Some("2026-11-02T11:00:00Z"));
}

#[test]
fn a_change_in_what_is_mirrored_is_new_content() {
    let desired = state();
    let registry = registry();
    let alerts = alerts();
    let first = pass(&desired, &registry, at(10), &BTreeMap::new());
    let input = first_input(&desired, "t1", &first, &alerts, at(10));
    let written = render(&input);
    registry.sign(&format!("{UP}/app"), &digest(2));
    let second = pass(&desired, &registry, at(11), &first);
    let input = Input { passes: &second, previous: &written.files, now: at(11), ..input };
    let next = render_if_changed(&input, None).expect("1.1 is now mirrored");
    let mirror_set: MirrorSetStatus = doc(&next, "MirrorSet/base.yaml");
    assert_eq!(mirror_set.images[0].tags["1.1"].state, TagState::InSync);
    assert_eq!(mirror_set.images[0].tags["1.1"].last_change.as_deref(), Some("2026-11-02T11:00:00Z"));
}

#[test]
fn an_outage_upstream_is_reported_as_unknown_and_the_sync_as_failed() {
    let desired = state();
    let registry = registry();
    let alerts = alerts();
    let first = pass(&desired, &registry, at(10), &BTreeMap::new());
    registry.set_down(UP, true);
    let second = pass(&desired, &registry, at(11), &first);
    let input = first_input(&desired, "t1", &second, &alerts, at(13));
    let rendered = render(&input);
    let index: Index = doc(&rendered, INDEX);
    assert!(!index.registries[UP].reachable);
    assert!(index.registries[MIRROR].reachable);
    let mirror_set: MirrorSetStatus = doc(&rendered, "MirrorSet/base.yaml");
    assert_eq!(mirror_set.result, model::SetResult::Failed);
    assert_eq!(mirror_set.last_success.as_deref(), Some("2026-11-02T10:00:00Z"), "the last success is kept");
    let tag = &mirror_set.images[0].tags["1.0"];
    assert_eq!((tag.state, tag.mirror.clone()), (TagState::Unknown, Some(digest(1).to_string())));
    let readme = text(&rendered.files, "README.md");
    assert!(readme.contains("| A sync succeeded within the last 2 hours | FAIL |"), "{readme}");
    assert!(readme.contains("## Registries that could not be reached"), "{readme}");
}

#[test]
fn an_invalid_desired_state_is_reported_and_the_last_good_one_followed() {
    let desired = state();
    let registry = registry();
    let alerts = alerts();
    let passes = pass(&desired, &registry, at(10), &BTreeMap::new());
    let source = MemorySource {
        files: BTreeMap::from([(
            "bad.yaml".to_string(),
            "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {name: x}\nspec: {targett: a}\n".to_string(),
        )]),
    };
    let Err(LoadError::Invalid(diagnostics)) = load(&source) else { panic!("the document is invalid") };
    let none = BTreeMap::new();
    let input = Input {
        desired: Desired::Invalid { diagnostics: &diagnostics, tree: "bad", last_good: Some((&desired, "good")) },
        passes: &passes,
        previous: &none,
        now: at(10),
        alerts: &alerts,
        backups: &NO_BACKUPS,
        pre_pull: &NO_PRE_PULL,
    };
    let rendered = render(&input);
    let index: Index = doc(&rendered, INDEX);
    assert!(!index.desired_state.valid);
    assert_eq!((index.desired_tree.as_str(), index.applied_tree.as_deref()), ("bad", Some("good")));
    assert!(index.desired_state.diagnostics.iter().any(|d| d.contains("bad.yaml")), "{:?}", index.desired_state);
    let readme = text(&rendered.files, "README.md");
    assert!(readme.contains("| Desired state valid | FAIL |"), "{readme}");
    assert!(readme.contains("passes follow the last valid tree `good`"), "{readme}");
    // The sets of the last good state are still reported.
    assert!(rendered.files.contains_key("MirrorSet/base.yaml"));
}

#[test]
fn alert_names_are_read_from_a_rules_file() {
    let rules = "groups:\n  - name: lifeboat\n    rules:\n      - alert: LifeboatSyncFailing\n        expr: x\n      - alert: \"LifeboatBackupTooOld\"\n";
    assert_eq!(alert_names(rules), ["LifeboatBackupTooOld", "LifeboatSyncFailing"]);
}

/// A pre-pull pass over three nodes: w1 and w2 hold the set's images, w3 cannot pull one, and
/// w2's kubelet collects images earlier than the DR plan asks.
fn pre_pull_example(desired: &DesiredState) -> crate::prepull::PrePullPass {
    use crate::prepull::coverage::{self, ContainerFacts, NodeFacts, PodFacts};
    use crate::prepull::{GcSettings, Image, Workload};
    let set = &desired.pre_pull_sets["critical"];
    let images: Vec<Image> = ["1.0", "1.1"]
        .iter()
        .enumerate()
        .map(|(i, _)| Image::new(&format!("{MIRROR}/m/app"), digest(i as u32 + 1)))
        .collect();
    let workload = Workload {
        set: "critical".into(),
        method: set.method,
        images: images.clone(),
        node_selector: Default::default(),
        tolerations: Vec::new(),
        pull_secrets: Vec::new(),
        priority_class_name: None,
        cri_socket: set.cri_socket.clone(),
        parallel_pulls: set.parallel_pulls,
    };
    let gc = |low: i64| {
        Some(Ok(GcSettings {
            high_threshold_percent: Some(85),
            low_threshold_percent: Some(low),
            minimum_age_seconds: Some(172_800),
        }))
    };
    let node = |name: &str, low: i64| NodeFacts {
        name: name.into(),
        labels: [("kubernetes.io/os".to_string(), "linux".to_string())].into(),
        taints: Vec::new(),
        ready: true,
        gc: gc(low),
    };
    let ran = |image: &Image| ContainerFacts {
        image: image.reference.clone(),
        image_id: Some(image.reference.clone()),
        ran: true,
        waiting: None,
    };
    let stuck = ContainerFacts {
        image: images[1].reference.clone(),
        image_id: None,
        ran: false,
        waiting: Some("ImagePullBackOff: Back-off pulling image".into()),
    };
    let pods = vec![
        PodFacts { node: Some("w1".into()), containers: images.iter().map(ran).collect() },
        PodFacts { node: Some("w2".into()), containers: images.iter().map(ran).collect() },
        PodFacts { node: Some("w3".into()), containers: vec![ran(&images[0]), stuck] },
    ];
    let nodes = [node("w1", 75), node("w2", 80), node("w3", 75)];
    let coverage = coverage::coverage(&workload, &set.kubelet_gc, &nodes, &pods, &[]);
    let mut pass = crate::prepull::PrePullPass::default();
    pass.sets.insert(
        "critical".into(),
        crate::prepull::report::SetReport {
            method: set.method,
            daemon_set: "lifeboat/lifeboat-prepull-critical".into(),
            images: Observed::Present(images.iter().map(|i| i.reference.clone()).collect()),
            not_in_mirror: Vec::new(),
            held: None,
            coverage: Observed::Present(coverage),
        },
    );
    pass.not_used = None;
    pass.cluster = Some("https://fake.example:6443/".into());
    pass.daemon_sets = Observed::Present(1);
    pass
}

#[test]
fn pre_pull_coverage_and_kubelet_gc_reach_the_report() {
    let desired = state();
    let passes = BTreeMap::new();
    let alerts = shipped_alerts();
    let pre_pull = pre_pull_example(&desired);
    let input = Input { pre_pull: &pre_pull, ..first_input(&desired, TREE, &passes, &alerts, at(10)) };
    let rendered = render(&input);
    let readme = text(&rendered.files, "README.md");
    assert!(
        readme.contains(
            "| Pre-pull runs on every node | FAIL | critical: 1 of 3 nodes miss images; w3 misses 1 (ImagePullBackOff"
        ),
        "{readme}"
    );
    assert!(readme.contains("| Kubelet image GC at 85 % / 75 % / 48 h | FAIL | 1 of 3 nodes differ: w2: imageGCLowThresholdPercent is 80"), "{readme}");
    let status = text(&rendered.files, "PrePullSet/critical.yaml");
    assert!(status.contains("result: FAIL") && status.contains("coveragePercent: '66.7'"), "{status}");

    // No cluster configured: both lines are UNKNOWN and say why.
    let unobserved = crate::prepull::PrePullPass { not_used: Some("--cluster off".into()), ..Default::default() };
    let input = Input { pre_pull: &unobserved, ..first_input(&desired, TREE, &passes, &alerts, at(10)) };
    let readme = text(&render(&input).files, "README.md");
    assert!(
        readme.contains(
            "| Pre-pull runs on every node | UNKNOWN | critical: the cluster was not observed: --cluster off |"
        ),
        "{readme}"
    );
    assert!(readme.contains("| Kubelet image GC at 85 % / 75 % / 48 h | UNKNOWN |"), "{readme}");
}

/// `docs/status-example/` shows a status folder as Lifeboat commits it, from the pass of the
/// first test. Regenerate with `LIFEBOAT_UPDATE_EXAMPLES=1 cargo test --lib status`.
#[test]
fn the_committed_example_status_is_current() {
    let desired = state();
    let registry = registry();
    let passes = pass(&desired, &registry, at(10), &BTreeMap::new());
    let alerts = shipped_alerts();
    let backups = backups(at(3), Readiness::Pass);
    let pre_pull = pre_pull_example(&desired);
    let input =
        Input { backups: &backups, pre_pull: &pre_pull, ..first_input(&desired, TREE, &passes, &alerts, at(10)) };
    let rendered = render(&input);
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-example");
    if std::env::var_os("LIFEBOAT_UPDATE_EXAMPLES").is_some() {
        let _ = std::fs::remove_dir_all(&folder);
        for (path, bytes) in &rendered.files {
            let file = folder.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
    }
    for (path, bytes) in &rendered.files {
        let committed = std::fs::read(folder.join(path)).unwrap_or_default();
        assert!(
            committed == *bytes,
            "docs/status-example/{path} is out of date: run LIFEBOAT_UPDATE_EXAMPLES=1 cargo test --lib status"
        );
    }
}

/// Regression: a pass that could not read the mirror made the report forget what the mirror
/// held, when it last changed and who signed it, for good.
#[test]
fn an_unreadable_mirror_keeps_what_the_report_last_saw() {
    let desired = state();
    let registry = registry();
    let alerts = alerts();
    let first = pass(&desired, &registry, at(10), &BTreeMap::new());
    let input = first_input(&desired, "t", &first, &alerts, at(10));
    let written = render(&input);
    registry.set_down(MIRROR, true);
    let down = pass(&desired, &registry, at(11), &first);
    let during = render(&Input { passes: &down, previous: &written.files, now: at(11), ..input });
    let set: MirrorSetStatus = doc(&during, "MirrorSet/base.yaml");
    let tag = &set.images[0].tags["1.0"];
    assert_eq!((tag.state, tag.mirror_unknown), (TagState::Unknown, true));
    assert_eq!(tag.mirror, Some(digest(1).to_string()));
    assert_eq!(tag.last_change.as_deref(), Some("2026-11-02T10:00:00Z"));
    assert!(!tag.signer.is_empty());
    assert_eq!(set.summary.mirrored, 0, "what could not be seen is not counted as mirrored");
    registry.set_down(MIRROR, false);
    let back = pass(&desired, &registry, at(12), &down);
    let after = render(&Input { passes: &back, previous: &during.files, now: at(12), ..input });
    let set: MirrorSetStatus = doc(&after, "MirrorSet/base.yaml");
    let tag = &set.images[0].tags["1.0"];
    assert_eq!((tag.state, tag.last_change.as_deref()), (TagState::InSync, Some("2026-11-02T10:00:00Z")));
}

#[test]
fn backups_pass_only_when_verified_and_under_seven_days_and_age_alone_commits_nothing() {
    let desired = state();
    let passes = BTreeMap::new();
    let alerts = alerts();
    let check = |rendered: &Rendered| {
        let readme = text(&rendered.files, "README.md");
        let line = readme.lines().find(|l| l.starts_with("| Air-gapped backups")).unwrap().to_string();
        let doc: BackupPolicyStatus = doc(rendered, "BackupPolicy/nightly.yaml");
        (line, doc)
    };
    let fresh = backups(at(3), Readiness::Pass);
    let input = Input { backups: &fresh, ..first_input(&desired, TREE, &passes, &alerts, at(10)) };
    let first = render(&input);
    let (line, doc) = check(&first);
    assert!(line.contains("| PASS |") && line.contains("nightly-20261102T030000Z.tar.zst verified"), "{line}");
    assert_eq!(doc.result, Readiness::Pass);
    let archive = doc.last_archive.unwrap();
    assert_eq!((archive.age.as_str(), archive.integrity, archive.encrypted), ("7h 0m", Readiness::Pass, true));
    assert_eq!(archive.checksum, format!("sha256:{}", "ab".repeat(32)));

    // An hour later only the age differs: nothing new to commit.
    let later = Input { previous: &first.files, now: at(11), ..input };
    assert!(render_if_changed(&later, None).is_none());

    // Eight days later the same archive fails the DR plan.
    let old = Input { now: at(10) + chrono::Duration::days(8), ..input };
    let (line, doc) = check(&render(&old));
    assert!(line.contains("| FAIL |") && line.contains("over 7 days old"), "{line}");
    assert_eq!(doc.result, Readiness::Fail);

    // A newest archive that failed verification fails, and says so.
    let failed = backups(at(3), Readiness::Fail);
    let (line, _) = check(&render(&Input { backups: &failed, ..input }));
    assert!(line.contains("| FAIL |") && line.contains("passed verification"), "{line}");

    // A destination that cannot be read here is unknown, not failed.
    let mut unreadable = backups(at(3), Readiness::Pass);
    unreadable.get_mut("nightly").unwrap().unreadable = Some("permission denied".into());
    let (line, doc) = check(&render(&Input { backups: &unreadable, ..input }));
    assert!(line.contains("| UNKNOWN |") && line.contains("permission denied"), "{line}");
    assert_eq!(doc.result, Readiness::Unknown);
}
