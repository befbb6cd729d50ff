//! Where a problem is: the key path of a node (`devices[0].points[2].qos`), what checks name,
//! and a position in the text (line, column), what the source map turns a path into.

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// The address of a node in the document, e.g. `devices[0].points[2].qos`. The root is the
/// empty path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub(crate) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        KeyPath(segments)
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// The enclosing node's path; `None` for the root.
    pub(crate) fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                // Keys come from the file: escape control characters so a hostile key cannot
                // rewrite the terminal line the error is printed on.
                Segment::Key(key) if i == 0 => write!(f, "{}", key.escape_debug())?,
                Segment::Key(key) => write!(f, ".{}", key.escape_debug())?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A position in the text: 1-based line, 1-based column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: u64,
    pub column: u64,
}
