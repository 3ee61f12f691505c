use super::*;
use crate::desired::source::MemorySource;
use crate::desired::{LoadError, load};

const PIN_A: &str = "sha256:eb8f0c402a49674df4988ee3bf8b27230b4d7dde24c9e118996723a0c9796649";
const PIN_B: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn mirror_set(schedule: &str, glibc_tags: &str, pin: &str, extra_image: bool) -> String {
    let mut text = format!(
        r#"apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {{name: base}}
spec:
  target: mirror.example:5000/m
  schedule: "{schedule}"
  images:
    - source: vendor.example/base/glibc
      tags: [{glibc_tags}]
    - source: vendor.example/runtime/node@{pin}
      tag: 20-pinned
"#
    );
    if extra_image {
        text.push_str("    - source: vendor.example/runtime/python\n      tagRules: {semver: \">=3.12\"}\n");
    }
    text
}

const PREPULL: &str =
    "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: critical}\nspec:\n  mirrorSets: [base]\n";

fn state(files: &[(&str, &str)]) -> DesiredState {
    let source = MemorySource { files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect() };
    match load(&source) {
        Ok(s) => s,
        Err(LoadError::Invalid(d)) => panic!("{d}"),
        Err(e) => panic!("{e}"),
    }
}

fn with_prepull(set: &str) -> DesiredState {
    state(&[("m.yaml", set), ("p.yaml", PREPULL)])
}

#[test]
fn identical_states_have_no_diff() {
    // Two loads of the same text, not a clone: nothing in loading may vary between runs.
    let text = mirror_set("0 * * * *", "\"2.40\"", PIN_A, true);
    let diff = compare(&with_prepull(&text), &with_prepull(&text));
    assert!(diff.is_empty(), "{diff:#?}");
    assert_eq!(render::summary(&diff), "no change");
}

#[test]
fn each_kind_of_edit_is_reported_exactly() {
    let base = with_prepull(&mirror_set("0 * * * *", "\"2.40\"", PIN_A, true));
    let head = with_prepull(&mirror_set("30 * * * *", "\"2.40\", \"2.41\"", PIN_B, false));
    let diff = compare(&base, &head);
    let types: Vec<&str> = diff.changes.iter().map(Change::type_name).collect();
    assert_eq!(types, ["settingChanged", "imageRemoved", "tagAdded", "digestPinChanged"], "{diff:#?}");
    assert_eq!(
        diff.changes[0],
        Change::SettingChanged {
            kind: "MirrorSet",
            name: "base".into(),
            field: "spec.schedule".into(),
            from: "0 * * * *".into(),
            to: "30 * * * *".into(),
        }
    );
    assert_eq!(
        diff.changes[2],
        Change::TagAdded {
            mirror_set: "base".into(),
            source: "vendor.example/base/glibc".into(),
            tag: "2.41".into(),
            target: "mirror.example:5000/m/base/glibc:2.41".into(),
        }
    );
    assert_eq!(
        diff.mirror_refs.added,
        [
            "mirror.example:5000/m/base/glibc:2.41".to_string(),
            format!("mirror.example:5000/m/runtime/node:20-pinned@{PIN_B}")
        ]
    );
    assert_eq!(diff.mirror_refs.removed, [format!("mirror.example:5000/m/runtime/node:20-pinned@{PIN_A}")]);
    assert_eq!(diff.coverage.len(), 1);
    assert_eq!(diff.coverage[0].name, "critical");
    assert_eq!(diff.coverage[0].refs, diff.mirror_refs);
    assert_eq!(
        render::summary(&diff),
        "4 changes: 1 digest pin changed, 1 image removed, 1 setting changed, 1 tag added"
    );
}

#[test]
fn added_and_removed_documents_list_their_images() {
    let set = mirror_set("0 * * * *", "\"2.40\"", PIN_A, false);
    let base = state(&[("m.yaml", &set)]);
    let head = with_prepull(&set);
    let diff = compare(&base, &head);
    assert_eq!(diff.changes, [Change::DocumentAdded { kind: "PrePullSet", name: "critical".into() }]);
    assert_eq!(diff.coverage[0].refs.added.len(), 2);
    let back = compare(&head, &base);
    assert_eq!(back.changes, [Change::DocumentRemoved { kind: "PrePullSet", name: "critical".into() }]);
    assert_eq!(back.coverage[0].refs.removed.len(), 2);

    let empty_pre = state(&[(
        "p.yaml",
        "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: x}\nspec:\n  images: [a.example/b:1]\n",
    )]);
    let diff = compare(&empty_pre, &base);
    let types: Vec<&str> = diff.changes.iter().map(Change::type_name).collect();
    assert_eq!(types, ["documentAdded", "imageAdded", "imageAdded", "documentRemoved"]);
}

#[test]
fn rule_and_nested_setting_changes() {
    let base = state(&[("m.yaml", &mirror_set("0 * * * *", "\"2.40\"", PIN_A, true))]);
    let edited = mirror_set("0 * * * *", "\"2.40\"", PIN_A, true)
        .replace(">=3.12", ">=3.13")
        .replace("  images:", "  signatures: {keys: [k.pub], policy: optional}\n  onTagMove: backup\n  images:");
    let head = state(&[("m.yaml", &edited), ("k.pub", "key")]);
    let diff = compare(&base, &head);
    let fields: Vec<String> = diff
        .changes
        .iter()
        .map(|c| match c {
            Change::SettingChanged { field, .. } => field.clone(),
            Change::TagRulesChanged { from, to, .. } => {
                format!("rules {} -> {}", from.clone().unwrap(), to.clone().unwrap())
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        fields,
        ["spec.onTagMove", "spec.signatures.keys", "spec.signatures.policy", "rules semver >=3.12 -> semver >=3.13"]
    );
    // Tag rules decide tags at sync time: nothing fixed changed.
    assert!(diff.mirror_refs.is_empty());
}

#[test]
fn renderings_carry_the_summary_first() {
    let base = with_prepull(&mirror_set("0 * * * *", "\"2.40\"", PIN_A, false));
    let head = with_prepull(&mirror_set("0 * * * *", "\"2.41\"", PIN_A, false));
    let diff = compare(&base, &head);
    let rev = |r: &str| render::Revision { rev: r.into(), commit: "0123456789abcdef".into() };
    let report = render::Report::new(rev("main"), rev("HEAD"), &diff);
    let md = render::markdown(&report);
    assert!(md.starts_with("**Lifeboat:** 2 changes: 1 tag added, 1 tag removed"), "{md}");
    assert!(
        md.contains("```diff\n-mirror.example:5000/m/base/glibc:2.40\n+mirror.example:5000/m/base/glibc:2.41\n```"),
        "{md}"
    );
    let human = render::human(&report);
    assert!(
        human.contains("+ tag 2.41 of vendor.example/base/glibc → mirror.example:5000/m/base/glibc:2.41"),
        "{human}"
    );
    let json: serde_json::Value = serde_json::from_str(&render::json(&report)).unwrap();
    assert_eq!(json["changes"][0]["change"], "tagRemoved");
    assert_eq!(json["coverage"][0]["kind"], "PrePullSet");
}

#[test]
fn file_order_and_layout_do_not_make_a_diff() {
    let set = mirror_set("0 * * * *", "\"2.40\", \"2.39\"", PIN_A, true);
    let a = state(&[("m.yaml", &set), ("p.yaml", PREPULL)]);
    let both =
        format!("{PREPULL}---\n{}", set.replace("[\"2.40\", \"2.39\"]", "\n        - \"2.39\"\n        - \"2.40\""));
    let b = state(&[("z/all.yaml", &both)]);
    assert!(compare(&a, &b).is_empty(), "{:#?}", compare(&a, &b));
}

#[test]
fn pre_pull_image_lists_are_settings() {
    let set = mirror_set("0 * * * *", "\"2.40\"", PIN_A, false);
    let extra = format!("{PREPULL}  images: [mirror.example:5000/m/extra:1]\n");
    let diff = compare(&with_prepull(&set), &state(&[("m.yaml", &set), ("p.yaml", &extra)]));
    assert_eq!(diff.changes.len(), 1, "{diff:#?}");
    assert!(
        matches!(&diff.changes[0], Change::SettingChanged { kind: "PrePullSet", field, .. } if field == "spec.images")
    );
    assert_eq!(diff.coverage[0].refs.added, ["mirror.example:5000/m/extra:1"]);
}

#[test]
fn platform_changes_are_one_setting() {
    let set = mirror_set("0 * * * *", "\"2.40\"", PIN_A, false);
    let subset = set.replace("  images:", "  platforms: [linux/amd64]\n  images:");
    let diff = compare(&state(&[("m.yaml", &set)]), &state(&[("m.yaml", &subset)]));
    assert_eq!(
        diff.changes,
        [Change::SettingChanged {
            kind: "MirrorSet",
            name: "base".into(),
            field: "spec.platforms".into(),
            from: "all".into(),
            to: serde_json::json!(["linux/amd64"]),
        }]
    );
}

#[test]
fn a_removed_tag_names_where_it_was() {
    let set = mirror_set("0 * * * *", "\"2.40\", \"2.39\"", PIN_A, false);
    let moved =
        mirror_set("0 * * * *", "\"2.40\"", PIN_A, false).replace("mirror.example:5000/m", "mirror.example:5000/n");
    let diff = compare(&state(&[("m.yaml", &set)]), &state(&[("m.yaml", &moved)]));
    let removed = diff.changes.iter().find(|c| c.type_name() == "tagRemoved").expect("a removed tag");
    assert!(matches!(removed, Change::TagRemoved { target, .. } if target == "mirror.example:5000/m/base/glibc:2.39"));
}

const FAILOVER: &str =
    "apiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {name: workers}\nspec:\n  mirrorSets: [base]\n";

#[test]
fn failover_sets_report_their_settings_and_mappings_not_the_images_behind_them() {
    let with_failover = |set: &str, failover: &str| state(&[("m.yaml", set), ("f.yaml", failover)]);
    let set = mirror_set("0 * * * *", "\"2.40\"", PIN_A, true);
    // More images of the same upstream host fail over the same way.
    let more_images = mirror_set("0 * * * *", "\"2.40\", \"2.41\"", PIN_A, false);
    let diff = compare(&with_failover(&set, FAILOVER), &with_failover(&more_images, FAILOVER));
    assert!(diff.changes.iter().all(|c| c.document() == "MirrorSet/base"), "{diff:#?}");

    let moved = set.replace("target: mirror.example:5000/m", "target: mirror.example:5000/vendor");
    let ordered = FAILOVER.to_string() + "  order: upstreamFirst\n";
    let diff = compare(&with_failover(&set, FAILOVER), &with_failover(&moved, &ordered));
    let failover: Vec<&Change> = diff.changes.iter().filter(|c| c.document() == "FailoverSet/workers").collect();
    assert_eq!(
        failover,
        [
            &Change::SettingChanged {
                kind: "FailoverSet",
                name: "workers".into(),
                field: "spec.mappings".into(),
                from: serde_json::json!(["vendor.example → mirror.example:5000/m"]),
                to: serde_json::json!(["vendor.example → mirror.example:5000/vendor"]),
            },
            &Change::SettingChanged {
                kind: "FailoverSet",
                name: "workers".into(),
                field: "spec.order".into(),
                from: "mirrorFirst".into(),
                to: "upstreamFirst".into(),
            },
        ]
    );
}
