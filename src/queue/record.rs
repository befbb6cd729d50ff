//! One queue row as a JSON line: the form of `fieldrelay queue peek` and `queue export`. Pure.
//!
//! ```text
//! {"seq":41,"kind":"sample","device":"boiler","point":"counter","value":5,"ts":1700000000000,"qos":1,"retain":false,"state":"queued"}
//! {"seq":42,"kind":"sample","device":"boiler","point":"counter","value":6,"ts":1700000000050,"qos":2,"retain":false,"state":"sent","pkid":7}
//! {"seq":43,"kind":"device_status","device":"boiler","payload":"{\"online\":false}","ts":1700000000100,"qos":1,"retain":true,"state":"queued"}
//! ```
//!
//! - `kind`: `sample`, `device_status` or `command_result`. A sample carries its `value` as
//!   published (its MQTT payload is `{"value":…,"ts":…,"seq":…}`); other kinds carry their MQTT
//!   `payload` as the JSON string it is published as, byte for byte.
//! - `point` is absent for device-level kinds; `topic` is present when the topic prefix is known
//!   (`--config`).
//! - `state`: `queued` (never sent in the broker's current session), `sent` (PUBLISH sent with
//!   `pkid`, acknowledgement outstanding), `received` (QoS 2: PUBREC received, PUBCOMP
//!   outstanding). `expires` (ms) when the point has a `max_age`.
//! - A rejected row (`queue export --rejected`) has `state` `rejected`, the broker's `reason`
//!   (`not_authorized`, or `0xa5` for a code without a name), its `reason_code` in hex and when
//!   it was `rejected` (ms):
//!
//! ```text
//! {"seq":44,"kind":"sample","device":"boiler","point":"secret","value":1,"ts":1700000000200,"qos":1,"retain":false,"state":"rejected","reason":"not_authorized","reason_code":"0x87","rejected":1700000000900}
//! ```
//!
//! Written by hand, like the uplink's payloads: the value is already JSON text
//! ([`crate::sample::Value::to_json`]), and re-parsing it would round floats differently.

use std::fmt;

use super::reason;
use super::summary::kind_name;
use super::{Delivery, Entry, StoredRow};

/// Displays as the JSON line of `row` (no newline).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub row: &'a StoredRow,
    /// `uplink.topic_prefix`, when known: adds the row's full `topic`.
    pub topic_prefix: Option<&'a str>,
    /// A rejected row's reason and time, in place of its delivery state.
    pub rejection: Option<Rejection>,
}

/// Why and when a row was moved to the rejected rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub reason: u8,
    pub at_ms: i64,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = self.row;
        let (kind, device, point, ts_ms, qos, retain) = match &row.entry {
            Entry::Sample(s) => (0, &s.device, &s.point, s.ts_ms, s.qos, s.retain),
            Entry::Message(m) => (m.kind.code(), &m.device, &m.point, m.ts_ms, m.qos, m.retain),
        };
        write!(
            f,
            r#"{{"seq":{},"kind":"{}","device":{}"#,
            row.seq,
            kind_name(kind),
            json_str(device)
        )?;
        if !point.is_empty() {
            write!(f, r#","point":{}"#, json_str(point))?;
        }
        if let Some(prefix) = self.topic_prefix {
            let topic = super::wire::row_topic(prefix, &row.entry);
            write!(f, r#","topic":{}"#, json_str(&topic))?;
        }
        match &row.entry {
            Entry::Sample(s) => write!(f, r#","value":{}"#, s.value.to_json())?,
            Entry::Message(m) => write!(f, r#","payload":{}"#, json_str(&m.payload))?,
        }
        write!(f, r#","ts":{ts_ms},"qos":{},"retain":{retain}"#, qos as u8)?;
        match (self.rejection, row.delivery) {
            (Some(r), _) => write!(
                f,
                r#","state":"rejected","reason":{},"reason_code":"{}","rejected":{}"#,
                json_str(&reason::name(r.reason)),
                reason::hex(r.reason),
                r.at_ms
            )?,
            (None, Delivery::Queued) => write!(f, r#","state":"queued""#)?,
            (None, Delivery::Published { pkid }) => write!(f, r#","state":"sent","pkid":{pkid}"#)?,
            (None, Delivery::Received { pkid }) => {
                write!(f, r#","state":"received","pkid":{pkid}"#)?
            }
        }
        if let Some(expires) = row.expires_ms {
            write!(f, r#","expires":{expires}"#)?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Qos;
    use crate::queue::{Message, MessageKind};
    use crate::sample::{Sample, Value};

    fn sample_row(value: Value, delivery: Delivery) -> StoredRow {
        StoredRow {
            seq: 41,
            entry: Entry::Sample(Sample {
                device: Arc::from("boiler"),
                point: Arc::from("temp \"A\""),
                value,
                ts_ms: 1_700_000_000_000,
                qos: Qos::ExactlyOnce,
                retain: false,
            }),
            delivery,
            expires_ms: None,
        }
    }

    #[test]
    fn a_sample_line_is_json_with_its_value_as_published() {
        let row = sample_row(
            Value::Float(-994454210602.4725),
            Delivery::Published { pkid: 7 },
        );
        let line = Record {
            row: &row,
            topic_prefix: None,
            rejection: None,
        }
        .to_string();
        assert_eq!(
            line,
            r#"{"seq":41,"kind":"sample","device":"boiler","point":"temp \"A\"","value":-994454210602.4725,"ts":1700000000000,"qos":2,"retain":false,"state":"sent","pkid":7}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["point"], "temp \"A\"");
    }

    #[test]
    fn a_message_line_carries_its_payload_and_topic() {
        let row = StoredRow {
            seq: 43,
            entry: Entry::Message(Message {
                kind: MessageKind::DeviceStatus,
                device: Arc::from("boiler"),
                point: Arc::from(""),
                payload: r#"{"online":false}"#.into(),
                ts_ms: 5,
                qos: Qos::AtLeastOnce,
                retain: true,
            }),
            delivery: Delivery::Received { pkid: 9 },
            expires_ms: Some(99),
        };
        let line = Record {
            row: &row,
            topic_prefix: Some("fieldrelay/gw"),
            rejection: None,
        }
        .to_string();
        assert_eq!(
            line,
            r#"{"seq":43,"kind":"device_status","device":"boiler","topic":"fieldrelay/gw/boiler/status","payload":"{\"online\":false}","ts":5,"qos":1,"retain":true,"state":"received","pkid":9,"expires":99}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["payload"], r#"{"online":false}"#);
    }

    #[test]
    fn a_rejected_line_carries_its_reason_in_place_of_its_state() {
        let row = sample_row(Value::Int(1), Delivery::Queued);
        let line = |reason| {
            Record {
                row: &row,
                topic_prefix: None,
                rejection: Some(Rejection { reason, at_ms: 9 }),
            }
            .to_string()
        };
        assert_eq!(
            line(0x87),
            r#"{"seq":41,"kind":"sample","device":"boiler","point":"temp \"A\"","value":1,"ts":1700000000000,"qos":2,"retain":false,"state":"rejected","reason":"not_authorized","reason_code":"0x87","rejected":9}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line(0xa5)).unwrap();
        assert_eq!(parsed["reason"], "0xa5");
        assert_eq!(parsed["reason_code"], "0xa5");
        assert!(parsed.get("pkid").is_none());
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            any::<String>().prop_map(|s| Value::Str(Arc::from(s))),
        ]
    }

    fn delivery_strategy() -> impl Strategy<Value = Delivery> {
        prop_oneof![
            Just(Delivery::Queued),
            (1..=u16::MAX).prop_map(|pkid| Delivery::Published { pkid }),
            (1..=u16::MAX).prop_map(|pkid| Delivery::Received { pkid }),
        ]
    }

    proptest! {
        /// Whatever names, values and payloads a row holds, its line is one line of valid JSON
        /// that gives them back exactly.
        #[test]
        fn every_row_is_one_line_of_json_that_gives_its_fields_back(
            seq in any::<u64>(),
            device in any::<String>(),
            point in any::<String>(),
            value in value_strategy(),
            payload in proptest::option::of(any::<String>()),
            ts_ms in any::<i64>(),
            delivery in delivery_strategy(),
            expires_ms in proptest::option::of(any::<i64>()),
        ) {
            let entry = match &payload {
                None => Entry::Sample(Sample {
                    device: Arc::from(device.as_str()),
                    point: Arc::from(point.as_str()),
                    value: value.clone(),
                    ts_ms,
                    qos: Qos::AtLeastOnce,
                    retain: true,
                }),
                Some(payload) => Entry::Message(Message {
                    kind: MessageKind::CommandResult,
                    device: Arc::from(device.as_str()),
                    point: Arc::from(point.as_str()),
                    payload: payload.clone(),
                    ts_ms,
                    qos: Qos::ExactlyOnce,
                    retain: false,
                }),
            };
            let row = StoredRow { seq, entry, delivery, expires_ms };
            let line = Record { row: &row, topic_prefix: Some("p"), rejection: None }.to_string();
            prop_assert!(!line.contains('\n'));
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
            prop_assert_eq!(parsed["seq"].as_u64(), Some(seq));
            prop_assert_eq!(parsed["device"].as_str(), Some(device.as_str()));
            if point.is_empty() {
                prop_assert!(parsed.get("point").is_none());
            } else {
                prop_assert_eq!(parsed["point"].as_str(), Some(point.as_str()));
            }
            prop_assert_eq!(parsed["ts"].as_i64(), Some(ts_ms));
            match &payload {
                None => {
                    // The value's own JSON text, byte for byte as the uplink publishes it (a
                    // re-parse through serde_json::Value would round some floats differently).
                    let value_text = format!(r#","value":{},"#, value.to_json());
                    prop_assert!(line.contains(&value_text), "{} in {}", value_text, line);
                }
                Some(payload) => prop_assert_eq!(parsed["payload"].as_str(), Some(payload.as_str())),
            }
            let pkid = match delivery {
                Delivery::Queued => None,
                Delivery::Published { pkid } | Delivery::Received { pkid } => Some(u64::from(pkid)),
            };
            prop_assert_eq!(parsed["pkid"].as_u64(), pkid);
            prop_assert_eq!(parsed["expires"].as_i64(), expires_ms);
        }
    }

    #[test]
    fn every_value_kind_makes_valid_json() {
        for value in [
            Value::Bool(true),
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Str(Arc::from("A\u{1}\\")),
        ] {
            let row = sample_row(value.clone(), Delivery::Queued);
            let line = Record {
                row: &row,
                topic_prefix: Some("p"),
                rejection: None,
            }
            .to_string();
            let parsed: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(Value::from_json(&parsed["value"].to_string()), Some(value));
            assert_eq!(parsed["topic"], "p/boiler/temp \"A\"");
            assert_eq!(parsed["state"], "queued");
        }
    }
}
