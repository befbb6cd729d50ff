//! `serial_line` buses: ASCII instruments (scales, gas analysers, flow computers) that send text
//! lines over RS-232/485 instead of Modbus frames.
//!
//! Pure parts: [`LineSplitter`] cuts the byte stream into lines at the bus's terminator, and
//! [`LineMatcher`] applies every point's regex to a line and parses the first capture group as
//! the point's type (integer types as integers, `f32`/`f64` as numbers, `string` as text).
//!
//! The task ([`run`]) owns the port: it writes the bus's `poll` string every `poll_interval`
//! (when set) and reads lines as they come. **Garbage is counted, never fatal**: a line no regex
//! matches, a capture that does not parse, invalid UTF-8 and an over-long line without a
//! terminator each add one to `garbage_lines` and are dropped. The device is online while
//! matching lines arrive; it goes offline when none arrived for `poll_interval + timeout`. A
//! port that cannot be opened (unplugged USB adapter) is retried with backoff, never given up
//! on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::{DeviceView, SampleSink};
use super::counters::{DeviceCounters, DeviceHealth};
use super::device::PointTable;
use super::link::open_serial;
use crate::backoff::Backoff;
use crate::config::{BusConfig, BusKind, DataType, DeviceConfig, PointSource};
use crate::sample::{now_ms, Value};

/// A line longer than this without a terminator is garbage (a wrong terminator setting, or a
/// binary device on the port); it is dropped so memory stays bounded.
pub const MAX_LINE: usize = 4096;

/// Cuts a byte stream into lines.
#[derive(Debug)]
pub struct LineSplitter {
    terminator: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes of an over-long line are being skipped until the next terminator.
    skipping: bool,
}

/// What the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Line(String),
    /// A line that was not UTF-8 or longer than [`MAX_LINE`].
    Garbage,
}

impl LineSplitter {
    pub fn new(terminator: &[u8]) -> Self {
        LineSplitter {
            terminator: terminator.to_vec(),
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Feeds received bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        self.buf.extend_from_slice(bytes);
        let t = self.terminator.len().max(1);
        while let Some(end) = self
            .buf
            .windows(t)
            .position(|window| window == self.terminator.as_slice())
        {
            let mut line: Vec<u8> = self.buf.drain(..end + t).take(end).collect();
            if self.skipping {
                self.skipping = false;
                pieces.push(Piece::Garbage);
                continue;
            }
            // With the default "\n", a CR LF instrument needs no setting.
            if self.terminator == b"\n" && line.last() == Some(&b'\r') {
                line.pop();
            }
            pieces.push(match String::from_utf8(line) {
                Ok(line) => Piece::Line(line),
                Err(_) => Piece::Garbage,
            });
        }
        if self.buf.len() > MAX_LINE {
            // Keep the tail that may hold the start of a terminator.
            let keep = self.buf.split_off(self.buf.len() - (t - 1));
            self.buf = keep;
            self.skipping = true;
        }
        pieces
    }
}

/// Applies a device's point regexes to lines.
pub struct LineMatcher {
    points: Vec<(usize, regex::Regex, DataType, f64, f64)>,
}

/// Why a capture was not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture {text:?} is not a {expected}")]
pub struct ParseError {
    pub text: String,
    pub expected: &'static str,
}

impl LineMatcher {
    pub fn new(device: &DeviceConfig) -> Self {
        LineMatcher {
            points: device
                .points
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match &p.source {
                    PointSource::Line(pattern) => {
                        Some((i, pattern.0.clone(), p.data_type, p.scale, p.offset))
                    }
                    PointSource::Modbus(_) => None,
                })
                .collect(),
        }
    }

    /// Every point whose regex matches `line`, with its parsed value or why it did not parse.
    pub fn matches(&self, line: &str) -> Vec<(usize, Result<Value, ParseError>)> {
        self.points
            .iter()
            .filter_map(|(i, regex, data_type, scale, offset)| {
                let captures = regex.captures(line)?;
                let text = captures.get(1).map_or("", |m| m.as_str());
                Some((*i, parse(text, *data_type, *scale, *offset)))
            })
            .collect()
    }
}

/// Parses a capture as `data_type`, scaled like a register value.
pub fn parse(
    text: &str,
    data_type: DataType,
    scale: f64,
    offset: f64,
) -> Result<Value, ParseError> {
    let trimmed = text.trim();
    let identity = scale == 1.0 && offset == 0.0;
    let fail = |expected| ParseError {
        text: text.to_owned(),
        expected,
    };
    let scaled = |v: f64| {
        let v = v * scale + offset;
        if v.is_finite() {
            Ok(Value::Float(v))
        } else {
            Err(fail("finite number"))
        }
    };
    match data_type {
        DataType::String { .. } => Ok(Value::Str(Arc::from(text))),
        DataType::F32 | DataType::F64 => {
            let v: f64 = trimmed.parse().map_err(|_| fail("number"))?;
            if !v.is_finite() {
                return Err(fail("finite number"));
            }
            if identity {
                Ok(Value::Float(v))
            } else {
                scaled(v)
            }
        }
        DataType::U64 => {
            let v: u64 = trimmed
                .strip_prefix('+')
                .unwrap_or(trimmed)
                .parse()
                .map_err(|_| fail("integer"))?;
            if identity {
                Ok(Value::from_u64(v))
            } else {
                scaled(v as f64)
            }
        }
        _ => {
            let v: i64 = trimmed
                .strip_prefix('+')
                .unwrap_or(trimmed)
                .parse()
                .map_err(|_| fail("integer"))?;
            let (lo, hi) = match data_type {
                DataType::U16 => (0, i64::from(u16::MAX)),
                DataType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                DataType::U32 => (0, i64::from(u32::MAX)),
                DataType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if !(lo..=hi).contains(&v) {
                return Err(fail("integer in range"));
            }
            if identity {
                Ok(Value::Int(v))
            } else {
                scaled(v as f64)
            }
        }
    }
}

/// The device view of a serial_line bus (health and counters), before the task runs.
pub fn view(device: &DeviceConfig) -> (DeviceView, watch::Sender<DeviceHealth>) {
    let (health, watcher) = watch::channel(DeviceHealth::default());
    (
        DeviceView {
            config: device.clone(),
            health: watcher,
            counters: Arc::new(DeviceCounters::default()),
        },
        health,
    )
}

/// Reads `device`'s lines from `bus` until `cancel` fires.
pub async fn run<S: SampleSink>(
    bus: BusConfig,
    device: DeviceConfig,
    counters: Arc<DeviceCounters>,
    health: watch::Sender<DeviceHealth>,
    sink: S,
    cancel: CancellationToken,
) {
    let BusKind::SerialLine { serial, line } = &bus.kind else {
        return;
    };
    let mut backoff = Backoff::new(device.poll_interval, device.backoff_max);
    let mut table = PointTable::new(&device);
    let matcher = LineMatcher::new(&device);
    let silence_limit = device.poll_interval + bus.timeout;
    let set_health = |online: bool, error: Option<String>| {
        health.send_if_modified(|h| {
            let changed = h.online != online;
            // Every failure moves the count (the status publisher's offline_after) and the first
            // good line marks the instrument as answered: both notify the watchers.
            let notify = changed || !online || !h.answered;
            if changed && online {
                info!(device = %device.name, "instrument sends again");
            } else if changed {
                warn!(device = %device.name, error = ?error, "instrument silent");
            }
            h.online = online;
            if online {
                h.consecutive_failures = 0;
                h.answered = true;
            } else {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.last_error = error;
            }
            notify
        });
    };
    loop {
        let mut port = match open_serial(serial) {
            Ok(port) => port,
            Err(error) => {
                DeviceCounters::bump(&counters.errors);
                set_health(false, Some(error.to_string()));
                let delay = backoff.next_delay_with(0.5 + 0.5 * fastrand::f64());
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = cancel.cancelled() => return,
                }
            }
        };
        let mut splitter = LineSplitter::new(&line.terminator);
        let mut poll = tokio::time::interval(device.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_match = Instant::now();
        let mut chunk = [0u8; 512];
        loop {
            let silent_at = last_match + silence_limit;
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = poll.tick(), if line.poll.is_some() => {
                    if let Some(text) = &line.poll {
                        DeviceCounters::bump(&counters.requests);
                        if let Err(error) = port.write_all(text).await {
                            DeviceCounters::bump(&counters.errors);
                            set_health(false, Some(format!("write failed: {error}")));
                            break;
                        }
                    }
                }
                () = tokio::time::sleep_until(silent_at) => {
                    DeviceCounters::bump(&counters.timeouts);
                    set_health(false, Some(format!("no matching line for {silence_limit:?}")));
                    last_match = Instant::now();
                }
                read = port.read(&mut chunk) => {
                    let n = match read {
                        Ok(0) | Err(_) => {
                            DeviceCounters::bump(&counters.errors);
                            set_health(false, Some("the port was closed".to_owned()));
                            break;
                        }
                        Ok(n) => n,
                    };
                    for piece in splitter.push(&chunk[..n]) {
                        let Piece::Line(text) = piece else {
                            DeviceCounters::bump(&counters.garbage_lines);
                            continue;
                        };
                        let matched = matcher.matches(&text);
                        let mut good = false;
                        for (index, value) in matched {
                            match value {
                                Ok(value) => {
                                    good = true;
                                    if let Some(sample) = table.admit(index, value, now_ms(), Instant::now()) {
                                        tokio::select! {
                                            () = sink.push(sample) => {}
                                            () = cancel.cancelled() => return,
                                        }
                                    }
                                }
                                Err(error) => {
                                    DeviceCounters::bump(&counters.decode_errors);
                                    debug!(device = %device.name, %error, "unparsable capture");
                                }
                            }
                        }
                        if good {
                            last_match = Instant::now();
                            backoff.reset();
                            counters.last_success_ms.store(now_ms(), Ordering::Relaxed);
                            set_health(true, None);
                        } else {
                            DeviceCounters::bump(&counters.garbage_lines);
                            debug!(device = %device.name, line = %text.escape_debug(), "garbage line");
                        }
                    }
                }
            }
        }
        // The port failed: reopen after a pause (a USB adapter being replugged).
        let delay = backoff.next_delay_with(0.5 + 0.5 * fastrand::f64());
        tokio::select! {
            () = tokio::time::sleep(delay.max(Duration::from_millis(100))) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_lines_and_flags_garbage() {
        let mut s = LineSplitter::new(b"\n");
        assert_eq!(
            s.push(b"W=12.5 kg\r\nW=1"),
            vec![Piece::Line("W=12.5 kg".into())]
        );
        assert_eq!(
            s.push(b"3\n\xff\xfe\n"),
            vec![Piece::Line("W=13".into()), Piece::Garbage]
        );
        let mut s = LineSplitter::new(b"\r\n");
        assert_eq!(s.push(b"a\nb\r\n"), vec![Piece::Line("a\nb".into())]);
        // An endless line is dropped as one piece of garbage; the next line is fine.
        let mut s = LineSplitter::new(b"\n");
        assert!(s.push(&vec![b'x'; MAX_LINE + 10]).is_empty());
        assert_eq!(
            s.push(b"yy\nok\n"),
            vec![Piece::Garbage, Piece::Line("ok".into())]
        );
    }

    #[test]
    fn parses_captures_by_type() {
        assert_eq!(
            parse(" 12.5", DataType::F64, 1.0, 0.0),
            Ok(Value::Float(12.5))
        );
        assert_eq!(parse("+42", DataType::I32, 1.0, 0.0), Ok(Value::Int(42)));
        assert_eq!(parse("42", DataType::U16, 0.5, 1.0), Ok(Value::Float(22.0)));
        assert_eq!(
            parse("OK", DataType::String { length: 0 }, 1.0, 0.0),
            Ok(Value::Str("OK".into()))
        );
        assert!(parse("70000", DataType::U16, 1.0, 0.0).is_err());
        assert!(parse("1.5", DataType::I64, 1.0, 0.0).is_err());
        assert!(parse("NaN", DataType::F64, 1.0, 0.0).is_err());
        assert!(parse("inf", DataType::F64, 1.0, 0.0).is_err());
    }

    proptest! {
        #[test]
        fn splitter_never_panics_and_keeps_memory_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..10),
            crlf in any::<bool>(),
        ) {
            let mut s = LineSplitter::new(if crlf { b"\r\n" } else { b"\n" });
            for chunk in chunks {
                for piece in s.push(&chunk) {
                    if let Piece::Line(line) = piece {
                        prop_assert!(line.len() <= MAX_LINE + 2000);
                    }
                }
                prop_assert!(s.buf.len() <= MAX_LINE);
            }
        }
    }
}
