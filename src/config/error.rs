//! Configuration errors: what `fieldrelay check` prints and what [`super::load`] returns.
//!
//! One [`ConfigError`] is one problem, printed on one line as
//!
//! ```text
//! FILE:LINE:COLUMN: KEY.PATH: message
//! ```
//!
//! e.g. `config.yaml:14:10: devices[0].bus: unknown bus "plc9" (defined buses: plc1)`, the
//! `file:line:col:` prefix that compilers use, so editors and CI logs turn it into a link.
//! The key path is printed even though the position is there because the position alone does not
//! say *which* setting is wrong once the file has been edited, and because a path is what the
//! documentation and the issue tracker talk about. When a part is unknown it is left out: no
//! position (the file could not be read) gives `FILE: message`; no path (a YAML syntax error)
//! gives `FILE:LINE:COLUMN: message`.
//!
//! [`ConfigErrors`] holds **every** problem found, sorted by position, so that one run of
//! `check` is enough to fix a file. A *warning* is a problem that does not stop the file from
//! loading (an address that looks like a Modicon reference): printed in the same format with
//! `warning:` after the position (`FILE:LINE:COLUMN: warning: KEY.PATH: message`, as compilers
//! do), beside the errors when there are any, and on its own when the file is valid. Messages are lowercase without a trailing period, and quote
//! values from the file with Rust's debug escaping so control characters cannot garble the
//! terminal.
//!
//! Internally, checks produce [`Issue`]s that name a [`KeyPath`] and *which part* of the node to
//! point at ([`At`]); the loader turns them into [`ConfigError`]s with the source map. This keeps
//! validation free of positions and the wording of positions in one place.

use std::fmt;

use super::path::{KeyPath, Pos};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as it was named on the command line (or the name given to `load_str`).
    pub file: String,
    /// 1-based line; `None` when the problem is not at a place in the text (unreadable file).
    pub line: Option<u64>,
    /// 1-based column in characters.
    pub column: Option<u64>,
    /// Key path such as `devices[0].points[1].qos`; empty for problems of the file as a whole.
    pub path: String,
    /// Lowercase, no trailing period.
    pub message: String,
}

impl ConfigError {
    /// `FILE:LINE:COLUMN:[ label:][ PATH:] message`.
    fn write(&self, f: &mut fmt::Formatter<'_>, label: Option<&str>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        if let Some(label) = label {
            write!(f, " {label}:")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }

    /// The problem printed as a warning: `FILE:LINE:COLUMN: warning: KEY.PATH: message`.
    pub fn as_warning(&self) -> impl fmt::Display + '_ {
        struct Warning<'a>(&'a ConfigError);
        impl fmt::Display for Warning<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, Some("warning"))
            }
        }
        Warning(self)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file, sorted by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    /// Found beside the errors; they alone would not have refused the file.
    pub warnings: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Sorts by position (problems without one first: they concern the whole file) and drops
    /// exact duplicates. The sort is stable, so problems at the same position keep the order in
    /// which they were found.
    pub fn new(errors: Vec<ConfigError>) -> ConfigErrors {
        ConfigErrors {
            errors: sorted(errors),
            warnings: Vec::new(),
        }
    }

    /// The same errors, printed with these warnings.
    pub fn with_warnings(mut self, warnings: Vec<ConfigError>) -> ConfigErrors {
        self.warnings = sorted(warnings);
        self
    }

    /// A single problem that concerns the whole file.
    pub(crate) fn whole_file(file: &str, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors::new(vec![ConfigError {
            file: file.to_owned(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
        }])
    }
}

fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|error| (error.line, error.column));
    errors.dedup();
    errors
}

impl fmt::Display for ConfigErrors {
    /// One problem per line, errors and warnings in the order of the file (an error before a
    /// warning at the same place), without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<(Option<u64>, Option<u64>, bool, &ConfigError)> = self
            .errors
            .iter()
            .map(|e| (e.line, e.column, false, e))
            .chain(self.warnings.iter().map(|w| (w.line, w.column, true, w)))
            .collect();
        lines.sort_by_key(|&(line, column, warning, _)| (line, column, warning));
        for (i, (_, _, warning, problem)) in lines.into_iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if warning {
                write!(f, "{}", problem.as_warning())?;
            } else {
                write!(f, "{problem}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which part of the node at an issue's path to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum At {
    /// The key itself (`pol_interval:` — the key is what is wrong).
    Key,
    /// The value (`qos: 3` — the 3 is what is wrong).
    Value,
    /// The mapping that should contain the path (a required key is missing).
    Parent,
    /// A position known when the issue was found (duplicate keys, syntax problems).
    Pos(Pos),
}

/// A reference to another node, rendered with its line: ` (first defined at line 12)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    pub path: KeyPath,
    /// Text before ` at line N`, e.g. `first defined`.
    pub text: String,
}

/// Whether an issue refuses the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Error,
    /// Printed, but the file loads: a value that is valid yet probably not what was meant.
    Warning,
}

/// A problem found by a check, before it is given a file and a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub path: KeyPath,
    pub at: At,
    pub message: String,
    pub note: Option<Note>,
    pub severity: Severity,
}

impl Issue {
    pub(crate) fn new(path: KeyPath, at: At, message: impl Into<String>) -> Issue {
        Issue {
            path,
            at,
            message: message.into(),
            note: None,
            severity: Severity::Error,
        }
    }

    /// The value at `path` is valid but probably not what was meant.
    pub(crate) fn warning(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Warning,
            ..Issue::new(path, At::Value, message)
        }
    }

    pub(crate) fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The value at `path` is wrong.
    pub(crate) fn value(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue::new(path, At::Value, message)
    }

    /// The key at `path` is wrong (unknown, misspelt).
    pub(crate) fn key(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue::new(path, At::Key, message)
    }

    /// `path` should exist and does not.
    pub(crate) fn missing(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue::new(path, At::Parent, message)
    }

    pub(crate) fn with_note(mut self, path: KeyPath, text: impl Into<String>) -> Issue {
        self.note = Some(Note {
            path,
            text: text.into(),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: Option<u64>, column: Option<u64>, path: &str, message: &str) -> ConfigError {
        ConfigError {
            file: "c.yaml".to_owned(),
            line,
            column,
            path: path.to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn formats_like_a_compiler() {
        assert_eq!(
            error(Some(14), Some(10), "devices[0].bus", "unknown bus \"plc9\"").to_string(),
            "c.yaml:14:10: devices[0].bus: unknown bus \"plc9\""
        );
        assert_eq!(
            error(Some(3), Some(2), "", "illegal placement of ':' indicator").to_string(),
            "c.yaml:3:2: illegal placement of ':' indicator"
        );
        assert_eq!(
            error(None, None, "", "cannot read the file").to_string(),
            "c.yaml: cannot read the file"
        );
        assert_eq!(error(Some(7), None, "a", "m").to_string(), "c.yaml:7: a: m");
    }

    #[test]
    fn sorts_by_position_one_per_line() {
        let errors = ConfigErrors::new(vec![
            error(Some(9), Some(1), "b", "second"),
            error(Some(2), Some(5), "a", "first"),
            error(Some(9), Some(1), "b", "second"),
            error(None, None, "", "file"),
            error(Some(2), Some(3), "a", "before first"),
        ]);
        assert_eq!(
            errors.to_string(),
            "c.yaml: file\n\
             c.yaml:2:3: a: before first\n\
             c.yaml:2:5: a: first\n\
             c.yaml:9:1: b: second"
        );
    }

    #[test]
    fn warnings_are_labelled_and_interleaved_by_position() {
        let errors = ConfigErrors::new(vec![error(Some(9), Some(1), "b", "an error")])
            .with_warnings(vec![
                error(Some(12), Some(3), "c", "late"),
                error(Some(9), Some(1), "b", "same place"),
                error(Some(2), Some(5), "a", "early"),
            ]);
        assert_eq!(
            errors.to_string(),
            "c.yaml:2:5: warning: a: early\n\
             c.yaml:9:1: b: an error\n\
             c.yaml:9:1: warning: b: same place\n\
             c.yaml:12:3: warning: c: late"
        );
    }
}
