//! YAML mechanics of the loader: splitting a file into documents, deserializing one document
//! with its error location, and an index from field paths to line and column.
//!
//! All YAML handling of the desired state stays in this file so the parser can be swapped.
//! serde_yaml does the typed deserialization; yaml-rust2's event parser supplies the positions
//! that serde does not keep, so that a problem found after parsing (a bad cron expression, a
//! reference to a missing set) still points at its line and column.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::diagnostic::Position;

/// One YAML document of a file, with the line it starts on.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub text: &'a str,
    /// 0-based line of the file on which `text` starts.
    pub first_line: usize,
}

/// Splits a file at its document markers. A line starting with `---` or `...` can only be a
/// document marker in YAML (content may never start a line with them), so splitting by lines is
/// exact and keeps working past a syntax error in an earlier document. Segments holding only
/// comments and blank lines are dropped.
pub fn split_documents(text: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut offset = 0usize;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let is_marker = |m: &str| {
            line.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
        };
        if is_marker("---") || is_marker("...") {
            segments.push(Segment { text: &text[start..offset], first_line: start_line });
            // `...` ends a document; `--- content` starts one on the marker's own line.
            if is_marker("---") {
                start = offset;
                start_line = number;
            } else {
                start = offset + line.len();
                start_line = number + 1;
            }
        }
        offset += line.len();
    }
    segments.push(Segment { text: &text[start..], first_line: start_line });
    segments.retain(|s| has_content(s.text));
    segments
}

fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let t = line.trim();
        // `%YAML` and `%TAG` directives only qualify the document that follows.
        !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || t == "---" || t.starts_with("--- #"))
    })
}

/// A deserialization failure with its position in the file, when serde_yaml knew it.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub message: String,
    pub position: Option<Position>,
}

/// Deserializes one document. Positions are translated to the whole file.
pub fn from_segment<T: DeserializeOwned>(segment: Segment<'_>) -> Result<T, YamlError> {
    serde_yaml::from_str(segment.text).map_err(|e| {
        let position = e.location().map(|l| Position { line: l.line() + segment.first_line, column: l.column() });
        // serde_yaml writes "at line L column C" (relative to the document) into its messages;
        // the position is kept separately, relative to the file.
        let message = location_text().replace_all(&e.to_string(), "").into_owned();
        YamlError { message, position }
    })
}

fn location_text() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r" at line \d+ column \d+").expect("a valid pattern"))
}

/// Where each field of a document is, keyed by paths such as `spec.images[1].tags[0]`.
#[derive(Debug, Default)]
pub struct PositionIndex {
    values: HashMap<String, Position>,
    keys: Vec<(String, String, Position)>,
    scalars: Vec<(String, String, Position)>,
}

impl PositionIndex {
    /// Indexes a document. A document that yaml-rust2 cannot parse gives a partial index: the
    /// positions are a help for messages, never a reason to reject input.
    pub fn build(segment: Segment<'_>) -> PositionIndex {
        let mut builder =
            IndexBuilder { index: PositionIndex::default(), stack: Vec::new(), first_line: segment.first_line };
        let _ = Parser::new_from_str(segment.text).load(&mut builder, false);
        builder.index
    }

    /// Position of the value at `path`, or of the closest enclosing field that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Every scalar value in the document, as (path, text, position).
    pub fn scalars(&self) -> impl Iterator<Item = (&str, &str, Position)> {
        self.scalars.iter().map(|(p, v, pos)| (p.as_str(), v.as_str(), *pos))
    }

    /// Every mapping key in the document, as (path of the key, key text, position).
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str, Position)> {
        self.keys.iter().map(|(p, k, pos)| (p.as_str(), k.as_str(), *pos))
    }
}

enum Frame {
    /// A mapping at `path`; `key` is set between a key and its value; `keys` counts keys seen.
    Mapping { path: String, key: Option<String>, keys: usize },
    /// A sequence at `path` and the index of its next element.
    Sequence { path: String, next: usize },
}

struct IndexBuilder {
    index: PositionIndex,
    stack: Vec<Frame>,
    first_line: usize,
}

impl IndexBuilder {
    fn position(&self, mark: Marker) -> Position {
        Position { line: mark.line() + self.first_line, column: mark.col() + 1 }
    }

    /// Path of the node that starts now; `None` when it is a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn record_value(&mut self, path: &str, mark: Marker) {
        let pos = self.position(mark);
        self.index.values.entry(path.to_string()).or_insert(pos);
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.next_path() {
                Some(path) => {
                    self.record_value(&path, mark);
                    let pos = self.position(mark);
                    self.index.scalars.push((path, value, pos));
                }
                None => {
                    // A mapping key: remember it for the value that follows.
                    // yaml-rust2 marks a block mapping's start after its first key, so the
                    // mapping is placed at its first key instead.
                    let pos = self.position(mark);
                    if let Some(Frame::Mapping { path, key, keys }) = self.stack.last_mut() {
                        if *keys == 0 {
                            self.index.values.insert(path.clone(), pos);
                        }
                        *keys += 1;
                        self.index.keys.push((join(path, &value), value.clone(), pos));
                        *key = Some(value);
                    }
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_path() {
                    self.record_value(&path, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key gets a placeholder name.
                let path = self.next_path().unwrap_or_else(|| {
                    if let Some(Frame::Mapping { key, keys, .. }) = self.stack.last_mut() {
                        *key = Some("?".into());
                        *keys += 1;
                    }
                    "?".into()
                });
                self.record_value(&path, mark);
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None, keys: 0 }
                } else {
                    Frame::Sequence { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let text = "# comment\n---\na: 1\n---\n# only a comment\n---\nb: 2\n...\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 1);
        assert!(docs[0].text.contains("a: 1"));
        assert_eq!(docs[1].first_line, 5);
        assert!(docs[1].text.contains("b: 2"));
    }

    #[test]
    fn a_file_without_markers_is_one_document() {
        let docs = split_documents("a: 1\nb: 2\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, 0);
    }

    #[test]
    fn directives_do_not_make_a_document() {
        let docs = split_documents("%YAML 1.2\n---\na: 1\n");
        assert_eq!(docs.len(), 1);
        assert!(from_segment::<serde_yaml::Value>(docs[0]).is_ok());
    }

    #[test]
    fn dashes_inside_a_line_are_not_markers() {
        let docs = split_documents("a: '---'\nb: ---x\n----\n");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn indexes_values_keys_and_sequence_items() {
        let text = "x: 0\n---\nspec:\n  images:\n    - source: a\n      tags: [\"1\", \"2\"]\n";
        let docs = split_documents(text);
        let index = PositionIndex::build(docs[1]);
        assert_eq!(index.find("spec.images[0].source"), Some(Position { line: 5, column: 15 }));
        assert_eq!(index.find("spec.images[0].tags[1]"), Some(Position { line: 6, column: 19 }));
        // unknown paths fall back to the closest known parent
        assert_eq!(index.find("spec.images[0].tagRules.semver"), Some(Position { line: 5, column: 7 }));
        assert_eq!(index.find("spec.images"), Some(Position { line: 5, column: 5 }));
        assert_eq!(index.find("spec"), Some(Position { line: 4, column: 3 }));
        let keys: Vec<_> = index.keys().map(|(p, _, _)| p.to_string()).collect();
        assert!(keys.contains(&"spec.images[0].tags".to_string()));
    }

    #[test]
    fn serde_errors_are_placed_in_the_file() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let text = "a: 1\n---\na: 2\nb: 3\n";
        let docs = split_documents(text);
        let err = from_segment::<T>(docs[1]).unwrap_err();
        assert_eq!(err.position, Some(Position { line: 4, column: 1 }));
        assert!(err.message.contains("unknown field `b`"), "{}", err.message);
    }
}
