//! YAML mechanics of the loader: splitting a file into documents, deserializing one document
//! with its error location, and an index from field paths to line and column.
//!
//! All YAML handling of the desired state stays in this file so the parser can be swapped.
//! serde_yaml does the typed deserialization; yaml-rust2's event parser supplies the positions
//! that serde does not keep, so that a problem found after parsing (a bad cron expression, a
//! reference to a missing set) still points at its line and column. That pass comes first and
//! also guards serde_yaml: a document nested deeper than [`MAX_DEPTH`] never reaches it.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};
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

/// The deepest nesting of mappings and sequences a document may have. The format needs 7
/// levels; anything near this limit is a mistake or an attack on the parser, whose cost grows
/// with the square of the depth of flow collections (`[[[[...`).
pub const MAX_DEPTH: usize = 64;

/// The most values (mapping keys, values and list items) one file may hold: over three times
/// a MirrorSet listing 80,000 tags, and small enough that serde_yaml's tree of them, a few
/// hundred bytes each, stays small.
pub const MAX_VALUES: usize = 250_000;

/// How many more values the documents of one file may hold.
#[derive(Debug)]
pub struct Budget {
    /// One more than the values left; 0 once the file went over.
    left: usize,
}

impl Budget {
    pub fn new() -> Budget {
        Budget { left: MAX_VALUES + 1 }
    }

    /// The file went over [`MAX_VALUES`]: read no more of it.
    pub fn spent(&self) -> bool {
        self.left == 0
    }

    /// Takes one value; `false` when that goes over the limit.
    fn take(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        self.left > 0
    }
}

/// Why a document is not handed to serde_yaml.
#[derive(Debug, Clone)]
pub enum Refused {
    /// Nested deeper than [`MAX_DEPTH`]: where the level past the limit starts.
    TooDeep(Position),
    /// Its file holds more than [`MAX_VALUES`] values: where the one past the limit is.
    TooMany(Position),
    /// yaml-rust2 could not parse it, and it holds too many brackets for serde_yaml to be
    /// trusted with it: yaml-rust2's syntax error.
    Syntax(YamlError),
}

/// Where each field of a document is, found by paths such as `spec.images[1].tags[0]`.
///
/// The fields form a tree of steps (mapping keys and sequence indexes), each key held once,
/// so the index grows with the document and never with the length of the paths in it; a path
/// is only spelled out when asked for.
#[derive(Debug, Default)]
pub struct PositionIndex {
    nodes: Vec<Node>,
    /// (parent node, step) → child node.
    children: HashMap<(usize, Step), usize>,
    /// Every mapping key, as (node, position of the key), in document order.
    keys: Vec<(usize, Position)>,
    /// Every scalar value, as (node, text, position), in document order.
    scalars: Vec<(usize, String, Position)>,
}

/// The parent of the root in `children`.
const ROOT: usize = usize::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Item(usize),
}

#[derive(Debug)]
struct Node {
    /// `None` for the document's root.
    parent: Option<usize>,
    step: Step,
    /// Where the value starts, once seen.
    at: Option<Position>,
}

/// A key or scalar of the document, with what is known of its place.
#[derive(Debug, Clone, Copy)]
pub struct Located<'a> {
    index: &'a PositionIndex,
    node: usize,
    /// The key, or the scalar's text.
    pub text: &'a str,
    pub position: Position,
}

impl Located<'_> {
    /// The field path, such as `spec.credentials.password`.
    pub fn path(&self) -> String {
        self.index.path_of(self.node)
    }

    /// Whether the mapping this key or value belongs to sits at `path` (such as
    /// `metadata.labels`); compares steps without spelling out the path.
    pub fn parent_is(&self, path: &str) -> bool {
        let Some(mut node) = self.index.nodes[self.node].parent else {
            return false;
        };
        let mut rest = path;
        loop {
            let current = &self.index.nodes[node];
            let Some(parent) = current.parent else {
                return rest.is_empty();
            };
            let step = match &current.step {
                Step::Key(k) => k.clone(),
                Step::Item(i) => format!("[{i}]"),
            };
            let Some(before) = rest.strip_suffix(step.as_str()) else {
                return false;
            };
            rest = match (&current.step, before) {
                (Step::Key(_), b) if self.index.nodes[parent].parent.is_none() => b,
                (Step::Key(_), b) => match b.strip_suffix('.') {
                    Some(b) => b,
                    None => return false,
                },
                (Step::Item(_), b) => b,
            };
            node = parent;
        }
    }
}

impl PositionIndex {
    /// Indexes a document, and decides whether serde_yaml may read it: never when it nests
    /// deeper than [`MAX_DEPTH`], which is refused as soon as the level past the limit opens.
    /// A document that yaml-rust2 cannot parse gives a partial index, and goes on to serde_yaml
    /// (whose messages say more) only when it holds at most [`MAX_DEPTH`] brackets in all, so
    /// that it cannot nest flow collections deeply where yaml-rust2 did not look. Each value
    /// is taken from `budget`, shared by the documents of a file; the one past it is refused.
    pub fn build(segment: Segment<'_>, budget: &mut Budget) -> Result<PositionIndex, Refused> {
        let mut builder =
            IndexBuilder { index: PositionIndex::default(), stack: Vec::new(), first_line: segment.first_line };
        let mut parser = Parser::new_from_str(segment.text);
        let mut last = None;
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd | Event::DocumentEnd, _)) => break,
                Ok((event, mark)) => {
                    last = Some(mark);
                    let value = matches!(
                        event,
                        Event::Scalar(..) | Event::Alias(_) | Event::MappingStart(..) | Event::SequenceStart(..)
                    );
                    if value && !budget.take() {
                        return Err(Refused::TooMany(builder.position(mark)));
                    }
                    builder.on_event(event, mark);
                    if builder.stack.len() > MAX_DEPTH {
                        return Err(Refused::TooDeep(builder.position(mark)));
                    }
                }
                // yaml-rust2's scanner reads ahead of the events, and stops at 255 open flow
                // collections: the level past the limit is then found by counting brackets from
                // the last event.
                Err(error) if error.info() == "recursion limit exceeded" => {
                    let past = last.and_then(|m| bracket_past_limit(segment.text, m, builder.stack.len()));
                    let at = match past {
                        Some((line, col)) => Position { line: line + segment.first_line, column: col + 1 },
                        None => builder.position(*error.marker()),
                    };
                    return Err(Refused::TooDeep(at));
                }
                Err(error) => {
                    let brackets = segment.text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
                    if brackets > MAX_DEPTH {
                        let mark = error.marker();
                        let (message, position) = (error.info().to_string(), Some(builder.position(*mark)));
                        return Err(Refused::Syntax(YamlError { message, position }));
                    }
                    break;
                }
            }
        }
        Ok(builder.index)
    }

    /// Position of the value at `path`, or of the closest enclosing field that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let root = self.children.get(&(ROOT, Step::Item(0))).copied()?;
        self.descend(root, path).1
    }

    /// How far `rest` leads down from `node`: the bytes of `rest` matched, and the position of
    /// the deepest node reached that has one. Keys may themselves hold `.` or `[` (label keys
    /// such as `kubernetes.io/os`), so several places where a key could end are tried: the
    /// first few and the end of the path, which keeps a lookup linear in the path's length.
    fn descend(&self, node: usize, rest: &str) -> (usize, Option<Position>) {
        const KEY_ENDS_TRIED: usize = 8;
        let here = self.nodes[node].at;
        let mut best = (0, here);
        if rest.is_empty() {
            return best;
        }
        // Down to `child`, which took `used` bytes of `rest`.
        let follow = |child: &usize, used: usize| {
            let after = &rest[used..];
            let skip = usize::from(after.starts_with('.'));
            let (deeper, at) = self.descend(*child, &after[skip..]);
            (used + skip + deeper, at.or(here))
        };
        if let Some(inner) = rest.strip_prefix('[') {
            if let Some((number, _)) = inner.split_once(']')
                && let Ok(i) = number.parse::<usize>()
                && let Some(child) = self.children.get(&(node, Step::Item(i)))
            {
                best = follow(child, number.len() + 2);
            }
            return best;
        }
        let ends = rest.match_indices(['.', '[']).map(|(i, _)| i).take(KEY_ENDS_TRIED).chain([rest.len()]);
        for end in ends.filter(|end| *end > 0) {
            if let Some(child) = self.children.get(&(node, Step::Key(rest[..end].to_string()))) {
                let reached = follow(child, end);
                if reached.0 > best.0 {
                    best = reached;
                }
                if best.0 == rest.len() {
                    break;
                }
            }
        }
        best
    }

    /// Every scalar value in the document.
    pub fn scalars(&self) -> impl Iterator<Item = Located<'_>> {
        self.scalars.iter().map(|(node, text, position)| Located {
            index: self,
            node: *node,
            text,
            position: *position,
        })
    }

    /// Every mapping key in the document.
    pub fn keys(&self) -> impl Iterator<Item = Located<'_>> {
        self.keys.iter().map(|(node, position)| {
            let text = match &self.nodes[*node].step {
                Step::Key(k) => k.as_str(),
                Step::Item(_) => "",
            };
            Located { index: self, node: *node, text, position: *position }
        })
    }

    fn path_of(&self, mut node: usize) -> String {
        let mut steps = Vec::new();
        while let Some(parent) = self.nodes[node].parent {
            steps.push(&self.nodes[node].step);
            node = parent;
        }
        let mut path = String::new();
        for step in steps.into_iter().rev() {
            match step {
                Step::Key(k) if path.is_empty() => path.push_str(k),
                Step::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Step::Item(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }

    /// The child of `parent` (`None`: the root) at `step`, created when new.
    fn child(&mut self, parent: Option<usize>, step: Step) -> usize {
        let key = (parent.unwrap_or(ROOT), step);
        if let Some(existing) = self.children.get(&key) {
            return *existing;
        }
        let id = self.nodes.len();
        self.nodes.push(Node { parent, step: key.1.clone(), at: None });
        self.children.insert(key, id);
        id
    }
}

/// Where, from the event at `last` on (its line 1-based, its column and index counted in
/// characters from 0) with `depth` levels open, an opening bracket takes the depth past
/// [`MAX_DEPTH`]: as (line, column) in `last`'s terms. A bracket at `last` is already open.
fn bracket_past_limit(text: &str, last: Marker, mut depth: usize) -> Option<(usize, usize)> {
    let (mut line, mut col) = (last.line(), last.col());
    let mut rest = text.chars().skip(last.index()).peekable();
    if rest.next_if(|c| matches!(c, '[' | '{')).is_some() {
        col += 1;
    }
    for c in rest {
        match c {
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((line, col));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '\n' => {
                line += 1;
                col = 0;
                continue;
            }
            _ => {}
        }
        col += 1;
    }
    None
}

enum Frame {
    /// A mapping; `key` is the entry whose value comes next; `keys` counts keys seen.
    Mapping { node: usize, key: Option<usize>, keys: usize },
    /// A sequence and the index of its next element.
    Sequence { node: usize, next: usize },
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

    /// The node that starts now; `None` when it is a mapping key.
    fn next_node(&mut self) -> Option<usize> {
        match self.stack.last_mut() {
            // The root: one per document.
            None => Some(self.index.child(None, Step::Item(0))),
            Some(Frame::Mapping { key, .. }) => key.take(),
            Some(Frame::Sequence { node, next }) => {
                let (parent, i) = (*node, *next);
                *next += 1;
                Some(self.index.child(Some(parent), Step::Item(i)))
            }
        }
    }

    fn record_value(&mut self, node: usize, mark: Marker) {
        let position = self.position(mark);
        self.index.nodes[node].at.get_or_insert(position);
    }

    /// Takes `key` (at `mark`) as the next key of the innermost mapping.
    fn key(&mut self, key: String, mark: Marker) -> Option<usize> {
        let position = self.position(mark);
        let Some(Frame::Mapping { node, keys, .. }) = self.stack.last() else {
            return None;
        };
        let (parent, first) = (*node, *keys == 0);
        // yaml-rust2 marks a block mapping's start after its first key, so the mapping is
        // placed at its first key instead.
        if first {
            self.index.nodes[parent].at = Some(position);
        }
        let entry = self.index.child(Some(parent), Step::Key(key));
        self.index.keys.push((entry, position));
        if let Some(Frame::Mapping { key, keys, .. }) = self.stack.last_mut() {
            *keys += 1;
            *key = Some(entry);
        }
        Some(entry)
    }

    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.next_node() {
                Some(node) => {
                    self.record_value(node, mark);
                    let position = self.position(mark);
                    self.index.scalars.push((node, value, position));
                }
                None => {
                    self.key(value, mark);
                }
            },
            Event::Alias(_) => {
                if let Some(node) = self.next_node() {
                    self.record_value(node, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key gets a placeholder name; its content and
                // the value after it share that entry.
                let node = match self.next_node() {
                    Some(node) => node,
                    None => match self.key("?".into(), mark) {
                        Some(node) => node,
                        None => return,
                    },
                };
                self.record_value(node, mark);
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { node, key: None, keys: 0 }
                } else {
                    Frame::Sequence { node, next: 0 }
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
        let index = PositionIndex::build(docs[1], &mut Budget::new()).unwrap();
        assert_eq!(index.find("spec.images[0].source"), Some(Position { line: 5, column: 15 }));
        assert_eq!(index.find("spec.images[0].tags[1]"), Some(Position { line: 6, column: 19 }));
        // unknown paths fall back to the closest known parent
        assert_eq!(index.find("spec.images[0].tagRules.semver"), Some(Position { line: 5, column: 7 }));
        assert_eq!(index.find("spec.images"), Some(Position { line: 5, column: 5 }));
        assert_eq!(index.find("spec"), Some(Position { line: 4, column: 3 }));
        let keys: Vec<_> = index.keys().map(|k| k.path()).collect();
        assert!(keys.contains(&"spec.images[0].tags".to_string()));
    }

    fn one(text: &str) -> Segment<'_> {
        Segment { text, first_line: 0 }
    }

    fn too_deep(text: &str) -> Position {
        match PositionIndex::build(one(text), &mut Budget::new()) {
            Err(Refused::TooDeep(at)) => at,
            other => panic!("expected too deep, got {other:?}"),
        }
    }

    /// A 100,000-deep flow sequence took 25 s for serde_yaml to refuse: it is refused at the
    /// bracket that passes the limit, before serde_yaml sees it.
    #[test]
    fn deep_flow_collections_are_refused_at_the_level_past_the_limit() {
        let text = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        // The root mapping is level 1, so the 64th bracket opens level 65.
        assert_eq!(too_deep(&text), Position { line: 1, column: 3 + 64 });
        let text = format!("a:\n  b: {}x\n", "{c: ".repeat(100_000));
        assert_eq!(too_deep(&text).line, 2);
        // At the limit itself, nothing is refused.
        let text = format!("a: {}{}\n", "[".repeat(63), "]".repeat(63));
        assert!(PositionIndex::build(one(&text), &mut Budget::new()).is_ok());
    }

    #[test]
    fn deep_block_nesting_is_refused_too() {
        assert_eq!(too_deep(&format!("{}x\n", "- ".repeat(10_000))).line, 1);
        let staircase: String = (0..100).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(too_deep(&staircase).line, 65);
    }

    /// A document yaml-rust2 cannot parse goes on to serde_yaml for its message only when it
    /// cannot hide deep nesting past the point yaml-rust2 stopped at.
    #[test]
    fn a_broken_document_with_many_brackets_is_not_handed_on() {
        let few = "a: [1, 2\nb: {c: d}\n";
        assert!(PositionIndex::build(one(few), &mut Budget::new()).is_ok());
        assert!(from_segment::<serde_yaml::Value>(one(few)).is_err());
        let many = format!("a: [1, 2\n\tb: {}\n", "[".repeat(10_000));
        match PositionIndex::build(one(&many), &mut Budget::new()) {
            Err(Refused::Syntax(e)) => assert!(e.position.is_some() && e.message.contains("tab"), "{e:?}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    /// The values of one file share a budget: the one past it is refused where it is, and a
    /// file within it is read whole.
    #[test]
    fn a_file_holding_too_many_values_is_refused_at_the_one_past_the_limit() {
        let mut budget = Budget::new();
        // A mapping, its key, the list and its items: half the limit.
        let half = format!("a: [{}]\n", vec!["x"; MAX_VALUES / 2 - 3].join(", "));
        assert!(PositionIndex::build(one(&half), &mut budget).is_ok());
        assert!(PositionIndex::build(one(&half), &mut budget).is_ok());
        assert!(!budget.spent());
        let over = "b: [1, 2, 3]\n";
        match PositionIndex::build(one(over), &mut budget) {
            Err(Refused::TooMany(at)) => assert_eq!(at.line, 1),
            other => panic!("expected too many values, got {other:?}"),
        }
        assert!(budget.spent());
    }

    #[test]
    fn keys_holding_dots_are_found_and_placed() {
        let text = "spec:\n  nodeSelector:\n    kubernetes.io/os: linux\n    a.b.c.d: x\n  images: [a, b]\n";
        let index = PositionIndex::build(one(text), &mut Budget::new()).unwrap();
        assert_eq!(index.find("spec.nodeSelector.kubernetes.io/os"), Some(Position { line: 3, column: 23 }));
        assert_eq!(index.find("spec.nodeSelector.a.b.c.d"), Some(Position { line: 4, column: 14 }));
        assert_eq!(index.find("spec.images[1]"), Some(Position { line: 5, column: 15 }));
        // A path that leaves the document ends at the deepest field it reached.
        assert_eq!(index.find("spec.nodeSelector.missing.x"), Some(Position { line: 3, column: 5 }));
        assert_eq!(index.find("spec.images[7]"), Some(Position { line: 5, column: 11 }));
        let keys: Vec<_> = index.keys().filter(|k| k.parent_is("spec.nodeSelector")).map(|k| k.path()).collect();
        assert_eq!(keys, ["spec.nodeSelector.kubernetes.io/os", "spec.nodeSelector.a.b.c.d"]);
        assert!(index.keys().any(|k| k.text == "spec" && k.parent_is("")));
        assert!(!index.keys().any(|k| k.text == "images" && k.parent_is("spec.nodeSelector")));
    }

    /// Each key is held once, not once per field below it: a 64 KiB key above 20,000 items
    /// used to cost 20,000 copies of it.
    #[test]
    fn long_keys_are_held_once() {
        // An explicit key: an implicit one may not pass 1024 characters.
        let key = "k".repeat(64 * 1024);
        let text = format!("? {key}\n:\n{}", "  - a\n".repeat(20_000));
        let index = PositionIndex::build(one(&text), &mut Budget::new()).unwrap();
        let held: usize = index
            .nodes
            .iter()
            .map(|n| match &n.step {
                Step::Key(k) => k.len(),
                Step::Item(_) => 0,
            })
            .sum::<usize>()
            + index.children.keys().map(|(_, step)| if let Step::Key(k) = step { k.len() } else { 0 }).sum::<usize>()
            + index.scalars.iter().map(|(_, text, _)| text.len()).sum::<usize>();
        assert!(held < 2 * text.len(), "{held} bytes held for a document of {}", text.len());
        assert_eq!(index.find(&format!("{key}[19999]")), Some(Position { line: 20_002, column: 5 }));
        assert_eq!(index.scalars().count(), 20_000);
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
