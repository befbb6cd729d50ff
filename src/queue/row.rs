//! What a row of the queue holds: a sample or a message, and its MQTT session state.

use std::sync::Arc;

use crate::config::Qos;
use crate::sample::Sample;

/// A committed sample with its queue row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// SQLite row id; unique per gateway, increasing in commit order, never reused.
    pub seq: u64,
    pub sample: Sample,
}

/// What a non-sample row is; decides its topic (see [`wire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `P/<device>/status`, retained. `point` is empty.
    DeviceStatus,
    /// `P/<device>/<point>/set/result`.
    CommandResult,
    /// `P/config/result`: the answer to a pushed configuration. `device` and `point` are empty.
    ConfigResult,
    /// `P/config/current`: the running configuration, asked for on `P/config/get`.
    ConfigCurrent,
    /// An answer on the Response Topic of an MQTT 5 command: `device` is the topic, `point`
    /// the correlation data in hex (see `request.rs`).
    CommandResponse,
}

impl MessageKind {
    /// The `kind` column; 0 is a sample.
    pub fn code(self) -> i64 {
        match self {
            MessageKind::DeviceStatus => 1,
            MessageKind::CommandResult => 2,
            MessageKind::ConfigResult => 3,
            MessageKind::ConfigCurrent => 4,
            MessageKind::CommandResponse => 5,
        }
    }

    pub fn from_code(code: i64) -> Option<MessageKind> {
        match code {
            1 => Some(MessageKind::DeviceStatus),
            2 => Some(MessageKind::CommandResult),
            3 => Some(MessageKind::ConfigResult),
            4 => Some(MessageKind::ConfigCurrent),
            5 => Some(MessageKind::CommandResponse),
            _ => None,
        }
    }
}

/// A durable non-sample message: same commit-before-publish and delete-on-ack rule as samples.
/// `payload` is published as is (no `seq` is added).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub device: Arc<str>,
    /// Empty for device-level kinds.
    pub point: Arc<str>,
    pub payload: String,
    pub ts_ms: i64,
    /// 1 or 2; QoS 0 is refused at push (nothing durable about it).
    pub qos: Qos,
    pub retain: bool,
}

/// A row's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Sample(Sample),
    Message(Message),
}

/// A row's MQTT session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Never sent in the broker's current session.
    Queued,
    /// PUBLISH sent with this packet id; PUBACK (QoS 1) or PUBREC (QoS 2) outstanding.
    Published { pkid: u16 },
    /// QoS 2: PUBREC received, PUBREL due or sent; PUBCOMP outstanding.
    Received { pkid: u16 },
}

/// A committed row with its session state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub seq: u64,
    pub entry: Entry,
    pub delivery: Delivery,
    /// Never-sent rows past this wall-clock time (ms) are dropped; `None`: never.
    pub expires_ms: Option<i64>,
}

impl StoredRow {
    pub fn qos(&self) -> Qos {
        match &self.entry {
            Entry::Sample(s) => s.qos,
            Entry::Message(m) => m.qos,
        }
    }
}
