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
//! matching lines arrive; it goes offline when none arrived for `poll_interval + timeout`
//! (counted as a timeout, once per such period; garbage does not keep it online).
//!
//! Ports are handled as an `rtu` link handles them (see [`super::link`]): silence keeps the
//! port (an instrument that stops talking is not a broken adapter), an i/o error or end of
//! stream on the port (an unplugged USB adapter) closes it, and it is opened again after the
//! device's backoff; a port that cannot be opened is a counted error, retried with backoff,
//! never given up on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bus::DeviceView;
use super::counters::{DeviceCounters, DeviceHealth};
use super::decode::{DecodeError, Scaling};
use super::device::PointTable;
use super::link::{Opener, SerialOpener};
use crate::backoff::Backoff;
use crate::config::{BusConfig, BusKind, DataType, DeviceConfig, PointSource};
use crate::sample::SampleSink;
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
    points: Vec<(usize, regex::Regex, DataType, Scaling)>,
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
                        Some((i, pattern.0.clone(), p.data_type, Scaling::of(p)))
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
            .filter_map(|(i, regex, data_type, scaling)| {
                let captures = regex.captures(line)?;
                let text = captures.get(1).map_or("", |m| m.as_str());
                Some((*i, parse(text, *data_type, *scaling)))
            })
            .collect()
    }
}

/// Parses a capture as `data_type`, scaled (and rounded) like a register value.
pub fn parse(text: &str, data_type: DataType, scaling: Scaling) -> Result<Value, ParseError> {
    let trimmed = text.trim();
    let fail = |expected| ParseError {
        text: text.to_owned(),
        expected,
    };
    let finite = |result: Result<Value, DecodeError>| result.map_err(|_| fail("finite number"));
    match data_type {
        DataType::String { .. } => Ok(Value::Str(Arc::from(text))),
        DataType::F32 | DataType::F64 => {
            let v: f64 = trimmed.parse().map_err(|_| fail("number"))?;
            finite(scaling.apply_float(v))
        }
        DataType::U64 => {
            let v: u64 = trimmed
                .strip_prefix('+')
                .unwrap_or(trimmed)
                .parse()
                .map_err(|_| fail("integer"))?;
            finite(scaling.apply_u64(v))
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
            finite(scaling.apply_int(v))
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
    let BusKind::SerialLine { serial, .. } = &bus.kind else {
        return;
    };
    let port = SerialOpener(serial.clone());
    run_on(port, bus, device, counters, health, sink, cancel).await;
}

/// [`run`] on the ports `port` opens. The one seam of this task: production passes the bus's
/// serial port, tests an in-memory stream, so the poll, silence and reopen timers can be
/// tested on paused time.
pub(crate) async fn run_on<O: Opener, S: SampleSink>(
    mut port: O,
    bus: BusConfig,
    device: DeviceConfig,
    counters: Arc<DeviceCounters>,
    health: watch::Sender<DeviceHealth>,
    sink: S,
    cancel: CancellationToken,
) {
    let BusKind::SerialLine { line, .. } = &bus.kind else {
        return;
    };
    let mut backoff = Backoff::new(device.poll_interval, device.backoff_max);
    let mut table = PointTable::new(&device);
    let matcher = LineMatcher::new(&device);
    let silence_limit = device.poll_interval + bus.timeout;
    let set_health = |online: bool, error: Option<String>| {
        update_health(&health, &device.name, online, error);
    };
    loop {
        let mut port = match port.open().await {
            Ok(port) => port,
            Err(error) => {
                DeviceCounters::bump(&counters.errors);
                set_health(false, Some(error.to_string()));
                if pause(&mut backoff, Duration::ZERO, &cancel).await {
                    continue;
                }
                return;
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
                        Ok(0) => {
                            DeviceCounters::bump(&counters.errors);
                            set_health(false, Some("the port was closed".to_owned()));
                            break;
                        }
                        Err(error) => {
                            DeviceCounters::bump(&counters.errors);
                            set_health(false, Some(format!("read failed: {error}")));
                            break;
                        }
                        Ok(n) => n,
                    };
                    for piece in splitter.push(&chunk[..n]) {
                        let Piece::Line(text) = piece else {
                            DeviceCounters::bump(&counters.garbage_lines);
                            continue;
                        };
                        let taken = take_line(
                            &text, &matcher, &mut table, &sink, &counters, &device.name, &cancel,
                        );
                        let Some(good) = taken.await else {
                            return;
                        };
                        if good {
                            last_match = Instant::now();
                            backoff.reset();
                            counters.last_success_ms.store(now_ms(), Ordering::Relaxed);
                            set_health(true, None);
                        }
                    }
                }
            }
        }
        // The port failed: reopen after a pause (a USB adapter being replugged).
        if !pause(&mut backoff, Duration::from_millis(100), &cancel).await {
            return;
        }
    }
}

/// Waits the backoff's next jittered delay (at least `floor`) before the port is opened again;
/// `false` if `cancel` fired first.
async fn pause(backoff: &mut Backoff, floor: Duration, cancel: &CancellationToken) -> bool {
    let delay = backoff.next_delay_with(0.5 + 0.5 * fastrand::f64());
    tokio::select! {
        () = tokio::time::sleep(delay.max(floor)) => true,
        () = cancel.cancelled() => false,
    }
}

/// Records whether the instrument sends (`online`) and why not, notifying the health watchers
/// when the state or the failure count moved.
fn update_health(
    health: &watch::Sender<DeviceHealth>,
    device: &str,
    online: bool,
    error: Option<String>,
) {
    health.send_if_modified(|h| {
        let changed = h.online != online;
        // Every failure moves the count (the status publisher's offline_after) and the first
        // good line marks the instrument as answered: both notify the watchers.
        let notify = changed || !online || !h.answered;
        if changed && online {
            info!(device = %device, "instrument sends again");
        } else if changed {
            warn!(device = %device, error = ?error, "instrument silent");
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
}

/// Pushes the samples of one received line: whether any capture of it parsed (a line with none
/// is counted as garbage), or `None` if `cancel` fired while the sink was full.
async fn take_line<S: SampleSink>(
    text: &str,
    matcher: &LineMatcher,
    table: &mut PointTable,
    sink: &S,
    counters: &DeviceCounters,
    device: &str,
    cancel: &CancellationToken,
) -> Option<bool> {
    let mut good = false;
    for (index, value) in matcher.matches(text) {
        match value {
            Ok(value) => {
                good = true;
                if let Some(sample) = table.admit(index, value, now_ms(), Instant::now()) {
                    tokio::select! {
                        () = sink.push(sample) => {}
                        () = cancel.cancelled() => return None,
                    }
                }
            }
            Err(error) => {
                DeviceCounters::bump(&counters.decode_errors);
                debug!(device = %device, %error, "unparsable capture");
            }
        }
    }
    if !good {
        DeviceCounters::bump(&counters.garbage_lines);
        debug!(device = %device, line = %text.escape_debug(), "garbage line");
    }
    Some(good)
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
            parse(" 12.5", DataType::F64, Scaling::IDENTITY),
            Ok(Value::Float(12.5))
        );
        assert_eq!(
            parse("+42", DataType::I32, Scaling::IDENTITY),
            Ok(Value::Int(42))
        );
        assert_eq!(
            parse("42", DataType::U16, Scaling::linear(0.5, 1.0)),
            Ok(Value::Float(22.0))
        );
        assert_eq!(
            parse("OK", DataType::String { length: 0 }, Scaling::IDENTITY),
            Ok(Value::Str("OK".into()))
        );
        assert!(parse("70000", DataType::U16, Scaling::IDENTITY).is_err());
        assert!(parse("1.5", DataType::I64, Scaling::IDENTITY).is_err());
        assert!(parse("NaN", DataType::F64, Scaling::IDENTITY).is_err());
        assert!(parse("inf", DataType::F64, Scaling::IDENTITY).is_err());
    }

    mod timers {
        //! The task's timers on paused time, over in-memory ports ([`Plugs`]).
        use super::*;
        use crate::config::{
            LinePattern, LineSettings, Parity, PointConfig, SerialSettings, StopBits, Table,
        };
        use crate::modbus::link::Plugs;
        use crate::sample::Sample;
        use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};
        use tokio::sync::mpsc;

        const POLL: Duration = Duration::from_secs(1);
        const TIMEOUT: Duration = Duration::from_millis(500);

        fn line_bus(poll: Option<&[u8]>) -> BusConfig {
            BusConfig {
                name: "line".into(),
                kind: BusKind::SerialLine {
                    serial: SerialSettings {
                        port: "mem".into(),
                        baud_rate: 9600,
                        parity: Parity::None,
                        data_bits: 8,
                        stop_bits: StopBits::One,
                    },
                    line: LineSettings {
                        terminator: b"\n".to_vec(),
                        poll: poll.map(<[u8]>::to_vec),
                    },
                },
                timeout: TIMEOUT,
                turnaround_delay: Duration::ZERO,
            }
        }

        fn scale() -> DeviceConfig {
            let weight = PointConfig {
                source: PointSource::Line(LinePattern(regex::Regex::new(r"^W=(\d+)").unwrap())),
                ..crate::modbus::fixtures::point("w", Table::Holding, 0, DataType::I32)
            };
            DeviceConfig {
                bus: "line".into(),
                poll_interval: POLL,
                backoff_max: Duration::from_secs(4),
                ..crate::modbus::fixtures::device("scale", 1, vec![weight])
            }
        }

        struct Running {
            health: watch::Receiver<DeviceHealth>,
            counters: Arc<DeviceCounters>,
            samples: mpsc::UnboundedReceiver<(Instant, Sample)>,
            cancel: CancellationToken,
        }

        fn spawn(plugs: &Plugs, poll: Option<&[u8]>) -> Running {
            let device = scale();
            let (view, health) = view(&device);
            let (tx, samples) = mpsc::unbounded_channel();
            let cancel = CancellationToken::new();
            tokio::spawn(run_on(
                plugs.clone(),
                line_bus(poll),
                device,
                view.counters.clone(),
                health,
                tx,
                cancel.clone(),
            ));
            Running {
                health: view.health,
                counters: view.counters,
                samples,
                cancel,
            }
        }

        fn within(got: Duration, low: Duration, high: Duration) -> bool {
            got >= low && got <= high
        }

        /// The poll string goes out at once and then every `poll_interval`, on a fixed rate.
        #[tokio::test(start_paused = true)]
        async fn the_poll_string_is_written_every_poll_interval() {
            let plugs = Plugs::default();
            let (near, far) = tokio::io::duplex(1024);
            plugs.plug(near);
            let start = Instant::now();
            let mut running = spawn(&plugs, Some(b"P\n"));
            // The instrument answers every poll with the count of polls so far.
            let (read, mut write) = tokio::io::split(far);
            let (polled, mut polls) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut lines = BufReader::new(read).lines();
                let mut n = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    assert_eq!(line, "P");
                    n += 1;
                    let _ = polled.send(Instant::now());
                    if write
                        .write_all(format!("W={n}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            for n in 0..5u32 {
                let at = polls.recv().await.unwrap();
                assert_eq!(at - start, POLL * n, "poll {n}");
                let (_, sample) = running.samples.recv().await.unwrap();
                assert_eq!(sample.value, Value::Int(i64::from(n) + 1));
            }
            let counters = running.counters.snapshot();
            assert_eq!((counters.requests, counters.timeouts), (5, 0));
            assert!(running.health.borrow().online);
            running.cancel.cancel();
        }

        /// No matching line for `poll_interval + timeout` marks the instrument offline (once
        /// per such period, counted as a timeout); garbage does not keep it online, the port is
        /// kept, and the next good line brings it back.
        #[tokio::test(start_paused = true)]
        async fn silence_beyond_the_limit_marks_the_instrument_offline() {
            let plugs = Plugs::default();
            let (near, mut far) = tokio::io::duplex(1024);
            plugs.plug(near);
            far.write_all(b"W=7\n").await.unwrap();
            let start = Instant::now();
            let mut running = spawn(&plugs, None);
            let (_, sample) = running.samples.recv().await.unwrap();
            assert_eq!(sample.value, Value::Int(7));
            tokio::time::sleep(POLL).await;
            far.write_all(b"junk\n").await.unwrap();
            let limit = POLL + TIMEOUT;
            running.health.wait_for(|h| !h.online).await.unwrap();
            assert_eq!(start.elapsed(), limit);
            assert_eq!(
                running.health.borrow().last_error.as_deref(),
                Some("no matching line for 1.5s")
            );
            let counters = running.counters.snapshot();
            assert_eq!((counters.timeouts, counters.garbage_lines), (1, 1));
            running
                .health
                .wait_for(|h| h.consecutive_failures == 2)
                .await
                .unwrap();
            assert_eq!(start.elapsed(), limit * 2);
            assert_eq!(running.counters.snapshot().timeouts, 2);

            far.write_all(b"W=8\n").await.unwrap();
            running.health.wait_for(|h| h.online).await.unwrap();
            let (_, sample) = running.samples.recv().await.unwrap();
            assert_eq!(sample.value, Value::Int(8));
            assert_eq!(plugs.opens().len(), 1, "silence keeps the port");
            running.cancel.cancel();
        }

        /// An unplugged adapter: opening fails at backoff pace (1, 2, 4, 4 s ceilings with
        /// jitter in [½, 1]), each a counted error; once plugged the instrument is read, and
        /// when the port then breaks (end of stream) it is reopened after the reset backoff.
        #[tokio::test(start_paused = true)]
        async fn a_missing_port_is_retried_with_backoff_and_a_broken_one_reopened() {
            let plugs = Plugs::default();
            let mut running = spawn(&plugs, None);
            running
                .health
                .wait_for(|h| h.consecutive_failures >= 5)
                .await
                .unwrap();
            let opens = plugs.opens();
            assert_eq!(opens.len(), 5);
            for (gap, ceiling) in opens.windows(2).map(|w| w[1] - w[0]).zip([1, 2, 4, 4]) {
                let ceiling = Duration::from_secs(ceiling);
                assert!(within(gap, ceiling / 2, ceiling), "{gap:?} for {ceiling:?}");
            }
            assert_eq!(running.counters.snapshot().errors, 5);
            let last_error = running
                .health
                .borrow()
                .last_error
                .clone()
                .unwrap_or_default();
            assert!(
                last_error.starts_with("cannot open serial port"),
                "{last_error}"
            );

            // Plugged in: read at the next attempt.
            let (near, mut far): (DuplexStream, DuplexStream) = tokio::io::duplex(1024);
            far.write_all(b"W=1\n").await.unwrap();
            plugs.plug(near);
            let (_, sample) = running.samples.recv().await.unwrap();
            assert_eq!(sample.value, Value::Int(1));
            assert!(running.health.borrow().online);

            // Unplugged again: the read ends, the port is dropped and opened again after the
            // backoff, which the good line reset (ceiling one poll interval).
            drop(far);
            running.health.wait_for(|h| !h.online).await.unwrap();
            let broke = Instant::now();
            assert_eq!(
                running.health.borrow().last_error.as_deref(),
                Some("the port was closed")
            );
            running
                .health
                .wait_for(|h| h.consecutive_failures >= 2)
                .await
                .unwrap();
            let reopened = *plugs.opens().last().unwrap();
            assert!(
                within(reopened - broke, POLL / 2, POLL),
                "{:?}",
                reopened - broke
            );
            assert_eq!(plugs.opens().len(), 7);
            assert_eq!(running.counters.snapshot().errors, 7);
            running.cancel.cancel();
        }
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
