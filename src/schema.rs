//! The JSON Schema of the desired-state format, generated from the raw types so it can never
//! disagree with the loader. `schema/lifeboat.schema.json` is this output, committed; a test
//! fails when the two drift.

use crate::desired::raw::AnyDocument;

/// Where the committed schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "schema/lifeboat.schema.json";

/// The schema as pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut schema = schemars::schema_for!(AnyDocument);
    schema.insert("title".into(), "Lifeboat desired-state document".into());
    schema.insert(
        "description".into(),
        "One document of a Lifeboat desired-state repository: a Registry, MirrorSet, PrePullSet, \
         BackupPolicy or FailoverSet. Add `# yaml-language-server: $schema=<path to this file>` at the top of a file \
         so editors validate it."
            .into(),
    );
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}
