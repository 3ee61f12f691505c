use std::collections::BTreeSet;

use super::*;
use crate::desired::source::MemorySource;
use crate::desired::{DEFAULT_MIRROR_SCHEDULE, Platforms, Selection, Severity};

const MIRROR: &str = r#"apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: base}
spec:
  target: registry.internal.example:5000/mirror
  images:
    - source: registry.vendor.example/base/glibc
      tags: ["2.40"]
"#;

fn source(files: &[(&str, &str)]) -> MemorySource {
    MemorySource { files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect() }
}

fn load_files(files: &[(&str, &str)]) -> Result<DesiredState, Diagnostics> {
    match load(&source(files)) {
        Ok(state) => Ok(state),
        Err(LoadError::Invalid(d)) => Err(d),
        Err(LoadError::Read(e)) => panic!("read error: {e:#}"),
    }
}

fn errors_of(text: &str) -> Vec<Diagnostic> {
    match load_files(&[("a.yaml", text), ("keys/k.pub", "key")]) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().filter(|d| d.severity == Severity::Error).cloned().collect(),
    }
}

/// Replaces `from` in the valid MirrorSet and returns the errors.
fn mirror_with(from: &str, to: &str) -> Vec<Diagnostic> {
    assert!(MIRROR.contains(from), "{from}");
    errors_of(&MIRROR.replace(from, to))
}

#[test]
fn the_base_document_is_valid() {
    let state = load_files(&[("a.yaml", MIRROR)]).unwrap();
    let set = &state.mirror_sets["base"];
    assert_eq!(set.schedule.expression(), DEFAULT_MIRROR_SCHEDULE);
    assert_eq!(set.on_tag_move, raw::OnTagMove::Update);
    assert_eq!(set.platforms, Platforms::All);
    assert!(!set.prune);
    assert_eq!(set.signatures.policy, raw::SignaturePolicy::Off);
    assert_eq!(
        set.fixed_mirror_refs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["registry.internal.example:5000/mirror/base/glibc:2.40"]
    );
}

#[test]
fn mirror_set_field_problems() {
    // (replace, with, expected path, expected words in the message)
    let table: &[(&str, &str, &str, &str)] = &[
        ("tags: [\"2.40\"]", "tags: [\".bad\"]", "spec.images[0].tags[0]", "not a valid tag"),
        ("tags: [\"2.40\"]", "tags: []", "spec.images[0].source", "no tags are selected"),
        ("tags: [\"2.40\"]", "tag: \"2.40\"", "spec.images[0].tag", "digest pin"),
        ("base/glibc", "base/glibc:2.40", "spec.images[0].source", "carries the tag"),
        ("base/glibc", "base/glibc@sha256:abc", "spec.images[0].source", "64 lowercase hex"),
        ("registry.internal.example:5000/mirror", "mirror", "spec.target", "mirror registry host"),
        ("  images:", "  schedule: \"0 0 * * * *\"\n  images:", "spec.schedule", "6 fields"),
        ("  images:", "  platforms: [linux]\n  images:", "spec.platforms[0]", "os/arch"),
        ("  images:", "  platforms: some\n  images:", "spec.platforms", "invalid value"),
        ("  images:", "  onTagMove: replace\n  images:", "spec.onTagMove", "unknown variant"),
        ("  images:", "  signatures: {policy: required}\n  images:", "spec.signatures", "needs keys"),
        (
            "  images:",
            "  signatures: {keys: [keys/missing.pub]}\n  images:",
            "spec.signatures.keys[0]",
            "does not exist",
        ),
        ("  images:", "  signatures: {keys: [../k.pub]}\n  images:", "spec.signatures.keys[0]", "leaves"),
        (
            "  images:",
            "  signatures:\n    keyless: [{issuer: \"https://issuer.example\", identityRegex: \"(\"}]\n  images:",
            "spec.signatures.keyless[0].identityRegex",
            "not a valid regular expression",
        ),
        (
            "  images:",
            "  signatures:\n    keyless: [{issuer: \"https://issuer.example\", identity: a@b}]\n  images:",
            "spec.signatures.keyless",
            "trust root",
        ),
        (
            "      tags: [\"2.40\"]",
            "      tagRules: {keepLatest: 0}",
            "spec.images[0].tagRules.keepLatest",
            "select no tag",
        ),
        (
            "      tags: [\"2.40\"]",
            "      tagRules: {semver: \"~>1\"}",
            "spec.images[0].tagRules.semver",
            "semantic-version",
        ),
        (
            "      tags: [\"2.40\"]",
            "      tagRules: {deny: [\"[\"]}",
            "spec.images[0].tagRules.deny[0]",
            "regular expression",
        ),
        ("metadata: {name: base}", "metadata: {name: Base_Set}", "metadata.name", "not a valid name"),
        ("metadata: {name: base}", "metadata: {}", "metadata", "missing field `name`"),
    ];
    for (from, to, path, words) in table {
        let errors = mirror_with(from, to);
        assert!(
            errors.iter().any(|e| e.path.as_deref() == Some(*path) && e.message.contains(words) && e.line.is_some()),
            "replacing {from:?} with {to:?}: expected an error at {path} saying {words:?}, got {errors:#?}"
        );
    }
}

#[test]
fn unquoted_version_tags_keep_their_text() {
    // YAML 1.1 tools read 2.40 as the number 2.4; the loader keeps the text as written.
    let state = load_files(&[("a.yaml", &MIRROR.replace("tags: [\"2.40\"]", "tags: [2.40, 3]"))]).unwrap();
    let Selection::Tags { tags, .. } = &state.mirror_sets["base"].images[0].selection else {
        panic!("tags expected");
    };
    assert_eq!(tags.iter().map(String::as_str).collect::<Vec<_>>(), ["2.40", "3"]);
}

#[test]
fn digest_pins_need_a_mirror_tag_and_nothing_else() {
    let pin = "base/glibc@sha256:eb8f0c402a49674df4988ee3bf8b27230b4d7dde24c9e118996723a0c9796649";
    let errors = errors_of(&MIRROR.replace("base/glibc", pin));
    assert!(errors.iter().any(|e| e.message.contains("cannot also select tags")), "{errors:#?}");
    let errors = errors_of(&MIRROR.replace("base/glibc", pin).replace("tags: [\"2.40\"]", "foo: bar"));
    assert!(errors.iter().any(|e| e.message.contains("unknown field `foo`")), "{errors:#?}");
    let state =
        load_files(&[("a.yaml", &MIRROR.replace("base/glibc", pin).replace("tags: [\"2.40\"]", "tag: 2-pinned"))])
            .unwrap();
    let refs = state.mirror_sets["base"].fixed_mirror_refs();
    let expected = "registry.internal.example:5000/mirror/base/glibc:2-pinned@sha256:eb8f0c402a49674df4988ee3bf8b27230b4d7dde24c9e118996723a0c9796649";
    assert_eq!(refs.iter().map(ToString::to_string).collect::<Vec<_>>(), [expected]);
}

#[test]
fn a_repository_listed_twice_in_one_set_is_an_error() {
    let text = MIRROR.to_string() + "    - source: registry.vendor.example/base/glibc\n      tags: [\"2.41\"]\n";
    let errors = errors_of(&text);
    assert!(errors.iter().any(|e| e.message.contains("already listed at spec.images[0]")), "{errors:#?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let broken_one = MIRROR.replace("tags: [\"2.40\"]", "tags: [\".x\"]");
    let broken_two = MIRROR.replace("name: base", "name: other").replace("mirror\n", "mirror\n  schedule: nope\n");
    let result = load_files(&[("one.yaml", &broken_one), ("two.yaml", &broken_two)]);
    let diags = result.unwrap_err();
    let files: BTreeSet<&str> = diags.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, BTreeSet::from(["one.yaml", "two.yaml"]));
}

#[test]
fn duplicate_names_point_at_the_first_definition() {
    let diags = load_files(&[("a.yaml", MIRROR), ("b.yaml", &MIRROR.replace("2.40", "2.41"))]).unwrap_err();
    let d = diags.iter().find(|d| d.message.contains("duplicate")).expect("a duplicate error");
    assert_eq!(d.file, "b.yaml");
    assert!(d.message.contains("first defined at a.yaml:3"), "{}", d.message);
}

#[test]
fn a_broken_mirror_set_does_not_cascade_into_missing_references() {
    let prepull =
        "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: p}\nspec:\n  mirrorSets: [base]\n";
    let broken = MIRROR.replace("target:", "targett:");
    let diags = load_files(&[("a.yaml", &broken), ("p.yaml", prepull)]).unwrap_err();
    assert_eq!(diags.error_count(), 1, "{diags}");
    assert!(diags.iter().next().unwrap().hint.as_deref() == Some("did you mean `target`?"));
}

#[test]
fn registries_for_one_host_must_agree() {
    let registry = |name: &str, insecure: bool| {
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: {name}}}\nspec:\n  host: localhost:5000\n  insecure: {insecure}\n"
        )
    };
    let diags = load_files(&[("a.yaml", &registry("a", true)), ("b.yaml", &registry("b", false))]).unwrap_err();
    assert!(diags.iter().any(|d| d.message.contains("different settings")), "{diags}");
    let state = load_files(&[("a.yaml", &registry("a", true)), ("b.yaml", &registry("b", true))]).unwrap();
    assert_eq!(state.warnings.warning_count(), 1);
}

#[test]
fn registry_field_problems() {
    let base = "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {name: r}\nspec:\n  host: registry.example:5000\n";
    let table: &[(&str, &str)] = &[
        ("  host: registry.example:5000\n", "without scheme"),
        ("  caFile: certs/none.pem\n", "does not exist"),
        ("  credentials: {dockerConfig: relative/config.json}\n", "absolute path"),
        ("  credentials: {dockerConfig: '{\"auths\": {}}'}\n", "inline secret"),
        ("  credentials: {dockerConfig: /a, helper: b}\n", "exactly one"),
        ("  credentials: {helper: 'ecr login'}\n", "not a credential helper"),
        ("  limits: {concurrency: 0}\n", "concurrency 0"),
        ("  limits: {requestsPerSecond: -1}\n", "not a positive rate"),
        ("  limits: {requestsPerSecond: .nan}\n", "NaN is not a positive rate"),
        ("  limits: {requestsPerSecond: .inf}\n", "inf is not a positive rate"),
        ("  token: abc\n", "inline secret"),
        ("  registryToken: abc\n", "inline secret"),
    ];
    for (extra, words) in table {
        let text = if words == &"without scheme" {
            base.replace("registry.example:5000", "https://registry.example")
        } else {
            format!("{base}{extra}")
        };
        let errors = errors_of(&text);
        assert!(errors.iter().any(|e| e.message.contains(words)), "{extra:?}: expected {words:?}, got {errors:#?}");
    }
}

/// Budgets no registry means are refused with the bounds in the hint: `1e-300` once
/// validated and then overflowed a `Duration` in the registry client, and `1e-6` validated and
/// then spaced requests eleven days apart.
#[test]
fn request_budgets_a_registry_cannot_mean_are_refused() {
    let base = "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {name: r}\nspec:\n  host: registry.example:5000\n";
    let table: &[(&str, &str, &str)] = &[
        ("requestsPerSecond: 1e-300", "1e-300 requests per second is less than one a minute", "at least 0.0167"),
        ("requestsPerSecond: 1e-6", "1e-6 requests per second is less than one a minute", "at least 0.0167"),
        ("requestsPerSecond: 0.016", "0.016 requests per second", "one request a minute"),
        ("requestsPerSecond: 0", "0 is not a positive rate", "at least 0.0167"),
        ("concurrency: 257", "concurrency 257 is above 256", "give 1 to 256"),
        ("concurrency: 4294967295", "concurrency 4294967295 is above 256", "give 1 to 256"),
        ("concurrency: 0", "concurrency 0", "give 1 to 256"),
    ];
    for (limit, message, hint) in table {
        let errors = errors_of(&format!("{base}  limits: {{{limit}}}\n"));
        assert!(
            errors.iter().any(|e| e.message.contains(message)
                && e.hint.as_deref().is_some_and(|h| h.contains(hint))
                && e.path.as_deref().is_some_and(|p| p.starts_with("spec.limits."))
                && e.line == Some(6)),
            "{limit}: expected {message:?} with a hint {hint:?}, got {errors:#?}"
        );
    }
    // The bounds themselves are accepted, and so is no limit at all.
    for limit in ["requestsPerSecond: 0.0167", "requestsPerSecond: 1e9", "concurrency: 256", "concurrency: 1"] {
        let text = format!("{base}  limits: {{{limit}}}\n");
        assert!(errors_of(&text).is_empty(), "{limit}: {:#?}", errors_of(&text));
    }
}

/// A schedule that can never run is refused where it is written, for sets and policies alike.
#[test]
fn a_schedule_that_never_runs_is_refused() {
    let errors = mirror_with("  images:", "  schedule: \"0 0 30 2 *\"\n  images:");
    assert!(
        errors.iter().any(|e| e.path.as_deref() == Some("spec.schedule")
            && e.message == "`0 0 30 2 *` never runs: no date matches it"
            && e.hint.as_deref().is_some_and(|h| h.contains("February has at most 29 days"))
            && (e.line, e.column) == (Some(6), Some(13))),
        "{errors:#?}"
    );
    let backup = "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {name: b}\nspec:\n  schedule: \"0 3 31 11 *\"\n  destination: /backups\n  mirrorSets: [base]\n";
    let Err(diags) = load_files(&[("m.yaml", MIRROR), ("b.yaml", backup)]) else { panic!("accepted") };
    assert!(diags.iter().any(|e| e.message.contains("never runs") && e.file == "b.yaml"), "{diags}");
}

/// A private key in a field of another type was reported, and then quoted whole by serde's
/// `invalid type` message in the next diagnostic.
#[test]
fn no_message_quotes_a_private_key() {
    let registry =
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {name: r}\nspec:\n  host: registry.example\n";
    for value in [
        "\"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjE\\n-----END OPENSSH PRIVATE KEY-----\"",
        "\"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\"",
        "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQ",
    ] {
        let errors = errors_of(&format!("{registry}  limits: {{concurrency: {value}}}\n"));
        assert!(errors.iter().any(|e| e.message.contains("is a private key")), "{errors:#?}");
        let all = format!("{errors:?}");
        for secret in ["b3BlbnNzaC1rZXktdjE", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "QYQSZQGPQYQSZQGP"] {
            assert!(!all.contains(secret), "{value}: {all}");
        }
        assert!(errors.iter().any(|e| e.message.contains("invalid type: string \"<private key>")), "{errors:#?}");
    }
}

#[test]
fn private_keys_are_never_accepted_anywhere() {
    let text = MIRROR.replace(
        "metadata: {name: base}",
        "metadata:\n  name: base\n  annotations:\n    note: \"-----BEGIN EC PRIVATE KEY-----\\nMHc...\"",
    );
    let errors = errors_of(&text);
    assert!(errors.iter().any(|e| e.message.contains("private key")), "{errors:#?}");
}

#[test]
fn pre_pull_defaults_follow_the_dr_plan() {
    let text = "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: p}\nspec:\n  mirrorSets: [base]\n  method: cri\n  cri: {parallelPulls: 8}\n  kubeletGC: {minimumAge: 72h}\n";
    let state = load_files(&[("m.yaml", MIRROR), ("p.yaml", text)]).unwrap();
    let set = &state.pre_pull_sets["p"];
    assert_eq!((set.cri_socket.as_str(), set.parallel_pulls), ("/run/containerd/containerd.sock", 8));
    assert_eq!((set.kubelet_gc.high_threshold_percent, set.kubelet_gc.low_threshold_percent), (85, 75));
    assert_eq!(set.kubelet_gc.minimum_age.duration(), std::time::Duration::from_secs(72 * 3600));
}

#[test]
fn pre_pull_and_backup_problems() {
    let prepull = "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: p}\nspec:\n";
    let backup = "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {name: b}\nspec:\n  schedule: \"0 3 * * *\"\n  destination: /backups\n  mirrorSets: [base]\n";
    let table: &[(String, &str)] = &[
        (format!("{prepull}  mirrorSets: [nope]\n"), "MirrorSet `nope` does not exist"),
        (format!("{prepull}  images: [registry.internal.example:5000/x]\n"), "names no tag or digest"),
        (format!("{prepull}  nodeSelector: {{}}\n"), "no image is selected"),
        (format!("{prepull}  mirrorSets: [base]\n  pullSecrets: [Bad_Secret]\n"), "not a valid Secret name"),
        (
            format!("{prepull}  mirrorSets: [base]\n  tolerations: [{{key: a, operator: Exists, value: b}}]\n"),
            "takes no value",
        ),
        (
            format!("{prepull}  mirrorSets: [base]\n  tolerations: [{{key: a, tolerationSeconds: 5}}]\n"),
            "only applies to effect NoExecute",
        ),
        (format!("{prepull}  mirrorSets: [base]\n  method: daemon\n"), "unknown variant"),
        (format!("{prepull}  mirrorSets: [base]\n  cri: {{parallelPulls: 2}}\n"), "only apply to `method: cri`"),
        (
            format!("{prepull}  mirrorSets: [base]\n  method: cri\n  cri: {{socket: run/crio.sock}}\n"),
            "not an absolute path",
        ),
        (
            format!("{prepull}  mirrorSets: [base]\n  method: cri\n  cri: {{parallelPulls: 0}}\n"),
            "not between 1 and 32",
        ),
        (format!("{prepull}  mirrorSets: [base]\n  kubeletGC: {{highThresholdPercent: 101}}\n"), "not a percentage"),
        (
            format!("{prepull}  mirrorSets: [base]\n  kubeletGC: {{lowThresholdPercent: 90}}\n"),
            "above the high threshold",
        ),
        (format!("{prepull}  mirrorSets: [base]\n  kubeletGC: {{minimumAge: two days}}\n"), "not a duration"),
        (backup.replace("/backups", "backups"), "absolute path"),
        (backup.replace("0 3 * * *", "daily"), "1 field"),
        (format!("{backup}  retention: {{maxAge: forever}}\n"), "not a duration"),
        (format!("{backup}  retention: {{keep: 0}}\n"), "keep 0"),
        (format!("{backup}  maxPartSize: 4 GB-ish\n"), "not a size"),
        (format!("{backup}  maxPartSize: 10KiB\n"), "smaller than 1MiB"),
        (format!("{backup}  compression: xz\n"), "unknown variant"),
        (format!("{backup}  encryption: {{ageRecipients: [age1nope]}}\n"), "not an age recipient"),
        (format!("{backup}  encryption: {{ageRecipients: [AGE-SECRET-KEY-1QQQQ]}}\n"), "private key"),
    ];
    for (text, words) in table {
        let errors = match load_files(&[("m.yaml", MIRROR), ("x.yaml", text)]) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().cloned().collect(),
        };
        assert!(
            errors.iter().any(|e| e.message.contains(words) && e.file == "x.yaml"),
            "{text}\nexpected {words:?}, got {errors:#?}"
        );
    }
}

#[test]
fn header_problems() {
    let table: &[(&str, &str)] = &[
        ("- a\n- b\n", "must be a mapping"),
        ("kind: MirrorSet\n", "no apiVersion"),
        ("apiVersion: lifeboat.dev/v1\nkind: MirrorSet\n", "unknown apiVersion"),
        ("apiVersion: lifeboat.dev/v1alpha1\n", "no kind"),
        ("apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSets\n", "unknown kind `MirrorSets`"),
        ("a: [\n", "YAML syntax error"),
    ];
    for (text, words) in table {
        let errors = errors_of(text);
        assert!(errors.iter().any(|e| e.message.contains(words)), "{text:?}: expected {words:?}, got {errors:#?}");
    }
    let errors = errors_of("apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSets\n");
    assert_eq!(errors[0].hint.as_deref().map(|h| h.starts_with("did you mean `MirrorSet`?")), Some(true));
}

#[test]
fn an_empty_tree_is_invalid() {
    let diags = load_files(&[("README.md", "# nothing")]).unwrap_err();
    assert!(diags.iter().next().unwrap().message.contains("no desired-state documents"));
}

#[test]
fn multi_document_files_keep_their_own_line_numbers() {
    let second = MIRROR.replace("name: base", "name: two").replace("2.40", "2.41").replace("  target", "  targe");
    let text = format!("{MIRROR}---\n{second}");
    let diags = load_files(&[("a.yaml", &text)]).unwrap_err();
    let d = diags.iter().next().unwrap();
    // `targe:` is line 5 of the second document, which starts after 8 lines and a marker.
    assert_eq!((d.line, d.column), (Some(14), Some(3)), "{d}");
}

#[test]
fn names_of_any_scalar_type_are_read_as_text() {
    // serde reads `123` into the name; the header must agree, or the document vanishes.
    let state = load_files(&[("a.yaml", &MIRROR.replace("name: base", "name: 123"))]).unwrap();
    assert!(state.mirror_sets.contains_key("123"));
    let errors = errors_of(&MIRROR.replace("name: base", "name: ~"));
    assert!(errors.iter().any(|e| e.message.contains("no usable metadata.name")), "{errors:#?}");
}

#[test]
fn exact_positions_of_value_problems() {
    // (replace, with, line, column)
    let table: &[(&str, &str, usize, usize)] = &[
        ("tags: [\"2.40\"]", "tags: [\"2.40\", \".x\"]", 8, 22),
        ("registry.internal.example:5000/mirror", "mirror", 5, 11),
        ("base/glibc", "base/glibc:1", 7, 15),
        ("  images:", "  schedule: \"* * *\"\n  images:", 6, 13),
    ];
    for (from, to, line, column) in table {
        let errors = mirror_with(from, to);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].line, errors[0].column), (Some(*line), Some(*column)), "{}", errors[0]);
    }
}

#[test]
fn two_upstream_repositories_cannot_share_a_mirror_repository() {
    let other = MIRROR
        .replace("name: base", "name: hub")
        .replace("registry.vendor.example/base/glibc", "docker.io/base/glibc")
        .replace("2.40", "2.41");
    let diags = load_files(&[("a.yaml", MIRROR), ("b.yaml", &other)]).unwrap_err();
    let d = diags.iter().find(|d| d.file == "b.yaml").expect("an error in the second set");
    assert!(d.message.contains("would be mirrored to `registry.internal.example:5000/mirror/base/glibc`"), "{d}");
    assert!(d.message.contains("already mirrors `registry.vendor.example/base/glibc`"), "{d}");
    // The same upstream repository in two sets, with different tags, is fine.
    let same = MIRROR.replace("name: base", "name: more").replace("2.40", "2.41");
    assert!(load_files(&[("a.yaml", MIRROR), ("b.yaml", &same)]).is_ok());
}

#[test]
fn node_selector_labels_follow_kubernetes_syntax() {
    let prepull = |selector: &str| {
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {{name: p}}\nspec:\n  mirrorSets: [base]\n  nodeSelector: {{{selector}}}\n"
        )
    };
    for ok in ["node-role.kubernetes.io/worker: \"\"", "kubernetes.io/arch: amd64", "tier: gold_1"] {
        assert!(load_files(&[("m.yaml", MIRROR), ("p.yaml", &prepull(ok))]).is_ok(), "{ok}");
    }
    for bad in ["\"bad key!\": x", "a: \"-x\"", "\"Bad_Prefix/x\": y"] {
        let diags = load_files(&[("m.yaml", MIRROR), ("p.yaml", &prepull(bad))]).unwrap_err();
        assert!(diags.iter().any(|d| d.message.contains("not a valid label")), "{bad}: {diags}");
    }
}

#[test]
fn pre_pull_images_off_the_mirror_are_flagged() {
    let prepull = "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: p}\nspec:\n  images: [nginx:1.25, registry.internal.example:5000/mirror/x:1]\n";
    let state = load_files(&[("m.yaml", MIRROR), ("p.yaml", prepull)]).unwrap();
    let warnings: Vec<&Diagnostic> = state.warnings.iter().collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].message.contains("`nginx:1.25` is not on a mirror host"), "{}", warnings[0]);
    assert_eq!(warnings[0].path.as_deref(), Some("spec.images[0]"));
}

#[test]
fn secret_looking_label_keys_are_not_secrets() {
    let text = MIRROR.replace("metadata: {name: base}", "metadata:\n  name: base\n  labels: {auth: sso, token: none}");
    assert!(load_files(&[("a.yaml", &text)]).is_ok());
}

#[test]
fn file_references_are_normalized_and_hidden_files_refused() {
    let with_key = |key: &str| MIRROR.replace("  images:", &format!("  signatures: {{keys: [\"{key}\"]}}\n  images:"));
    assert!(load_files(&[("a.yaml", &with_key("./keys/./k.pub")), ("keys/k.pub", "k")]).is_ok());
    let diags = load_files(&[("a.yaml", &with_key(".keys/k.pub")), (".keys/k.pub", "k")]).unwrap_err();
    assert!(diags.iter().any(|d| d.message.contains("hidden")), "{diags}");
}

/// Regression: with the status committed inside the desired-state folder (`--path .`), its
/// documents were read as desired state and every later load failed.
#[test]
fn status_documents_lifeboat_wrote_are_not_desired_state() {
    let status = "# Written by Lifeboat\napiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSetStatus\nmetadata: {name: base}\nresult: succeeded\n";
    let index = "apiVersion: lifeboat.dev/v1alpha1\nkind: LifeboatStatus\ndesiredTree: abc\n";
    let state =
        load_files(&[("m.yaml", MIRROR), ("status/MirrorSet/base.yaml", status), ("status/lifeboat.yaml", index)]);
    assert_eq!(state.unwrap().mirror_sets.len(), 1);
}
