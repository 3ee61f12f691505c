//! The loader never panics, whatever the input: arbitrary text, and the example files with
//! random damage.

use std::collections::BTreeMap;

use lifeboat::desired::source::MemorySource;
use proptest::prelude::*;

use crate::support::root;

fn example_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for rel in [
        "registries.yaml",
        "mirrors/vendor-base.yaml",
        "mirrors/runtimes.yaml",
        "nodes/critical.yaml",
        "backups/nightly-airgap.yaml",
    ] {
        files.insert(rel.to_string(), std::fs::read_to_string(root().join("example-repo").join(rel)).unwrap());
    }
    files.insert("keys/vendor.pub".into(), "key".into());
    files.insert("certs/internal-ca.pem".into(), "ca".into());
    files
}

fn load(files: BTreeMap<String, String>) {
    // Ok or Err are both fine; only a panic fails the property.
    let _ = lifeboat::desired::load(&MemorySource { files });
}

/// Text made of YAML's punctuation and words from the format, which reaches deeper than
/// uniformly random characters.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("---\n".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("apiVersion: lifeboat.dev/v1alpha1\n".to_string()),
        Just("kind: MirrorSet\n".to_string()),
        Just("kind: PrePullSet\n".to_string()),
        Just("metadata: {name: a}\n".to_string()),
        Just("spec:\n".to_string()),
        Just("images:".to_string()),
        Just("source: a.example/b@sha256:".to_string()),
        Just("tags:".to_string()),
        Just("tagRules:".to_string()),
        Just("schedule:".to_string()),
        Just("password:".to_string()),
        // Deep nesting, explicit keys and tabs reach the depth limit and the paths where
        // yaml-rust2 and serde_yaml disagree.
        Just("[[[[[[[[[[[[[[[[".to_string()),
        Just("{a: {b: {c: ".to_string()),
        Just("- - - - - - - - ".to_string()),
        Just("? ".to_string()),
        Just("\t".to_string()),
        "[a-z0-9./:@*-]{0,12}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in yamlish()) {
        load(BTreeMap::from([("a.yaml".to_string(), text)]));
    }

    #[test]
    fn damaged_examples_never_panic(
        file in 0usize..5,
        at in any::<prop::sample::Index>(),
        cut in 0usize..40,
        insert in yamlish(),
    ) {
        let mut files = example_files();
        let key = files.keys().filter(|k| k.ends_with(".yaml")).nth(file).unwrap().clone();
        let text = files[&key].clone();
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        files.insert(key, format!("{}{}{}", &text[..start], insert, &text[end..]));
        load(files);
    }
}
