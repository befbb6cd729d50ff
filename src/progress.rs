//! A progress bar for long work a person waits on (`fieldrelay probe` of a large map,
//! `fieldrelay queue export`): drawn on stderr when stderr is a terminal, silent otherwise, so
//! piped or logged output (`probe > table.txt`, systemd, CI) never gets control characters.
//!
//! Hand-written rather than a crate: one line redrawn with `\r`, at most every
//! [`REDRAW_EVERY`]; [`render`] is pure and tested, and `tests/queue_tools.rs` runs an export
//! under a pseudo-terminal to see the bar drawn and erased.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::time::Instant;

/// Slowest useful redraw rate: smooth to the eye, negligible cost over a slow terminal link.
pub const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Characters of the bar itself.
const BAR_WIDTH: usize = 30;
/// Longest note shown after the counts, so the line stays on one 80-column row.
const NOTE_WIDTH: usize = 24;

/// The progress line for `done` of `total` `what`, with a `note` (what is being worked on).
pub fn render(done: u64, total: u64, what: &str, note: &str) -> String {
    let done = done.min(total);
    // Nothing to do counts as all done.
    let filled = done
        .saturating_mul(BAR_WIDTH as u64)
        .checked_div(total)
        .map_or(BAR_WIDTH, |f| usize::try_from(f).unwrap_or(BAR_WIDTH));
    let note: String = if note.chars().count() > NOTE_WIDTH {
        let mut short: String = note.chars().take(NOTE_WIDTH - 1).collect();
        short.push('…');
        short
    } else {
        note.to_owned()
    };
    format!(
        "[{}{}] {done}/{total} {what} {note}",
        "#".repeat(filled),
        " ".repeat(BAR_WIDTH - filled)
    )
    .trim_end()
    .to_owned()
}

/// Whether to draw: a terminal gets the bar, anything else nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Redraw one line on stderr.
    Terminal,
    /// Draw nothing (stderr is a file, a pipe or the journal).
    Hidden,
}

impl Display {
    /// [`Display::Terminal`] if stderr is a terminal.
    pub fn detect() -> Display {
        if std::io::stderr().is_terminal() {
            Display::Terminal
        } else {
            Display::Hidden
        }
    }
}

/// Counts work done and redraws the bar.
#[derive(Debug)]
pub struct Progress {
    display: Display,
    what: &'static str,
    total: u64,
    done: u64,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(display: Display, what: &'static str, total: u64) -> Progress {
        Progress {
            display,
            what,
            total,
            done: 0,
            last_draw: None,
        }
    }

    /// Work started on `note`: draws the bar without counting.
    pub fn working_on(&mut self, note: &str) {
        self.draw(note, false);
    }

    /// `n` more units done.
    pub fn advance(&mut self, n: u64, note: &str) {
        self.done = self.done.saturating_add(n);
        let last = self.done >= self.total;
        self.draw(note, last);
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Removes the bar, so what follows starts on a clean line.
    pub fn finish(&mut self) {
        if self.display == Display::Terminal && self.last_draw.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            // Carriage return, erase the line.
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }

    fn draw(&mut self, note: &str, force: bool) {
        if self.display == Display::Hidden {
            return;
        }
        let now = Instant::now();
        if !force && self.last_draw.is_some_and(|at| now - at < REDRAW_EVERY) {
            return;
        }
        self.last_draw = Some(now);
        let line = render(self.done, self.total, self.what, note);
        let mut stderr = std::io::stderr().lock();
        // A terminal that went away is no reason to stop the work.
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bar_proportional_to_the_work_done() {
        assert_eq!(
            render(0, 200, "points", "boiler"),
            "[                              ] 0/200 points boiler"
        );
        assert_eq!(
            render(100, 200, "points", ""),
            "[###############               ] 100/200 points"
        );
        assert_eq!(
            render(250, 200, "points", "x"),
            "[##############################] 200/200 points x"
        );
        assert_eq!(
            render(0, 0, "rows", ""),
            "[##############################] 0/0 rows"
        );
    }

    #[test]
    fn long_notes_are_cut() {
        let line = render(1, 2, "points", "a-device-with-a-very-long-name-indeed");
        assert!(line.ends_with(" a-device-with-a-very-lo…"), "{line}");
    }

    #[test]
    fn hidden_progress_counts_without_drawing() {
        let mut progress = Progress::new(Display::Hidden, "points", 10);
        progress.advance(4, "a");
        progress.advance(6, "b");
        assert_eq!(progress.done(), 10);
        assert!(progress.last_draw.is_none());
    }
}
