//! Where each key and value sits in the YAML text: key path → (line, column).
//!
//! The values themselves are read by serde-saphyr into a plain tree that has no positions;
//! this module walks the same text once more with the underlying YAML parser (granit-parser,
//! re-exported by serde-saphyr) and records, for every node, the position of its key and of its
//! value. Validation then works on positionless data and names problems by [`KeyPath`] only,
//! which keeps it pure and testable; positions are looked up here at the very end.
//!
//! Guarantees:
//! - A YAML syntax error is returned as one [`SyntaxError`] with the parser's line and column;
//!   nothing else is attempted on a file that is not YAML.
//! - Every duplicate key in a mapping is reported (not only the first), pointing at the second
//!   occurrence and naming the first one's line. The map keeps the *first* occurrence, matching
//!   the `FirstWins` policy the loader gives serde-saphyr, so the values validated and the
//!   positions reported describe the same node.
//! - A second YAML document in the file is an error: a configuration is exactly one document.
//! - Lookups never fail hard: a path that has no entry (a key that came from a `<<` merge or
//!   from inside an alias, or a key that is missing altogether) falls back to the nearest
//!   ancestor that has one, so every problem gets the most precise position available.
//!
//! Positions are 1-based lines and 1-based columns counted in characters, as editors show them.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Marker, Parser};

use super::error::{At, Issue, Note};
use super::path::{KeyPath, Pos};

/// granit-parser's marker as a [`Pos`]: its lines are 1-based and its columns 0-based.
fn position(marker: &Marker) -> Pos {
    Pos {
        line: u64::try_from(marker.line()).unwrap_or(u64::MAX),
        column: u64::try_from(marker.col()).map_or(u64::MAX, |c| c.saturating_add(1)),
    }
}

/// The YAML text could not be parsed; the message is the parser's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the key is written; `None` for sequence items and the root.
    key: Option<Pos>,
    /// Where the value starts (for a block mapping, its first key).
    value: Pos,
}

/// Positions of every key and value of one document.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    entries: HashMap<KeyPath, Entry>,
}

impl SourceMap {
    /// Scans `text`. Problems that are valid YAML but not a valid configuration document
    /// (duplicate keys, extra documents) are returned as issues next to the map.
    pub(crate) fn scan(text: &str) -> Result<(SourceMap, Vec<Issue>), SyntaxError> {
        let mut builder = Builder::default();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|error| SyntaxError {
                pos: position(error.marker()),
                message: error.kind().to_string(),
            })?;
            builder.event(&event, position(&span.start));
        }
        // An empty file has no root node; its problems ("the configuration is empty") still
        // deserve a position.
        builder.map.entries.entry(KeyPath::root()).or_insert(Entry {
            key: None,
            value: Pos { line: 1, column: 1 },
        });
        Ok((builder.map, builder.issues))
    }

    /// The position to report for `path`: the key itself, its value, or (for a missing key)
    /// the mapping that should hold it. Falls back to the nearest ancestor that is in the map.
    pub(crate) fn locate(&self, path: &KeyPath, at: &At) -> Option<Pos> {
        let (mut current, mut want_key) = match at {
            At::Pos(pos) => return Some(*pos),
            At::Key => (Some(path.clone()), true),
            At::Value => (Some(path.clone()), false),
            At::Parent => (path.parent(), false),
        };
        while let Some(path) = current {
            if let Some(entry) = self.entries.get(&path) {
                return Some(match (want_key, entry.key) {
                    (true, Some(key)) => key,
                    _ => entry.value,
                });
            }
            want_key = false;
            current = path.parent();
        }
        None
    }

    /// `note` rendered with the line of the node it names: ` (first defined at line 12)`.
    pub(crate) fn render_note(&self, note: &Note) -> String {
        match self.locate(&note.path, &At::Key) {
            Some(pos) => format!(" ({} at line {})", note.text, pos.line),
            None => format!(" ({})", note.text),
        }
    }
}

/// What the next node inside a mapping is.
#[derive(Debug)]
enum Expect {
    Key,
    /// The value of this key; `None` when the value must not be recorded (the key is a
    /// duplicate, or not a plain scalar and so has no path).
    Value(Option<String>),
}

#[derive(Debug)]
enum Frame {
    Mapping {
        path: KeyPath,
        expect: Expect,
        /// Keys seen so far, to report duplicates.
        seen: HashMap<String, Pos>,
    },
    Sequence {
        path: KeyPath,
        next: usize,
    },
    /// Inside a node that gets no entries (a complex key, a duplicate's value); counts the
    /// collections opened so the matching end is found.
    Skip {
        depth: usize,
    },
}

/// What a node event means in its context.
enum Role {
    /// A value at this path: recorded, and if it is a collection its children get paths too.
    Node(KeyPath),
    /// A mapping key or an ignored node: nothing recorded for its content.
    Unrecorded,
}

#[derive(Debug, Default)]
struct Builder {
    map: SourceMap,
    issues: Vec<Issue>,
    stack: Vec<Frame>,
    documents: usize,
    /// Set after a second document was found; everything after it is ignored.
    done: bool,
}

impl Builder {
    fn event(&mut self, event: &Event<'_>, pos: Pos) {
        if self.done {
            return;
        }
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.issues.push(Issue::new(
                        KeyPath::root(),
                        At::Pos(pos),
                        "a second yaml document is not allowed: the configuration is one document",
                    ));
                    self.done = true;
                }
            }
            Event::Scalar(text, ..) => {
                self.node(pos, Some(text));
            }
            Event::Alias(_) => {
                self.node(pos, None);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_mapping = matches!(event, Event::MappingStart(..));
                match self.node(pos, None) {
                    Role::Node(path) if is_mapping => self.stack.push(Frame::Mapping {
                        path,
                        expect: Expect::Key,
                        seen: HashMap::new(),
                    }),
                    Role::Node(path) => self.stack.push(Frame::Sequence { path, next: 0 }),
                    Role::Unrecorded => match self.stack.last_mut() {
                        Some(Frame::Skip { depth }) => *depth += 1,
                        _ => self.stack.push(Frame::Skip { depth: 1 }),
                    },
                }
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.last_mut() {
                Some(Frame::Skip { depth }) if *depth > 1 => *depth -= 1,
                _ => {
                    self.stack.pop();
                }
            },
            _ => {}
        }
    }

    /// Classifies a node starting at `pos`; `key_text` is the scalar's text (None for
    /// collections and aliases).
    fn node(&mut self, pos: Pos, key_text: Option<&str>) -> Role {
        let role = match self.stack.last_mut() {
            None => Role::Node(KeyPath::root()),
            Some(Frame::Skip { .. }) => Role::Unrecorded,
            Some(Frame::Sequence { path, next }) => {
                let path = path.index(*next);
                *next += 1;
                Role::Node(path)
            }
            Some(Frame::Mapping { path, expect, seen }) => match expect {
                Expect::Value(key) => {
                    let role = match key.take() {
                        Some(key) => Role::Node(path.key(&key)),
                        None => Role::Unrecorded,
                    };
                    *expect = Expect::Key;
                    role
                }
                Expect::Key => {
                    let Some(key) = key_text else {
                        // An alias or a collection used as a key: it has no usable path.
                        *expect = Expect::Value(None);
                        return Role::Unrecorded;
                    };
                    let key_path = path.key(key);
                    if seen.contains_key(key) {
                        self.issues.push(
                            Issue::new(
                                key_path.clone(),
                                At::Pos(pos),
                                format!("duplicate key {key:?}"),
                            )
                            .with_note(key_path, "first defined"),
                        );
                        *expect = Expect::Value(None);
                    } else {
                        seen.insert(key.to_owned(), pos);
                        self.map.entries.insert(
                            key_path,
                            Entry {
                                key: Some(pos),
                                value: pos,
                            },
                        );
                        *expect = Expect::Value(Some(key.to_owned()));
                    }
                    return Role::Unrecorded;
                }
            },
        };
        if let Role::Node(path) = &role {
            self.map
                .entries
                .entry(path.clone())
                .and_modify(|entry| entry.value = pos)
                .or_insert(Entry {
                    key: None,
                    value: pos,
                });
        }
        role
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> KeyPath {
        // Test helper: "a.b[1].c" → KeyPath.
        let mut path = KeyPath::root();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
            if !key.is_empty() {
                path = path.key(key);
            }
            for index in indexes.split('[').filter(|i| !i.is_empty()) {
                path = path.index(index.trim_end_matches(']').parse().unwrap());
            }
        }
        path
    }

    fn pos(line: u64, column: u64) -> Option<Pos> {
        Some(Pos { line, column })
    }

    const DOC: &str = "\
gateway:
  id: gw1
buses:
  - name: plc1
    port: 502
  -   name: plc2
devices: [{name: a, points: [{x: 1}]}]
empty:
";

    #[test]
    fn paths_display_like_the_error_format() {
        assert_eq!(
            path("devices[0].points[2].qos").to_string(),
            "devices[0].points[2].qos"
        );
        assert_eq!(KeyPath::root().to_string(), "");
        assert_eq!(
            KeyPath::root().key("a\u{1b}[31m").to_string(),
            "a\\u{1b}[31m"
        );
    }

    #[test]
    fn locates_keys_and_values() {
        let (map, issues) = SourceMap::scan(DOC).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(map.locate(&path("gateway.id"), &At::Key), pos(2, 3));
        assert_eq!(map.locate(&path("gateway.id"), &At::Value), pos(2, 7));
        assert_eq!(map.locate(&path("buses[0]"), &At::Value), pos(4, 5));
        assert_eq!(map.locate(&path("buses[0].port"), &At::Value), pos(5, 11));
        assert_eq!(map.locate(&path("buses[1].name"), &At::Key), pos(6, 7));
        assert_eq!(map.locate(&path("devices[0].name"), &At::Value), pos(7, 18));
        assert_eq!(
            map.locate(&path("devices[0].points[0].x"), &At::Value),
            pos(7, 34)
        );
        assert_eq!(map.locate(&path("empty"), &At::Key), pos(8, 1));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let (map, _) = SourceMap::scan(DOC).unwrap();
        // A missing key is reported at the mapping that should hold it.
        assert_eq!(map.locate(&path("buses[0].host"), &At::Parent), pos(4, 5));
        assert_eq!(map.locate(&path("buses[0].host"), &At::Key), pos(4, 5));
        assert_eq!(map.locate(&path("uplink"), &At::Parent), pos(1, 1));
        assert_eq!(
            map.locate(&path("nothing.deeper[3]"), &At::Value),
            pos(1, 1)
        );
    }

    #[test]
    fn reports_every_duplicate_key_and_keeps_the_first() {
        let text = "a: 1\nb:\n  x: 1\n  x: 2\na: 3\n";
        let (map, issues) = SourceMap::scan(text).unwrap();
        let found: Vec<_> = issues
            .iter()
            .map(|issue| {
                (
                    issue.path.to_string(),
                    issue.message.clone(),
                    issue.at.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "b.x".to_owned(),
                    r#"duplicate key "x""#.to_owned(),
                    At::Pos(Pos { line: 4, column: 3 })
                ),
                (
                    "a".to_owned(),
                    r#"duplicate key "a""#.to_owned(),
                    At::Pos(Pos { line: 5, column: 1 })
                ),
            ]
        );
        assert_eq!(map.locate(&path("a"), &At::Value), pos(1, 4));
        assert_eq!(map.locate(&path("b.x"), &At::Value), pos(3, 6));
        let note = issues[0].note.as_ref().unwrap();
        assert_eq!(map.render_note(note), " (first defined at line 3)");
    }

    #[test]
    fn syntax_errors_carry_the_parser_position() {
        let error = SourceMap::scan("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(error.pos, Pos { line: 3, column: 2 });
        assert_eq!(error.message, "illegal placement of ':' indicator");
        let error = SourceMap::scan("a:\n\t- b\n").unwrap_err();
        assert_eq!(error.pos.line, 2);
        assert!(error.message.contains("tabs"), "{}", error.message);
    }

    #[test]
    fn a_second_document_is_an_error() {
        let (_, issues) = SourceMap::scan("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].at, At::Pos(Pos { line: 2, column: 1 }));
    }

    #[test]
    fn complex_keys_aliases_and_merges_do_not_confuse_the_paths() {
        let text = "\
base: &b {x: 1}
? [k1, k2]
: {inner: 1}
merged:
  <<: *b
  y: 2
alias: *b
after: 3
";
        let (map, issues) = SourceMap::scan(text).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(map.locate(&path("base.x"), &At::Value), pos(1, 14));
        assert_eq!(map.locate(&path("merged.y"), &At::Value), pos(6, 6));
        // Merged keys have no entry of their own: the merging mapping is the best position.
        assert_eq!(map.locate(&path("merged.x"), &At::Value), pos(5, 3));
        assert_eq!(map.locate(&path("alias.x"), &At::Value), pos(7, 8));
        assert_eq!(map.locate(&path("after"), &At::Value), pos(8, 8));
    }

    #[test]
    fn an_empty_document_has_only_a_root() {
        let (map, issues) = SourceMap::scan("# nothing here\n").unwrap();
        assert!(issues.is_empty());
        assert_eq!(
            map.locate(&path("gateway"), &At::Parent).map(|p| p.line),
            Some(1)
        );
        let (map, _) = SourceMap::scan("").unwrap();
        assert_eq!(map.locate(&path("gateway"), &At::Parent), pos(1, 1));
    }
}
