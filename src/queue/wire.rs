//! What a row (or a live sample) is on the wire: its topic, payload and flags in the public
//! contract (v1, `docs/interface.md`). The rules sit with the rows they render, so the queue's
//! tools (`fieldrelay queue export`) and every MQTT connection (the uplink, the on-site broker's
//! client) name and render a row the same way.
//!
//! - `P/<device>/<point>`: `{"value":<number|bool>,"ts":<ms>,"seq":<u64>}` (QoS 0: no `seq`)
//! - `P/<device>/status` and `P/<device>/<point>/set/result`: queued [`super::Message`]s,
//!   published with their payload as it was queued plus its `seq`.
//! - `P/status` (retained, QoS 1): the certificates, rendered by [`crate::status::gateway`].
//!
//! Payloads are written by hand rather than through a serializer: the value is already JSON text
//! ([`crate::sample::Value::to_json`]) and this runs once per published sample.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{Entry, MessageKind, StoredRow};
use crate::sample::Sample;

pub fn sample_topic(prefix: &str, sample: &Sample) -> String {
    format!("{prefix}/{}/{}", sample.device, sample.point)
}

/// `seq` is the queue row id; QoS 0 samples are never queued nor resent, so they carry none.
/// Concatenated rather than `format!`ted: this runs once per published sample, and the
/// formatting machinery cost more than the rest of the envelope.
pub fn sample_payload(sample: &Sample, seq: Option<u64>) -> Bytes {
    let value = sample.value.to_json();
    let mut out = Vec::with_capacity(value.len() + 56);
    out.extend_from_slice(b"{\"value\":");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b",\"ts\":");
    if sample.ts_ms < 0 {
        out.push(b'-');
    }
    push_digits(&mut out, sample.ts_ms.unsigned_abs());
    if let Some(seq) = seq {
        out.extend_from_slice(b",\"seq\":");
        push_digits(&mut out, seq);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// Appends `n` in decimal.
fn push_digits(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Topics of samples by (device, point), each rendered once ([`sample_topic`] per row was a
/// good part of a drained row's cost). Bounded: a reload can change the points, so past
/// [`Topics::MAX`] entries the map starts over.
#[derive(Debug)]
pub struct Topics {
    prefix: String,
    by_point: HashMap<(Arc<str>, Arc<str>), String>,
}

impl Topics {
    const MAX: usize = 65_536;

    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
            by_point: HashMap::new(),
        }
    }

    pub fn sample(&mut self, sample: &Sample) -> String {
        let key = (sample.device.clone(), sample.point.clone());
        if let Some(topic) = self.by_point.get(&key) {
            return topic.clone();
        }
        if self.by_point.len() >= Self::MAX {
            self.by_point.clear();
        }
        let topic = sample_topic(&self.prefix, sample);
        self.by_point.insert(key, topic.clone());
        topic
    }

    /// [`row_topic`], from the map for samples.
    pub fn row(&mut self, entry: &Entry) -> String {
        match entry {
            Entry::Sample(sample) => self.sample(sample),
            Entry::Message(_) => row_topic(&self.prefix, entry),
        }
    }
}

/// Topic of a queue row, from its kind and names.
pub fn row_topic(prefix: &str, entry: &Entry) -> String {
    match entry {
        Entry::Sample(sample) => sample_topic(prefix, sample),
        Entry::Message(m) => match m.kind {
            MessageKind::DeviceStatus => format!("{prefix}/{}/status", m.device),
            MessageKind::CommandResult => format!("{prefix}/{}/{}/set/result", m.device, m.point),
            MessageKind::ConfigResult => format!("{prefix}/config/result"),
            MessageKind::ConfigCurrent => format!("{prefix}/config/current"),
            MessageKind::CommandResponse => m.device.to_string(),
        },
    }
}

/// Payload of a queue row: a sample's envelope with its `seq`, or a message's payload as queued
/// with its `seq` added as the last member (see [`with_seq`]).
pub fn row_payload(row: &StoredRow) -> Bytes {
    match &row.entry {
        Entry::Sample(sample) => sample_payload(sample, Some(row.seq)),
        Entry::Message(m) => Bytes::from(with_seq(&m.payload, row.seq)),
    }
}

/// A queued message's JSON object with `"seq":<seq>` appended, so that consumers drop a
/// redelivered device status or command result as they drop a sample: by `seq`. The `seq` is
/// known only after the insert, hence added at send time. Anything that is not a JSON object
/// (an empty payload) is sent as is.
pub fn with_seq(payload: &str, seq: u64) -> String {
    let trimmed = payload.trim_end();
    match trimmed.strip_suffix('}') {
        Some(head) if trimmed.starts_with('{') => {
            if head[1..].trim().is_empty() {
                format!(r#"{{"seq":{seq}}}"#)
            } else {
                format!(r#"{head},"seq":{seq}}}"#)
            }
        }
        _ => payload.to_owned(),
    }
}

/// QoS and retain of a queue row.
pub fn row_flags(entry: &Entry) -> (crate::config::Qos, bool) {
    match entry {
        Entry::Sample(s) => (s.qos, s.retain),
        Entry::Message(m) => (m.qos, m.retain),
    }
}

/// `P/<device>`: the topic of a device's batched samples (`uplink.batch: per_device`).
pub fn batch_topic(prefix: &str, device: &str) -> String {
    format!("{prefix}/{device}")
}

/// One sample of a batch: `{"point":<name>,"value":<v>,"ts":<ms>,"seq":<u64>}`, the single
/// sample's envelope with its point's name in front.
pub fn batch_element(sample: &Sample, seq: u64) -> Vec<u8> {
    let single = sample_payload(sample, Some(seq));
    let point = serde_json::Value::from(&*sample.point).to_string();
    let mut out = Vec::with_capacity(single.len() + point.len() + 10);
    out.extend_from_slice(b"{\"point\":");
    out.extend_from_slice(point.as_bytes());
    out.push(b',');
    out.extend_from_slice(&single[1..]);
    out
}

/// Bytes a batch payload adds around its elements besides their separating commas:
/// `{"ts":<ms>,"samples":[` and `]}`, with room for any `ts`.
pub const BATCH_ENVELOPE: usize = 40;

/// A batch's payload: `{"ts":<ms>,"samples":[<element>,…]}`, `ts` the newest sample's.
pub fn batch_payload(ts_ms: i64, elements: &[Vec<u8>]) -> Bytes {
    let size: usize = elements.iter().map(|e| e.len() + 1).sum();
    let mut out = Vec::with_capacity(size + BATCH_ENVELOPE);
    out.extend_from_slice(b"{\"ts\":");
    if ts_ms < 0 {
        out.push(b'-');
    }
    push_digits(&mut out, ts_ms.unsigned_abs());
    out.extend_from_slice(b",\"samples\":[");
    for (i, element) in elements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(element);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

pub fn status_topic(prefix: &str) -> String {
    format!("{prefix}/status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::sample::Value;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn sample_payload_is_contract_json() {
        let s = Sample {
            device: "boiler".into(),
            point: "temperature".into(),
            value: Value::Float(21.5),
            ts_ms: 1_700_000_000_123,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        assert_eq!(
            sample_topic("fieldrelay/gw", &s),
            "fieldrelay/gw/boiler/temperature"
        );
        assert_eq!(
            json(&sample_payload(&s, Some(42))),
            serde_json::json!({"value": 21.5, "ts": 1_700_000_000_123i64, "seq": 42})
        );
    }

    #[test]
    fn batch_payload_keeps_every_samples_point_ts_and_seq() {
        let s = |point: &str, v: f64, ts: i64| Sample {
            device: "boiler".into(),
            point: point.into(),
            value: Value::Float(v),
            ts_ms: ts,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        let elements = [
            batch_element(&s("temp", 21.5, 10), 4711),
            batch_element(&s("a\"b", 1.0, 12), 4712),
        ];
        let payload = batch_payload(12, &elements);
        assert!(
            payload.len() <= elements.iter().map(|e| e.len() + 1).sum::<usize>() + BATCH_ENVELOPE
        );
        assert_eq!(
            json(&payload),
            serde_json::json!({"ts": 12, "samples": [
                {"point": "temp", "value": 21.5, "ts": 10, "seq": 4711},
                {"point": "a\"b", "value": 1.0, "ts": 12, "seq": 4712},
            ]})
        );
        assert_eq!(
            batch_topic("fieldrelay/gw", "boiler"),
            "fieldrelay/gw/boiler"
        );
    }

    fn formatted(s: &Sample, seq: Option<u64>) -> String {
        let (value, ts) = (s.value.to_json(), s.ts_ms);
        match seq {
            Some(seq) => format!(r#"{{"value":{value},"ts":{ts},"seq":{seq}}}"#),
            None => format!(r#"{{"value":{value},"ts":{ts}}}"#),
        }
    }

    proptest::proptest! {
        #[test]
        fn concatenated_payload_is_the_formatted_one(
            ts_ms in proptest::prelude::any::<i64>(),
            seq in proptest::option::of(proptest::prelude::any::<u64>()),
            int in proptest::prelude::any::<i64>(),
            float in proptest::prelude::any::<f64>(),
        ) {
            for value in [Value::Int(int), Value::Float(float), Value::UInt(seq.unwrap_or(0))] {
                let s = Sample {
                    device: "d".into(),
                    point: "p".into(),
                    value,
                    ts_ms,
                    qos: Qos::AtLeastOnce,
                    retain: false,
                };
                proptest::prop_assert_eq!(sample_payload(&s, seq), Bytes::from(formatted(&s, seq)));
            }
        }
    }

    #[test]
    fn topics_are_rendered_once_per_point_and_messages_as_ever() {
        let mut topics = Topics::new("p");
        let sample = |point: &str| Sample {
            device: "boiler".into(),
            point: point.into(),
            value: Value::Int(1),
            ts_ms: 1,
            qos: Qos::AtLeastOnce,
            retain: false,
        };
        for _ in 0..2 {
            assert_eq!(topics.sample(&sample("t")), "p/boiler/t");
            assert_eq!(topics.row(&Entry::Sample(sample("u"))), "p/boiler/u");
        }
        assert_eq!(topics.by_point.len(), 2);
        let status = Entry::Message(crate::queue::Message {
            kind: MessageKind::DeviceStatus,
            device: "boiler".into(),
            point: "".into(),
            payload: "{}".into(),
            ts_ms: 1,
            qos: Qos::AtLeastOnce,
            retain: true,
        });
        assert_eq!(topics.row(&status), row_topic("p", &status));
    }

    #[test]
    fn live_sample_payload_has_no_seq() {
        let s = Sample {
            device: "d".into(),
            point: "p".into(),
            value: Value::Bool(true),
            ts_ms: 1,
            qos: Qos::AtMostOnce,
            retain: false,
        };
        assert_eq!(
            json(&sample_payload(&s, None)),
            serde_json::json!({"value": true, "ts": 1})
        );
    }

    #[test]
    fn message_rows_get_their_kind_topic_and_payload_as_queued() {
        let message = |kind, point: &str| crate::queue::Message {
            kind,
            device: "boiler".into(),
            point: point.into(),
            payload: r#"{"status":"online"}"#.into(),
            ts_ms: 1,
            qos: Qos::AtLeastOnce,
            retain: true,
        };
        let status = Entry::Message(message(MessageKind::DeviceStatus, ""));
        assert_eq!(row_topic("p", &status), "p/boiler/status");
        let result = Entry::Message(message(MessageKind::CommandResult, "setpoint"));
        assert_eq!(row_topic("p", &result), "p/boiler/setpoint/set/result");
        let row = StoredRow {
            seq: 9,
            entry: status,
            delivery: crate::queue::Delivery::Queued,
            expires_ms: None,
        };
        assert_eq!(
            row_payload(&row),
            Bytes::from_static(br#"{"status":"online","seq":9}"#)
        );
    }

    #[test]
    fn messages_get_their_seq_appended() {
        assert_eq!(with_seq(r#"{"a":1}"#, 3), r#"{"a":1,"seq":3}"#);
        assert_eq!(with_seq("{ }", 3), r#"{"seq":3}"#);
        assert_eq!(with_seq("", 3), "");
        assert_eq!(with_seq("[1]", 3), "[1]");
        let json: serde_json::Value =
            serde_json::from_str(&with_seq(r#"{"id":"x","ok":false,"message":"}"}"#, 12)).unwrap();
        assert_eq!(json["seq"], 12);
        assert_eq!(json["message"], "}");
    }
}
