//! The pipeline against the in-memory registry: what a pass does, and that a pass followed by
//! another plans nothing.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::mirror::{dry_run, run};
use super::*;
use crate::desired::source::MemorySource;
use crate::desired::{Digest, LoadError, load};
use crate::plan::Action;
use crate::plan::Plan;
use crate::registry::fake::FakeRegistry;

fn digest(n: u32) -> Digest {
    crate::registry::manifest::sha256(format!("image {n}").as_bytes())
}

const UP: &str = "up.example";
const MIRROR: &str = "mirror.example:5000";

fn state(spec_extra: &str, images: &str) -> DesiredState {
    let text = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: s}}\nspec:\n  target: {MIRROR}/m\n{spec_extra}  images:\n{images}"
    );
    // The fake registry checks signatures without reading the key.
    let source = MemorySource {
        files: BTreeMap::from([("s.yaml".to_string(), text), ("keys/k.pub".to_string(), String::new())]),
    };
    match load(&source) {
        Ok(s) => s,
        Err(LoadError::Invalid(d)) => panic!("{d}"),
        Err(e) => panic!("{e}"),
    }
}

fn tags_image(tags: &str) -> String {
    format!("    - source: {UP}/app\n      tags: [{tags}]\n")
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.changes
        .iter()
        .map(|c| match c.action {
            Action::Copy { .. } => "copy",
            Action::Backup { .. } => "backup",
            Action::Prune { .. } => "prune",
            Action::Attach { .. } => "attach",
            Action::Referrers { .. } => "referrers",
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_pass_copies_what_is_missing_and_the_next_plans_nothing() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{UP}/app"), "1.0", &digest(1));
    registry.push(&format!("{UP}/app"), "1.1", &digest(2));
    let desired = state("", &tags_image("\"1.0\", \"1.1\""));
    let first = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&first.plan), ["copy", "copy"]);
    assert!(first.plan.changes[0].why.starts_with("missing in the mirror"));
    assert_eq!(registry.tags(&format!("{MIRROR}/m/app")).len(), 2);
    let second = rt().block_on(dry_run(&desired, &registry));
    assert!(second.plan.changes.is_empty(), "{:#?}", second.plan);
    assert_eq!(second.plan.in_sync, 2);
}

/// Regression: an upstream outage must never damage the mirror.
#[test]
fn upstream_down_changes_nothing_and_says_why() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{UP}/app"), "1.0", &digest(1));
    registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
    registry.push(&format!("{MIRROR}/m/app"), "old", &digest(9));
    let desired = state(
        "  prune: true\n",
        &format!("    - source: {UP}/app\n      tags: [\"1.0\", \"2.0\"]\n      tagRules: {{semver: \">=1\"}}\n"),
    );
    registry.set_down(UP, true);
    let pass = rt().block_on(run(&desired, &registry));
    assert!(pass.plan.changes.is_empty(), "{:#?}", pass.plan.changes);
    assert!(pass.plan.has_unknowns());
    let reasons: Vec<&str> = pass.plan.notes.iter().map(|n| n.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("the mirror keeps its copy")), "{reasons:#?}");
    assert!(reasons.iter().any(|r| r.contains("not pruned")), "{reasons:#?}");
    assert_eq!(registry.tags(&format!("{MIRROR}/m/app")).len(), 2, "the mirror is untouched");
    registry.set_down(UP, false);
    registry.push(&format!("{UP}/app"), "2.0", &digest(2));
    let recovered = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&recovered.plan), ["copy", "prune"]);
    assert!(rt().block_on(dry_run(&desired, &registry)).plan.changes.is_empty());
}

#[test]
fn moved_tags_follow_the_policy() {
    for (policy, expected, kept_old) in
        [("update", vec!["copy"], false), ("keep", vec![], true), ("backup", vec!["backup", "copy"], true)]
    {
        let registry = FakeRegistry::default();
        registry.push(&format!("{UP}/app"), "1.0", &digest(2));
        registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
        let desired = state(&format!("  onTagMove: {policy}\n"), &tags_image("\"1.0\""));
        let pass = rt().block_on(run(&desired, &registry));
        assert_eq!(kinds(&pass.plan), expected, "{policy}");
        let mirror = registry.tags(&format!("{MIRROR}/m/app"));
        assert_eq!(mirror["1.0"] == digest(1), policy == "keep", "{policy}: {mirror:?}");
        assert_eq!(mirror.values().any(|d| *d == digest(1)), kept_old, "{policy}: {mirror:?}");
        if policy == "backup" {
            assert!(mirror.contains_key(&crate::plan::backup_tag("1.0", &digest(1))), "{mirror:?}");
        }
        let again = rt().block_on(dry_run(&desired, &registry));
        assert!(again.plan.changes.is_empty(), "{policy}: {:#?}", again.plan.changes);
    }
}

#[test]
fn pruning_spares_shared_manifests_and_signature_tags() {
    let registry = FakeRegistry::default();
    let repo = format!("{MIRROR}/m/app");
    registry.push(&format!("{UP}/app"), "1.0", &digest(1));
    registry.push(&repo, "1.0", &digest(1));
    registry.push(&repo, "alias", &digest(1));
    registry.push(&repo, "gone", &digest(3));
    registry.push(&repo, &format!("sha256-{}.sig", "a".repeat(64)), &digest(4));
    let desired = state("  prune: true\n", &tags_image("\"1.0\""));
    let pass = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&pass.plan), ["prune"]);
    let left: Vec<String> = registry.tags(&repo).into_keys().collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(!left.contains(&"gone".to_string()));
    assert!(pass.plan.notes.iter().any(|n| n.subject.ends_with(":alias") && n.reason.contains("shares its manifest")));
}

#[test]
fn pins_and_platform_subsets() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{UP}/app"), "whatever", &digest(1));
    registry.push(&format!("{UP}/app"), "other", &digest(2));
    let pinned = |d: &Digest| format!("    - source: {UP}/app@{d}\n      tag: pinned\n");
    let desired = state("  platforms: [linux/amd64]\n", &pinned(&digest(1)));
    let first = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&first.plan), ["copy"]);
    let written = registry.tags(&format!("{MIRROR}/m/app"))["pinned"].clone();
    assert_ne!(written, digest(1), "a platform subset has its own digest");
    assert!(rt().block_on(dry_run(&desired, &registry)).plan.changes.is_empty());
    let moved = state("  platforms: [linux/amd64]\n", &pinned(&digest(2)));
    let pass = rt().block_on(run(&moved, &registry));
    assert_eq!(kinds(&pass.plan), ["copy"]);
    assert!(pass.plan.changes[0].why.starts_with("digest pin changed"), "{}", pass.plan.changes[0].why);
}

/// Regression: a prune planned against what a copy would write must not run when that copy
/// failed — the manifest it deletes may still be the one a kept tag holds.
#[test]
fn prunes_wait_for_the_copies_they_counted_on() {
    let registry = FakeRegistry::default();
    let repo = format!("{MIRROR}/m/app");
    registry.push(&format!("{UP}/app"), "1.0", &digest(2));
    registry.push(&repo, "1.0", &digest(1));
    registry.push(&repo, "dropped", &digest(1));
    let desired = state("  prune: true\n", &tags_image("\"1.0\""));
    registry.set_failing_copies(true);
    let pass = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&pass.plan), ["copy", "prune"]);
    assert_eq!(registry.tags(&repo)["1.0"], digest(1), "the kept tag still holds its manifest");
    assert!(registry.tags(&repo).contains_key("dropped"));
    registry.set_failing_copies(false);
    rt().block_on(run(&desired, &registry));
    assert_eq!(registry.tags(&repo).into_keys().collect::<Vec<_>>(), ["1.0"]);
}

#[test]
fn a_required_signature_policy_keeps_unsigned_images_out() {
    let registry = FakeRegistry::default();
    let up = format!("{UP}/app");
    let repo = format!("{MIRROR}/m/app");
    registry.push(&up, "1.0", &digest(1));
    registry.push(&up, "2.0", &digest(2));
    registry.sign(&up, &digest(1));
    let desired = state("  signatures: {keys: [keys/k.pub]}\n", &tags_image("\"1.0\", \"2.0\""));
    let pass = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&pass.plan), ["copy", "attach"]);
    assert!(pass.plan.changes[0].why.contains("signed by key keys/fake.pub"), "{}", pass.plan.changes[0].why);
    let rejected: Vec<&crate::plan::Note> =
        pass.plan.notes.iter().filter(|n| n.kind == crate::plan::NoteKind::Rejected).collect();
    assert_eq!(rejected.len(), 1, "{:#?}", pass.plan.notes);
    assert!(rejected[0].subject.ends_with(":2.0") && rejected[0].reason.contains("not signed"), "{rejected:#?}");
    let mirror = registry.tags(&repo);
    assert!(mirror.contains_key("1.0") && !mirror.contains_key("2.0"), "{mirror:?}");
    assert!(mirror.contains_key(&crate::registry::cosign::attached_tag(&digest(1), "sig")), "{mirror:?}");
    let outcomes = pass.outcomes.unwrap();
    let copy = outcomes.iter().find(|o| matches!(o.change.action, Action::Copy { .. })).unwrap();
    assert!(
        matches!(&copy.mirror_verification, Some(crate::registry::Verdict::Verified { .. })),
        "the copy verifies against the mirror: {:?}",
        copy.mirror_verification
    );
    let again = rt().block_on(dry_run(&desired, &registry));
    assert!(again.plan.changes.is_empty(), "{:#?}", again.plan.changes);
    assert_eq!(again.plan.rejections(), 1);
}

#[test]
fn an_optional_policy_mirrors_with_a_warning_and_copy_false_carries_nothing() {
    let registry = FakeRegistry::default();
    let up = format!("{UP}/app");
    registry.push(&up, "1.0", &digest(1));
    registry.push(&up, "2.0", &digest(2));
    registry.sign(&up, &digest(1));
    let desired =
        state("  signatures: {keys: [keys/k.pub], policy: optional, copy: false}\n", &tags_image("\"1.0\", \"2.0\""));
    let pass = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&pass.plan), ["copy", "copy"]);
    assert!(pass.plan.changes[1].why.contains("WARNING: signature check failed"), "{}", pass.plan.changes[1].why);
    assert_eq!(pass.plan.rejections(), 0);
    assert_eq!(registry.tags(&format!("{MIRROR}/m/app")).len(), 2, "no signature tag carried");
}

/// Regression: a signature tag that changes upstream to one that fails the policy must not
/// replace the mirror's working one.
#[test]
fn a_changed_upstream_signature_replaces_the_mirrors_only_if_it_passes() {
    let registry = FakeRegistry::default();
    let (up, repo) = (format!("{UP}/app"), format!("{MIRROR}/m/app"));
    let sig = crate::registry::cosign::attached_tag(&digest(1), "sig");
    registry.push(&up, "1.0", &digest(1));
    registry.sign(&up, &digest(1));
    let desired = state("  signatures: {keys: [keys/k.pub]}\n", &tags_image("\"1.0\""));
    rt().block_on(run(&desired, &registry));
    let good = registry.tags(&repo)[&sig].clone();
    registry.push(&up, &sig, &digest(7));
    registry.set_signature_valid(&digest(1), false);
    let pass = rt().block_on(run(&desired, &registry));
    assert!(pass.plan.changes.is_empty(), "{:#?}", pass.plan.changes);
    assert!(
        pass.plan.notes.iter().any(|n| n.reason.contains("the mirror keeps its signature")),
        "{:#?}",
        pass.plan.notes
    );
    assert_eq!(registry.tags(&repo)[&sig], good);
    registry.set_signature_valid(&digest(1), true);
    let pass = rt().block_on(run(&desired, &registry));
    assert_eq!(kinds(&pass.plan), ["attach"]);
    assert_eq!(registry.tags(&repo)[&sig], digest(7));
}

/// Regression: a copy whose signature cannot be checked (upstream down mid-pass) stays out.
#[test]
fn a_required_policy_with_an_unreadable_signature_copies_nothing() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{UP}/app"), "1.0", &digest(1));
    let desired = state("  signatures: {keys: [keys/k.pub]}\n", &tags_image("\"1.0\""));
    let mut actual = rt().block_on(crate::observe::observe(&desired, &registry));
    let image = &mut actual.mirror_sets.get_mut("s").unwrap()[0];
    image.signatures.insert(digest(1), crate::observe::Observed::Unknown("upstream answered HTTP 503".into()));
    let plan = crate::plan::plan(&desired, &actual);
    assert!(plan.changes.is_empty(), "{:#?}", plan.changes);
    assert!(plan.has_unknowns() && plan.rejections() == 0, "{:#?}", plan.notes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// apply, then observe and plan again: nothing left to do, whatever the starting mirror.
    #[test]
    fn apply_then_plan_is_empty(
        upstream in prop::collection::btree_map("[a-d]", 0u32..4, 1..5),
        mirror in prop::collection::btree_map("[a-f]", 0u32..4, 0..6),
        policy in prop::sample::select(vec!["update", "keep", "backup"]),
        prune in any::<bool>(),
        rules in any::<bool>(),
        signed in prop::collection::btree_set(0u32..4, 0..4),
        checks in any::<bool>(),
    ) {
        let registry = FakeRegistry::default();
        for (tag, n) in &upstream {
            registry.push(&format!("{UP}/app"), tag, &digest(*n));
        }
        for (tag, n) in &mirror {
            registry.push(&format!("{MIRROR}/m/app"), tag, &digest(*n));
        }
        for n in &signed {
            registry.sign(&format!("{UP}/app"), &digest(*n));
        }
        let image = if rules {
            format!("    - source: {UP}/app\n      tagRules: {{allow: [\"^[a-c]$\"]}}\n")
        } else {
            tags_image(&upstream.keys().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", "))
        };
        let signatures = if checks { "  signatures: {keys: [keys/k.pub]}\n" } else { "" };
        let desired = state(&format!("  onTagMove: {policy}\n  prune: {prune}\n{signatures}"), &image);
        let pass = rt().block_on(run(&desired, &registry));
        let outcomes = pass.outcomes.unwrap();
        let failed = outcomes.iter().filter(|o| matches!(o.result, crate::outcome::OutcomeResult::Failed { .. })).count();
        prop_assert_eq!(failed, 0);
        // Outcomes are reported in plan order (prunes, which the plan lists last, run last).
        let done: Vec<&crate::plan::Change> = outcomes.iter().map(|o| &o.change).collect();
        let planned: Vec<&crate::plan::Change> = pass.plan.changes.iter().collect();
        prop_assert_eq!(done, planned);
        let again = rt().block_on(dry_run(&desired, &registry));
        prop_assert!(again.plan.changes.is_empty(), "{:#?}", again.plan.changes);
    }
}

/// One rule for how a pass ended, read the same way by the exit code of `apply`, the daemon's
/// status document and its metrics: a table of every kind of outcome.
#[test]
fn exit_codes_status_and_metrics_agree_on_every_outcome_kind() {
    use crate::commands::exit;
    use crate::metrics::{Metrics, RunResult};
    use crate::outcome::SetResult;

    struct Case {
        name: &'static str,
        setup: fn(&FakeRegistry),
        signatures: bool,
        /// (result, apply's exit code, the status document's `result`, the metric's label)
        expected: (SetResult, u8, &'static str, &'static str),
    }
    let cases = [
        Case {
            name: "everything copied",
            setup: |r| r.push(&format!("{UP}/app"), "1.0", &digest(1)),
            signatures: false,
            expected: (SetResult::Succeeded, exit::OK, "succeeded", "success"),
        },
        Case {
            name: "a copy failed",
            setup: |r| {
                r.push(&format!("{UP}/app"), "1.0", &digest(1));
                r.set_failing_copies(true);
            },
            signatures: false,
            expected: (SetResult::Failed, exit::ERROR, "failed", "failure"),
        },
        Case {
            name: "upstream could not be read",
            setup: |r| {
                r.push(&format!("{UP}/app"), "1.0", &digest(1));
                r.set_down(UP, true);
            },
            signatures: false,
            expected: (SetResult::Failed, exit::ERROR, "failed", "failure"),
        },
        Case {
            name: "kept out by the signature policy",
            setup: |r| r.push(&format!("{UP}/app"), "1.0", &digest(1)),
            signatures: true,
            expected: (SetResult::Stalled, exit::ATTENTION, "stalled", "stalled"),
        },
        Case {
            name: "a tag that upstream does not have",
            setup: |_| {},
            signatures: false,
            expected: (SetResult::Stalled, exit::ATTENTION, "stalled", "stalled"),
        },
    ];
    for case in cases {
        let registry = FakeRegistry::default();
        (case.setup)(&registry);
        let signatures = if case.signatures { "  signatures: {keys: [keys/k.pub]}\n" } else { "" };
        let desired = state(signatures, &tags_image("\"1.0\""));
        let pass = rt().block_on(run(&desired, &registry));
        let now = chrono::Utc::now();
        let sets = pass.by_set(now, now, &BTreeMap::new());
        let set = &sets["s"];
        let (result, code, document, metric) = case.expected;
        assert_eq!(set.result(), result, "{}", case.name);
        assert_eq!(exit::of(set.result()), code, "{}: apply's exit code", case.name);

        // The status the daemon commits for this pass.
        let tree = "0123456789abcdef0123456789abcdef01234567";
        let report = crate::status::Report {
            applied: Some((std::sync::Arc::new(desired.clone()), tree.into())),
            invalid: None,
            passes: sets.clone(),
            alerts: Vec::new(),
            backups: BTreeMap::new(),
            pre_pull: Default::default(),
        };
        let rendered = report.render_if_changed(&BTreeMap::new(), now, None).unwrap();
        let status = String::from_utf8(rendered.files["MirrorSet/s.yaml"].clone()).unwrap();
        assert!(status.contains(&format!("\nresult: {document}\n")), "{}: {status}", case.name);

        // The metric the daemon records for it.
        let metrics = Metrics::new(None);
        metrics.sync.record_pass("s", set);
        let text = metrics.encode();
        assert!(
            text.contains(&format!("lifeboat_sync_runs_total{{mirror_set=\"s\",result=\"{metric}\"}} 1")),
            "{}: {text}",
            case.name
        );
        assert_eq!(RunResult::of(set.result()), RunResult::of(result));
    }
}

/// Even repositories come from one upstream, odd ones from another that a case can take down.
fn host_of(repo: usize) -> &'static str {
    if repo % 2 == 0 { UP } else { "up2.example" }
}

/// Two MirrorSets writing into the same mirror prefix, over `repos` upstream repositories.
fn two_sets(repos: &[usize], prune: bool) -> DesiredState {
    let images = |range: &[usize], tags: &str| -> String {
        range.iter().map(|r| format!("    - source: {}/app{r}\n      tags: [{tags}]\n", host_of(*r))).collect()
    };
    let (first, second) = repos.split_at(repos.len() / 2);
    let set = |name: &str, images: String| {
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: {name}}}\nspec:\n  target: {MIRROR}/m\n  prune: {prune}\n  images:\n{images}"
        )
    };
    // The second set also mirrors other tags of the first set's first repository: prunes there
    // must see both sets.
    let shared = images(&first[..first.len().min(1)], "d");
    let mut files = BTreeMap::from([("one.yaml".to_string(), set("one", images(first, "a, b, c")))]);
    if !second.is_empty() || !shared.is_empty() {
        files.insert("two.yaml".to_string(), set("two", shared + &images(second, "a, b, c")));
    }
    match load(&MemorySource { files }) {
        Ok(s) => s,
        Err(LoadError::Invalid(d)) => panic!("{d}"),
        Err(e) => panic!("{e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `--shard I/N`: the N shards' plans are disjoint and together are the unsharded plan,
    /// prunes included, whatever the mirror holds.
    #[test]
    fn shard_plans_are_disjoint_and_add_up_to_the_whole(
        repos in prop::collection::btree_set(0usize..12, 1..8),
        upstream in prop::collection::vec((0usize..12, "[a-d]", 0u32..3), 0..30),
        mirror in prop::collection::vec((0usize..12, "[a-e]", 0u32..3), 0..30),
        second_down in any::<bool>(),
        prune in any::<bool>(),
        count in 1u32..6,
    ) {
        let registry = FakeRegistry::default();
        for (r, tag, n) in &upstream {
            registry.push(&format!("{}/app{r}", host_of(*r)), tag, &digest(*n));
        }
        for (r, tag, n) in &mirror {
            registry.push(&format!("{MIRROR}/m/app{r}"), tag, &digest(*n));
        }
        registry.set_down("up2.example", second_down);
        let repos: Vec<usize> = repos.into_iter().collect();
        let desired = two_sets(&repos, prune);
        let whole = rt().block_on(dry_run(&desired, &registry)).plan;
        let mut changes = Vec::new();
        let mut notes = Vec::new();
        let mut in_sync = 0;
        for index in 0..count {
            let shard = crate::shard::Shard::new(index, count).unwrap();
            let part = rt().block_on(dry_run(&shard.of(&desired), &registry)).plan;
            changes.extend(part.changes);
            notes.extend(part.notes);
            in_sync += part.in_sync;
        }
        let key = |c: &crate::plan::Change| format!("{c:?}");
        let mut expected: Vec<String> = whole.changes.iter().map(key).collect();
        let mut got: Vec<String> = changes.iter().map(key).collect();
        expected.sort();
        got.sort();
        let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
        prop_assert_eq!(distinct.len(), got.len(), "a change planned by two shards");
        prop_assert_eq!(got, expected);
        let mut expected: Vec<String> = whole.notes.iter().map(|n| format!("{n:?}")).collect();
        let mut got: Vec<String> = notes.iter().map(|n| format!("{n:?}")).collect();
        expected.sort();
        got.sort();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(in_sync, whole.in_sync);
    }
}
