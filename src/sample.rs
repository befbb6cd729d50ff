//! A sample: one decoded reading of one point, the filter that decides which readings are
//! published, and the sink they are handed to.
//!
//! Samples are produced by the Modbus pollers and consumed by the [`crate::queue`]. A sample's
//! `seq` is not part of it: the queue assigns it at commit (it is the SQLite row id). The
//! pollers push into a [`SampleSink`] without knowing what is behind it: the queue implements it,
//! and so does the gateway's sink ([`crate::app::GatewaySink`]: a live copy to the on-site broker,
//! then the queue), so the stages upstream of the queue never import it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{PublishMode, Qos, Reporting};

/// A decoded, scaled value as it appears in the JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    /// Integer types with `scale == 1` and `offset == 0` stay integers on the wire.
    Int(i64),
    /// A `u64` above `i64::MAX` (an unscaled u64 counter near wrap-around); smaller ones are
    /// [`Value::Int`], so one number has one representation.
    UInt(u64),
    /// Always finite: a non-finite reading is a decode error, never a sample.
    Float(f64),
    /// A `string` point (ASCII from registers, or a serial_line capture). Shared: a poll
    /// produces the same text again and again, and samples are cloned into filters and queues.
    Str(Arc<str>),
}

impl Value {
    /// Numeric view for deadband comparison; `true` is 1. `None` for a string.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Str(_) => None,
        }
    }

    /// An unsigned integer as the variant that represents it ([`Value::Int`] when it fits).
    pub fn from_u64(v: u64) -> Value {
        i64::try_from(v).map_or(Value::UInt(v), Value::Int)
    }

    /// The JSON text of the value (`true`, `42`, `21.5`, `"ABC"`).
    pub fn to_json(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "null".to_owned()),
            Value::Str(s) => serde_json::Value::String(s.to_string()).to_string(),
        }
    }

    /// JSON text → [`Value`]: `true`/`false` → Bool, an integer literal that fits i64 → Int, one
    /// that fits only u64 → UInt, any other finite number → Float, a string → Str. `None` for
    /// anything else (null, arrays, objects, non-finite, garbage).
    ///
    /// serde_json only validates the grammar: its default float parser is not correctly rounded
    /// (`-994454210602.4725` came back as `…4724`), so the float itself is parsed by `str::parse`,
    /// which is, and round-trips the shortest representation `Value::to_json` writes.
    pub fn from_json(text: &str) -> Option<Value> {
        match serde_json::from_str::<serde_json::Value>(text).ok()? {
            serde_json::Value::Bool(b) => Some(Value::Bool(b)),
            serde_json::Value::String(s) => Some(Value::Str(Arc::from(s))),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if !n.is_f64() => Some(Value::Int(i)),
                (None, Some(u)) if !n.is_f64() => Some(Value::UInt(u)),
                _ => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float),
            },
            _ => None,
        }
    }
}

/// One reading of one point, ready to be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Shared with every sample of the device: a poll produces many samples and the names never
    /// change, so they are reference counted rather than copied.
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub value: Value,
    /// Sample time, milliseconds since the Unix epoch (wall clock at the end of the read).
    pub ts_ms: i64,
    pub qos: Qos,
    pub retain: bool,
}

/// Where a producer (a bus owner, a serial line) delivers its samples. A push waits when the sink
/// applies backpressure (the queue's writer falling behind) and never fails: what cannot be
/// taken is the sink's to count and log.
pub trait SampleSink: Send + Sync + 'static {
    fn push(&self, sample: Sample) -> impl Future<Output = ()> + Send;
}

/// Samples with the time they were pushed, for tests and benchmarks that watch a producer.
impl SampleSink for mpsc::UnboundedSender<(Instant, Sample)> {
    async fn push(&self, sample: Sample) {
        let _ = self.send((Instant::now(), sample));
    }
}

/// Drops every sample (a probe reads points without publishing them).
pub struct Discard;

impl SampleSink for Discard {
    async fn push(&self, _sample: Sample) {}
}

/// Decides per point whether a new reading is published (contract: `publish`, `deadband`,
/// `max_silence`; the first reading after start is always published).
///
/// Pure: the caller passes the monotonic time of the reading, so heartbeats are tested without
/// a clock.
#[derive(Debug, Clone)]
pub struct ChangeFilter {
    reporting: Reporting,
    /// The last published value and when it was published.
    last_published: Option<(Value, Instant)>,
}

impl ChangeFilter {
    pub fn new(reporting: Reporting) -> Self {
        ChangeFilter {
            reporting,
            last_published: None,
        }
    }

    /// Returns whether `value`, read at `now`, is to be published, and records it as published
    /// if so.
    pub fn admit(&mut self, value: Value, now: Instant) -> bool {
        let publish = match (self.reporting.publish, &self.last_published) {
            (_, None) | (PublishMode::EveryPoll, _) => true,
            (PublishMode::OnChange, Some((last, at))) => {
                changed(last, &value, self.reporting.deadband)
                    || self
                        .reporting
                        .max_silence
                        .is_some_and(|silence| now.saturating_duration_since(*at) >= silence)
            }
        };
        if publish {
            self.last_published = Some((value, now));
        }
        publish
    }
}

/// Whether `new` differs from `last` enough to publish: bools and strings on any change,
/// numbers when they moved by more than `deadband`.
fn changed(last: &Value, new: &Value, deadband: f64) -> bool {
    match (last.as_f64(), new.as_f64()) {
        (Some(a), Some(b)) if !matches!((last, new), (Value::Bool(_), Value::Bool(_))) => {
            (b - a).abs() > deadband
        }
        _ => last != new,
    }
}

/// Wall-clock milliseconds since the Unix epoch; 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn filter(publish: PublishMode, deadband: f64) -> ChangeFilter {
        ChangeFilter::new(Reporting {
            publish,
            deadband,
            max_silence: None,
        })
    }

    fn at(ms: u64) -> Instant {
        // A fixed origin: only differences matter to the filter.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn first_reading_is_always_published() {
        let mut f = filter(PublishMode::OnChange, 100.0);
        assert!(f.admit(Value::Float(1.0), at(0)));
    }

    #[test]
    fn on_change_respects_deadband_against_last_published() {
        let mut f = filter(PublishMode::OnChange, 0.5);
        assert!(f.admit(Value::Float(10.0), at(0)));
        assert!(!f.admit(Value::Float(10.4), at(1)));
        // Drift is measured from the last *published* value, so slow creep is still reported.
        assert!(f.admit(Value::Float(10.6), at(2)));
        assert!(!f.admit(Value::Float(10.6), at(3)));
    }

    #[test]
    fn on_change_bool_and_string_publish_every_change() {
        let mut f = filter(PublishMode::OnChange, 5.0);
        assert!(f.admit(Value::Bool(false), at(0)));
        assert!(!f.admit(Value::Bool(false), at(1)));
        assert!(f.admit(Value::Bool(true), at(2)));
        let mut f = filter(PublishMode::OnChange, 5.0);
        assert!(f.admit(Value::Str("OK".into()), at(0)));
        assert!(!f.admit(Value::Str("OK".into()), at(1)));
        assert!(f.admit(Value::Str("FAULT".into()), at(2)));
    }

    #[test]
    fn every_poll_publishes_repeats() {
        let mut f = filter(PublishMode::EveryPoll, 0.0);
        assert!(f.admit(Value::Int(3), at(0)));
        assert!(f.admit(Value::Int(3), at(1)));
    }

    #[test]
    fn max_silence_republishes_an_unchanged_value() {
        let mut f = ChangeFilter::new(Reporting {
            publish: PublishMode::OnChange,
            deadband: 1.0,
            max_silence: Some(Duration::from_secs(10)),
        });
        assert!(f.admit(Value::Float(5.0), at(0)));
        assert!(!f.admit(Value::Float(5.5), at(9_999)));
        // Heartbeat: unchanged, but silent for max_silence.
        assert!(f.admit(Value::Float(5.5), at(10_000)));
        // The heartbeat counts as published: the next one is due 10 s later, and the deadband
        // is measured from the heartbeat's value.
        assert!(!f.admit(Value::Float(6.4), at(15_000)));
        assert!(f.admit(Value::Float(6.6), at(16_000)));
        assert!(!f.admit(Value::Float(6.6), at(25_999)));
        assert!(f.admit(Value::Float(6.6), at(26_000)));
    }

    #[test]
    fn value_codec_round_trips() {
        for v in [
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::UInt(i64::MAX as u64 + 1),
            Value::Float(1.0),
            Value::Float(-0.5),
            Value::Float(1e300),
            Value::Float(f64::MIN_POSITIVE),
            // Found by the model test: serde_json's fast float parser is off by one ulp here.
            Value::Float(-994454210602.4725),
            Value::Float(0.1 + 0.2),
            Value::Str("".into()),
            Value::Str("MODEL-7 \"x\"\n\u{1}".into()),
        ] {
            assert_eq!(Value::from_json(&v.to_json()), Some(v.clone()), "{v:?}");
        }
    }

    #[test]
    fn value_codec_classifies_literals() {
        assert_eq!(Value::from_json("42"), Some(Value::Int(42)));
        assert_eq!(Value::from_json("42.0"), Some(Value::Float(42.0)));
        assert_eq!(Value::from_json("4e2"), Some(Value::Float(400.0)));
        assert_eq!(
            Value::from_json("18446744073709551615"),
            Some(Value::UInt(u64::MAX))
        );
        // Too big for u64: still a number, so a float.
        assert_eq!(
            Value::from_json("18446744073709551616"),
            Some(Value::Float(18446744073709551616.0))
        );
        assert_eq!(Value::from_json("\"x\""), Some(Value::Str("x".into())));
        assert_eq!(Value::from_json("null"), None);
        assert_eq!(Value::from_json("[1]"), None);
        assert_eq!(Value::from_json("NaN"), None);
        assert_eq!(Value::from_json(""), None);
        assert_eq!(Value::from_u64(7), Value::Int(7));
        assert_eq!(Value::from_u64(u64::MAX), Value::UInt(u64::MAX));
    }

    #[test]
    fn json_of_values() {
        assert_eq!(Value::Bool(true).to_json(), "true");
        assert_eq!(Value::Int(-7).to_json(), "-7");
        assert_eq!(Value::Float(21.5).to_json(), "21.5");
        assert_eq!(Value::Str("a\"b".into()).to_json(), r#""a\"b""#);
    }
}
