//! The console's log page: the last [`LINES`] log lines at info and above, kept by a
//! `tracing` layer in a ring.
//!
//! The layer is installed with the process's logging (`main.rs`) and stays inert — one atomic
//! load per event — until a console starts ([`enable`]). It sees what the journal sees
//! (`RUST_LOG` filters both), keeps `info`, `warn` and `error`, and cuts a line at
//! [`LINE_MAX`] bytes, so the ring never holds more than about 120 KiB. The lock is taken once
//! per kept event and by a page reading the ring; logging is not on any per-sample path.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::sample::now_ms;

/// Lines kept.
pub const LINES: usize = 300;
/// Longest line kept, in bytes (longer ones are cut, marked with `…`).
pub const LINE_MAX: usize = 400;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Counts every line kept since start: a page asks for the lines after the last it has.
    pub seq: u64,
    pub ts_ms: i64,
    pub level: Level,
    /// The module that logged (`fieldrelay::uplink::link`).
    pub target: String,
    /// The message and its fields, `key=value` after the message.
    pub text: String,
}

struct Ring {
    lines: VecDeque<LogLine>,
    next_seq: u64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static RING: Mutex<Ring> = Mutex::new(Ring {
    lines: VecDeque::new(),
    next_seq: 1,
});

/// Starts keeping lines (a console was started).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The kept lines after `seq`, oldest first.
pub fn lines_after(seq: u64) -> Vec<LogLine> {
    let ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
    ring.lines
        .iter()
        .filter(|line| line.seq > seq)
        .cloned()
        .collect()
}

/// Keeps `line` (a test can feed the ring without a subscriber).
fn keep(ts_ms: i64, level: Level, target: &str, mut text: String) {
    if text.len() > LINE_MAX {
        let mut cut = LINE_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    let mut ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
    let seq = ring.next_seq;
    ring.next_seq += 1;
    if ring.lines.len() == LINES {
        ring.lines.pop_front();
    }
    ring.lines.push_back(LogLine {
        seq,
        ts_ms,
        level,
        target: target.to_owned(),
        text,
    });
}

/// The layer for the process's subscriber.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogLayer;

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let metadata = event.metadata();
        if *metadata.level() > Level::INFO {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        keep(
            now_ms(),
            *metadata.level(),
            metadata.target(),
            text.finish(),
        );
    }
}

/// The message first, then the other fields as `key=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(mut self) -> String {
        if !self.fields.is_empty() {
            if !self.message.is_empty() {
                self.message.push(' ');
            }
            self.message.push_str(&self.fields);
        }
        self.message
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if self.fields.len() <= LINE_MAX {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Through a real subscriber: info and above, message then fields, cut at LINE_MAX, the
    /// newest LINES kept. (One test: the ring is the process's.)
    #[test]
    fn keeps_the_newest_info_lines() {
        let subscriber = tracing_subscriber::registry().with(LogLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before enabling: not kept");
            enable();
            let start = lines_after(0).last().map_or(0, |l| l.seq);
            tracing::debug!("debug: not kept");
            tracing::warn!(device = "boiler", error = %"timed out", "device status: offline");
            tracing::info!("{}", "x".repeat(LINE_MAX * 2));
            let lines = lines_after(start);
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert_eq!(lines[0].level, Level::WARN);
            assert_eq!(
                lines[0].text,
                "device status: offline device=\"boiler\" error=timed out"
            );
            assert!(lines[0].target.contains("console::log"));
            assert_eq!(lines[1].text.len(), LINE_MAX + '…'.len_utf8());
            for i in 0..LINES + 5 {
                tracing::error!(i, "flood");
            }
            let all = lines_after(0);
            assert_eq!(all.len(), LINES);
            assert_eq!(all.last().map(|l| l.text.as_str()), Some("flood i=304"));
        });
    }
}
