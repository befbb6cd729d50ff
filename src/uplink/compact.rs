//! The compact batch payload (`uplink.batch: per_device_compact`): a device's samples in one
//! JSON message with point names declared once and `ts`/`seq` written only where they differ
//! from a running default. Pure: rows in, bytes out, and the decoder that inverts it.
//!
//! # Format
//! ```text
//! {"ts":<T>,"seq":<S>,"points":[<name>,…],"samples":[[<i>,<value>],[<i>,<value>,<dts>],[<i>,<value>,<dts>,<dseq>],…]}
//! ```
//! Decoding keeps two running values, `ts = T` and `seq = S`; for each entry in order:
//! `ts += dts` when a third element is present, `seq += dseq` when a fourth is present; the
//! sample is (`points[i]`, `value`, `ts`, `seq`); then `seq += 1`. So `T` and `S` are the first
//! sample's `ts` and `seq`, a sample taken at the same time as the one before it carries no
//! `dts`, and consecutive `seq`s carry no `dseq` (`[i,v,0,dseq]` when only `seq` jumps).
//! `value` is written exactly as in the single-sample payload (number, `true`/`false`, string).
//! `dts` may be negative (a clock step); `dseq` is always ≥ 1 (rows go in increasing `seq`).
//!
//! # Invariants
//! - [`Encoder::len`] is the exact byte length of [`Encoder::finish`] at every step, and
//!   [`Encoder::len_with`] the exact length after one more [`Encoder::push`]: the planner packs
//!   messages with it, so a message never exceeds its limit by an estimate's error.
//! - `decode(encode(rows)) == rows` for any rows in increasing `seq` with `ts` within
//!   ±2^53 ms (numbers every JSON consumer reads exactly).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::sample::Value;

/// One sample as the compact payload carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub point: &'a str,
    pub value: &'a Value,
    pub ts_ms: i64,
    pub seq: u64,
}

/// One decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub point: String,
    pub value: Value,
    pub ts_ms: i64,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("not a JSON object with ts, seq, points and samples: {0}")]
    Shape(String),
    #[error("sample {index}: {reason}")]
    Sample { index: usize, reason: String },
}

/// A compact message being built, rows appended in increasing `seq`.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    /// Point name → its index in `points`.
    names: HashMap<String, usize>,
    /// The declared names, JSON strings joined by commas.
    points: String,
    /// The entries, joined by commas.
    samples: String,
    /// `ts` and `seq` of the first row.
    base: Option<(i64, u64)>,
    /// The running `ts` and the `seq` the next entry has without a `dseq`.
    ts: i64,
    next_seq: u64,
}

/// `{"ts":` … `,"seq":` … `,"points":[` … `],"samples":[` … `]}` without the numbers.
pub const FRAME: usize = r#"{"ts":,"seq":,"points":[],"samples":[]}"#.len();

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_none()
    }

    /// Bytes of [`Encoder::finish`] now.
    pub fn len(&self) -> usize {
        let (ts, seq) = self.base.unwrap_or((0, 0));
        FRAME + digits_i(i128::from(ts)) + digits_u(seq) + self.points.len() + self.samples.len()
    }

    /// Bytes of [`Encoder::finish`] after `push(row)`.
    pub fn len_with(&self, row: &Row) -> usize {
        let (name, entry) = self.pieces(row);
        self.grown(row, name.as_deref(), &entry)
    }

    /// [`Encoder::len_with`] from `row`'s pieces.
    fn grown(&self, row: &Row, name: Option<&str>, entry: &str) -> usize {
        let comma = |part: &str| usize::from(!part.is_empty());
        let mut len = self.len() + entry.len() + comma(&self.samples);
        if let Some(name) = name {
            len += name.len() + comma(&self.points);
        }
        if self.base.is_none() {
            // The frame's numbers become the row's.
            len = len - 2 + digits_i(i128::from(row.ts_ms)) + digits_u(row.seq);
        }
        len
    }

    /// Appends `row` (its `seq` above every row's before it).
    pub fn push(&mut self, row: &Row) {
        let (name, entry) = self.pieces(row);
        self.append(row, name, entry);
    }

    /// Appends `row` if the payload stays within `limit` bytes (what [`Encoder::len_with`]
    /// says, rendering the row once); false, and nothing appended, if it would not.
    pub fn push_within(&mut self, row: &Row, limit: usize) -> bool {
        let (name, entry) = self.pieces(row);
        let fits = self.grown(row, name.as_deref(), &entry) <= limit;
        if fits {
            self.append(row, name, entry);
        }
        fits
    }

    fn append(&mut self, row: &Row, name: Option<String>, entry: String) {
        if let Some(name) = name {
            if !self.points.is_empty() {
                self.points.push(',');
            }
            self.points.push_str(&name);
            self.names.insert(row.point.to_owned(), self.names.len());
        }
        if !self.samples.is_empty() {
            self.samples.push(',');
        }
        self.samples.push_str(&entry);
        self.base.get_or_insert((row.ts_ms, row.seq));
        self.ts = row.ts_ms;
        self.next_seq = row.seq.saturating_add(1);
    }

    /// The payload.
    pub fn finish(&self) -> Vec<u8> {
        let (ts, seq) = self.base.unwrap_or((0, 0));
        let mut out = String::with_capacity(self.len());
        let _ = write!(
            out,
            r#"{{"ts":{ts},"seq":{seq},"points":[{}],"samples":[{}]}}"#,
            self.points, self.samples
        );
        out.into_bytes()
    }

    /// The name to declare (JSON) if `row`'s point is new here, and `row`'s entry.
    fn pieces(&self, row: &Row) -> (Option<String>, String) {
        let (index, name) = match self.names.get(row.point) {
            Some(&index) => (index, None),
            None => (
                self.names.len(),
                Some(serde_json::Value::from(row.point).to_string()),
            ),
        };
        let mut entry = format!("[{index},{}", row.value.to_json());
        if let Some((_, _)) = self.base {
            let dts = i128::from(row.ts_ms) - i128::from(self.ts);
            let dseq = i128::from(row.seq) - i128::from(self.next_seq);
            if dts != 0 || dseq != 0 {
                let _ = write!(entry, ",{dts}");
            }
            if dseq != 0 {
                let _ = write!(entry, ",{dseq}");
            }
        }
        entry.push(']');
        (name, entry)
    }
}

/// The payload of `rows` (in increasing `seq`).
pub fn encode<'a>(rows: impl IntoIterator<Item = Row<'a>>) -> Vec<u8> {
    let mut encoder = Encoder::new();
    for row in rows {
        encoder.push(&row);
    }
    encoder.finish()
}

/// The samples of a compact payload (see the module doc).
pub fn decode(payload: &[u8]) -> Result<Vec<Decoded>, CompactError> {
    let shape = |what: &str| CompactError::Shape(what.to_owned());
    let message: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| CompactError::Shape(e.to_string()))?;
    let mut ts = message["ts"].as_i64().ok_or_else(|| shape("ts"))?;
    let mut seq = message["seq"].as_u64().ok_or_else(|| shape("seq"))?;
    let points = message["points"]
        .as_array()
        .ok_or_else(|| shape("points"))?;
    let samples = message["samples"]
        .as_array()
        .ok_or_else(|| shape("samples"))?;
    let mut out = Vec::with_capacity(samples.len());
    for (index, entry) in samples.iter().enumerate() {
        let bad = |reason: &str| CompactError::Sample {
            index,
            reason: reason.to_owned(),
        };
        let entry = entry.as_array().ok_or_else(|| bad("not an array"))?;
        let point = entry
            .first()
            .and_then(|i| i.as_u64())
            .and_then(|i| points.get(usize::try_from(i).ok()?))
            .and_then(|name| name.as_str())
            .ok_or_else(|| bad("no point at that index"))?;
        let value = entry
            .get(1)
            .and_then(value_of)
            .ok_or_else(|| bad("value"))?;
        if let Some(dts) = entry.get(2) {
            let dts = dts.as_i64().ok_or_else(|| bad("dts"))?;
            ts = ts.checked_add(dts).ok_or_else(|| bad("ts out of range"))?;
        }
        if let Some(dseq) = entry.get(3) {
            let dseq = dseq.as_u64().ok_or_else(|| bad("dseq"))?;
            seq = seq
                .checked_add(dseq)
                .ok_or_else(|| bad("seq out of range"))?;
        }
        if entry.len() > 4 {
            return Err(bad("more than four elements"));
        }
        out.push(Decoded {
            point: point.to_owned(),
            value,
            ts_ms: ts,
            seq,
        });
        seq = seq.saturating_add(1);
    }
    Ok(out)
}

/// A JSON value as a sample's [`Value`] (the rules of [`Value::from_json`]).
fn value_of(json: &serde_json::Value) -> Option<Value> {
    match json {
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::String(s) => Some(Value::Str(s.as_str().into())),
        serde_json::Value::Number(n) if !n.is_f64() => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::UInt)),
        serde_json::Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Value::Float),
        _ => None,
    }
}

fn digits_u(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn digits_i(n: i128) -> usize {
    let magnitude = n.unsigned_abs();
    usize::from(n < 0) + magnitude.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row<'a>(point: &'a str, value: &'a Value, ts_ms: i64, seq: u64) -> Row<'a> {
        Row {
            point,
            value,
            ts_ms,
            seq,
        }
    }

    #[test]
    fn one_poll_is_names_once_and_bare_entries() {
        let (a, b) = (Value::Float(21.5), Value::Int(7));
        let rows = [row("temp", &a, 1000, 41), row("flow", &b, 1000, 42)];
        let payload = encode(rows.clone());
        assert_eq!(
            std::str::from_utf8(&payload).unwrap(),
            r#"{"ts":1000,"seq":41,"points":["temp","flow"],"samples":[[0,21.5],[1,7]]}"#
        );
        let decoded = decode(&payload).unwrap();
        assert_eq!(decoded[1].point, "flow");
        assert_eq!((decoded[1].ts_ms, decoded[1].seq), (1000, 42));
    }

    #[test]
    fn offsets_only_where_ts_or_seq_differ_from_the_running_default() {
        let v = Value::Bool(true);
        let rows = [
            row("a", &v, 1000, 10),
            row("a", &v, 2000, 11),
            row("b", &v, 2000, 15),
            row("a", &v, 1500, 16),
        ];
        let payload = encode(rows);
        assert_eq!(
            std::str::from_utf8(&payload).unwrap(),
            r#"{"ts":1000,"seq":10,"points":["a","b"],"samples":[[0,true],[0,true,1000],[1,true,0,3],[0,true,-500]]}"#
        );
    }

    #[test]
    fn a_lone_sample_is_a_message_of_one() {
        let v = Value::Str("x\"y".into());
        let payload = encode([row("s", &v, -5, 0)]);
        assert_eq!(
            std::str::from_utf8(&payload).unwrap(),
            r#"{"ts":-5,"seq":0,"points":["s"],"samples":[[0,"x\"y"]]}"#
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            &b"[]"[..],
            b"{\"ts\":1,\"seq\":1,\"points\":[],\"samples\":[[0,1]]}",
            b"{\"ts\":1,\"seq\":1,\"points\":[\"a\"],\"samples\":[[0]]}",
            b"{\"ts\":1,\"seq\":1,\"points\":[\"a\"],\"samples\":[[0,1,0,-1]]}",
            b"{\"ts\":1,\"seq\":1,\"points\":[\"a\"],\"samples\":[[0,1,0,1,9]]}",
            b"{\"ts\":9223372036854775807,\"seq\":1,\"points\":[\"a\"],\"samples\":[[0,1,1]]}",
            b"not json",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            "\\PC{0,12}".prop_map(|s| Value::Str(s.as_str().into())),
        ]
    }

    const TS_RANGE: i64 = 1 << 53;

    proptest! {
        #[test]
        fn decode_inverts_encode_and_len_is_exact_at_every_step(
            rows in prop::collection::vec(
                ("\\PC{1,8}|p[0-3]", value(), -TS_RANGE..TS_RANGE, 1u64..1_000_000),
                1..40,
            ),
            first_seq in 0u64..(u64::MAX / 2),
        ) {
            let mut seq = first_seq;
            let owned: Vec<(String, Value, i64, u64)> = rows
                .into_iter()
                .map(|(point, value, ts, gap)| {
                    let this = seq;
                    seq += gap;
                    (point, value, ts, this)
                })
                .collect();
            let mut encoder = Encoder::new();
            for (point, value, ts, seq) in &owned {
                let next = row(point, value, *ts, *seq);
                let expected = encoder.len_with(&next);
                prop_assert!(!encoder.clone().push_within(&next, expected - 1));
                prop_assert!(encoder.push_within(&next, expected));
                prop_assert_eq!(encoder.len(), expected);
                prop_assert_eq!(encoder.finish().len(), expected);
            }
            let decoded = decode(&encoder.finish()).unwrap();
            let want: Vec<Decoded> = owned
                .into_iter()
                .map(|(point, value, ts_ms, seq)| Decoded { point, value, ts_ms, seq })
                .collect();
            prop_assert_eq!(decoded, want);
        }
    }
}
