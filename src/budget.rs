//! The data budget (`fieldrelay check --budget`): the bytes a configuration is expected to put on
//! the uplink's wire per day and per month, and where they go. Pure: a function of the
//! configuration; the sizes of topics and payloads come from the same encoders the gateway
//! publishes with ([`crate::queue::wire`], [`crate::status`]).
//!
//! # The model
//! Traffic is a set of **exchanges**, each counted twice:
//! - **stream bytes**: what crosses the TCP connection, both directions — MQTT packets inside TLS
//!   records. This is what a byte-counting TCP proxy measures.
//! - **wire bytes**: stream bytes plus [`TCP_IP_HEADER`] bytes per TCP segment (IPv4 20, TCP 20,
//!   the timestamps option 12), both directions. This is what a cellular carrier bills.
//!
//! Framing: each write of the gateway is one TLS record of [`TLS_RECORD`] bytes of overhead
//! (TLS 1.3 with an AEAD: 5 header, 1 content type, 16 tag; 0 without TLS) and one segment;
//! each acknowledgement from the broker is its own record (mosquitto, like most brokers, writes
//! packet by packet), the acknowledgements of one write share a segment, and one pure ACK closes
//! each round trip.
//!
//! Per source:
//! - **Samples** (per point): one per `poll_interval` for `every_poll`, and as many for
//!   `on_change` — the worst case, a value that moves on every poll (a quiet value costs a
//!   small fraction of it). The queued (QoS 1/2) samples of one poll of a device leave in one
//!   write; a QoS 0 sample is a write of its own. QoS 1 adds a PUBACK, QoS 2 a PUBREC, a PUBREL
//!   and a PUBCOMP. `seq` and `ts` are sized as 8 and 13 digits, values by type (`false`,
//!   `12345`, `1234.56`). With `batch: per_device` a device's non-retained QoS 1 samples of a
//!   poll are one message of their elements; with `per_device_compact` one compact message
//!   (names once, one `[index,value]` entry per sample: a poll's samples share `ts` and have
//!   consecutive `seq`s, so no offsets), split as `max_packet` requires.
//! - **Health reports**: one QoS 0 publish per `health_heartbeat` (a healthy gateway: a report
//!   that says nothing new is held back until then; while something changes, up to one per
//!   `health_interval`), with one entry per device, its counters sized as after a month.
//! - **Keep-alive**: a PINGREQ and its PINGRESP per ping interval
//!   ([`crate::config::UplinkConfig::ping_interval`]).
//! - **Connections**: [`CONNECTIONS_PER_DAY`] (a cellular link is typically reset daily), each a
//!   TCP handshake and close, a TLS handshake of [`TLS_HANDSHAKE`] bytes (plus
//!   [`TLS_CLIENT_CERT`] with a client certificate; the broker's certificate chain decides the
//!   real figure), CONNECT with the Last Will, CONNACK, the commands' SUBSCRIBE when a point is
//!   writable, and the birth certificate with its PUBACK.
//!
//! With `uplink.profile: sparkplug` the sources are the edge node's messages instead (DDATA,
//! the delete barrier's PINGREQs, NDATA, births): see [`sparkplug`].
//! With `uplink.protocol: mqtt5` the packets carry MQTT 5's properties and data topics go as
//! topic aliases under an assumed Topic Alias Maximum: see [`mqtt5`].
//!
//! Not counted: device status transitions and command results (events, not a rate), resends
//! after a lost connection, DNS, and the on-site broker (`local`, on the LAN). A month is
//! 30 days, a MB 10^6 bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{
    Batching, Config, DataType, DeviceConfig, PointConfig, PublishMode, Qos, UplinkProfile,
};
use crate::queue::wire;
use crate::sample::{Sample, Value};
use crate::status::device::DeviceState;
use crate::status::gateway::{death, GatewayInfo, OfflineReason};
use crate::status::health::{DeviceReport, HealthReport};
use crate::uplink::compact;

mod mqtt5;
mod sparkplug;

/// IPv4 (20) + TCP (20) + TCP timestamps (12), per segment.
pub const TCP_IP_HEADER: u64 = 52;
/// TLS 1.3 record overhead with an AEAD cipher: header 5, content type 1, tag 16.
pub const TLS_RECORD: u64 = 22;
/// A TLS 1.3 handshake with a typical public CA chain (two certificates), both directions.
pub const TLS_HANDSHAKE: u64 = 4_500;
/// A client certificate (mutual TLS) and its CertificateVerify.
pub const TLS_CLIENT_CERT: u64 = 1_200;
/// Reconnects assumed per day: a cellular link is typically reset about daily.
pub const CONNECTIONS_PER_DAY: f64 = 1.0;
const DAY: f64 = 86_400.0;
const MONTH_DAYS: f64 = 30.0;
/// The sample time and queue `seq` the sizes assume: 13 and 8 digits.
const TS_MS: i64 = 1_765_000_000_000;
const SEQ: u64 = 10_000_000;

/// Bytes and TCP segments, per day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Flow {
    pub stream: f64,
    pub segments: f64,
}

impl Flow {
    fn add(&mut self, other: Flow) {
        self.stream += other.stream;
        self.segments += other.segments;
    }

    fn times(self, n: f64) -> Flow {
        Flow {
            stream: self.stream * n,
            segments: self.segments * n,
        }
    }

    /// Stream bytes plus the TCP/IP headers of every segment.
    pub fn wire(&self) -> f64 {
        self.stream + self.segments * TCP_IP_HEADER as f64
    }
}

/// What a budget line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A device's samples (its points are the [`Budget::points`]).
    Device,
    /// Traffic that does not depend on the samples: health, keep-alive, connections.
    Fixed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub source: Source,
    /// Messages per day.
    pub messages: f64,
    pub per_day: Flow,
}

/// The expected traffic of a configuration, per day.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Per device, then the fixed sources.
    pub lines: Vec<Line>,
    /// Per point (`device/point`), for the largest contributors.
    pub points: Vec<Line>,
    pub tls: bool,
}

/// Framing of one connection.
#[derive(Debug, Clone, Copy)]
struct Framing {
    record: u64,
}

impl Framing {
    /// One write of `packets` MQTT bytes, answered by `acks` acknowledgements per message of
    /// `messages` (QoS 1: one; QoS 2: PUBREC and PUBCOMP, plus one PUBREL write back).
    fn exchange(self, packets: u64, messages: u64, qos: Qos) -> Flow {
        let ack = 4 + self.record;
        let (stream, segments) = match qos {
            Qos::AtMostOnce => (packets + self.record, 2),
            Qos::AtLeastOnce => (packets + self.record + messages * ack, 3),
            // PUBLISH; PUBREC each; one PUBREL write; PUBCOMP each; the closing ACK.
            Qos::ExactlyOnce => (
                packets + self.record + messages * 4 + self.record + messages * 2 * ack,
                5,
            ),
        };
        Flow {
            stream: stream as f64,
            segments: f64::from(segments),
        }
    }
}

/// Bytes of a PUBLISH packet of `topic` and `payload` bytes.
pub fn publish_size(topic: usize, payload: usize, qos: Qos) -> u64 {
    let id = if qos == Qos::AtMostOnce { 0 } else { 2 };
    packet_size(2 + topic + id + payload)
}

/// Fixed header (1 byte and the remaining length's varint) plus `remaining`.
fn packet_size(remaining: usize) -> u64 {
    let varint = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    (1 + varint + remaining) as u64
}

/// A value of the point's type as it is typically written.
fn typical_value(point: &PointConfig) -> Value {
    let unscaled = point.scale == 1.0 && point.offset == 0.0;
    match point.data_type {
        DataType::Bool => Value::Bool(false),
        DataType::String { length } => Value::Str("x".repeat(usize::from(length) * 2).into()),
        DataType::F32 | DataType::F64 => Value::Float(1234.56),
        _ if unscaled => Value::Int(12345),
        _ => Value::Float(1234.56),
    }
}

/// A sample of `point` as the model counts it: one every poll, since every_poll and the worst
/// case of on_change are alike.
fn typical_sample(device: &DeviceConfig, point: &PointConfig) -> Sample {
    let (PublishMode::EveryPoll | PublishMode::OnChange) = point.reporting.publish;
    Sample {
        device: device.name.as_str().into(),
        point: point.name.as_str().into(),
        value: typical_value(point),
        ts_ms: TS_MS,
        qos: point.qos,
        retain: point.retain,
    }
}

/// The budget of `config`.
pub fn estimate(config: &Config) -> Budget {
    let tls = config.uplink.tls.is_some();
    let framing = Framing {
        record: if tls { TLS_RECORD } else { 0 },
    };
    if let UplinkProfile::Sparkplug(sparkplug) = &config.uplink.profile {
        let (lines, mut points) = sparkplug::lines(config, sparkplug, framing);
        points.sort_by(|a, b| b.per_day.wire().total_cmp(&a.per_day.wire()));
        return Budget { lines, points, tls };
    }
    let prefix = &config.uplink.topic_prefix;
    let mut packets = mqtt5::Packets::new(config);
    let mut lines = Vec::new();
    let mut points = Vec::new();
    for device in &config.devices {
        let polls = DAY / device.poll_interval.as_secs_f64().max(1e-3);
        let mut device_flow = Flow::default();
        let mut device_messages = 0.0;
        // The queued samples of one poll share a write per QoS; QoS 0 ones are writes each.
        // With `batch: per_device` the QoS 1 non-retained ones are one message (key BATCHED),
        // each sized by its element in that message.
        let batch_limit = config.uplink.batch_limit();
        let mut batches: BTreeMap<u8, Vec<(String, u64)>> = BTreeMap::new();
        // Under MQTT 5 a queued row of a point with `max_age` carries a Message Expiry.
        let expires = |point: &PointConfig| {
            point.qos != Qos::AtMostOnce
                && config
                    .store
                    .max_age
                    .contains_key(&(device.name.clone(), point.name.clone()))
        };
        let batch_expires = device
            .points
            .iter()
            .any(|point| point.qos == Qos::AtLeastOnce && !point.retain && expires(point));
        for point in &device.points {
            let sample = typical_sample(device, point);
            let queued = point.qos != Qos::AtMostOnce;
            let topic = wire::sample_topic(prefix, &sample);
            let payload = wire::sample_payload(&sample, queued.then_some(SEQ));
            if batch_limit.is_some() && point.qos == Qos::AtLeastOnce && !point.retain {
                let element = match config.uplink.batch {
                    Batching::PerDeviceCompact { .. } => {
                        let index = batches.get(&BATCHED).map_or(0, Vec::len);
                        compact_element(&sample, index)
                    }
                    _ => wire::batch_element(&sample, SEQ).len() + 1,
                };
                batches
                    .entry(BATCHED)
                    .or_default()
                    .push((point.name.clone(), element as u64));
                continue;
            }
            let size = packets.recurring(&topic, payload.len(), point.qos, expires(point));
            batches
                .entry(point.qos as u8)
                .or_default()
                .push((point.name.clone(), size));
        }
        for (qos, batch) in batches {
            let key = qos;
            let qos = match qos {
                0 => Qos::AtMostOnce,
                1 | BATCHED => Qos::AtLeastOnce,
                _ => Qos::ExactlyOnce,
            };
            let writes: Vec<&[(String, u64)]> = if qos == Qos::AtMostOnce {
                batch.chunks(1).collect()
            } else {
                vec![&batch[..]]
            };
            for write in writes {
                let own: u64 = write.iter().map(|(_, size)| size).sum();
                let n = write.len() as u64;
                let (packets, messages) = match (key, batch_limit) {
                    (BATCHED, Some(limit)) => {
                        let topic = wire::batch_topic(prefix, &device.name);
                        let envelope = envelope(config.uplink.batch);
                        let (payload, messages) =
                            batched_payloads(topic.len(), own, limit, envelope);
                        let size = packets.recurring(&topic, payload, qos, batch_expires);
                        (size * messages, messages)
                    }
                    _ => (own, n),
                };
                let flow = framing.exchange(packets, messages, qos).times(polls);
                // Each point's share: its own packet (or element), an equal part of the rest.
                let overhead = flow.stream - own as f64 * polls;
                for (name, size) in write {
                    points.push(Line {
                        name: format!("{}/{name}", device.name),
                        source: Source::Device,
                        messages: polls,
                        per_day: Flow {
                            stream: *size as f64 * polls + overhead / n as f64,
                            segments: flow.segments / n as f64,
                        },
                    });
                }
                device_flow.add(flow);
                device_messages += polls * messages as f64;
            }
        }
        lines.push(Line {
            name: format!("device {}", device.name),
            source: Source::Device,
            messages: device_messages,
            per_day: device_flow,
        });
    }
    lines.extend(fixed_lines(config, framing, &mut packets));
    points.sort_by(|a, b| b.per_day.wire().total_cmp(&a.per_day.wire()));
    Budget { lines, points, tls }
}

/// The `batches` key of the QoS 1 samples `batch: per_device` sends together.
const BATCHED: u8 = 255;

/// A sample's bytes in a compact batch, with its commas: its point's name (declared once per
/// message, and a poll's points are distinct) and its `[index,value]` entry, at the running
/// `ts` and `seq` (a poll's samples share their `ts`, their `seq`s follow each other).
fn compact_element(sample: &Sample, index: usize) -> usize {
    let name = serde_json::Value::from(&*sample.point).to_string().len();
    let entry = format!("[{index},{}]", sample.value.to_json()).len();
    name + 1 + entry + 1
}

/// Bytes of a batch payload besides its elements (each counted with its commas).
fn envelope(batching: Batching) -> u64 {
    match batching {
        // `{"ts":<13>,"seq":<8>,"points":[],"samples":[]}`, less the two commas the last name
        // and the last entry lack.
        Batching::PerDeviceCompact { .. } => (compact::FRAME + 13 + 8 - 2) as u64,
        // `{"ts":<13 digits>,"samples":[` and `]}`, less the comma the last element lacks.
        _ => format!("{{\"ts\":{TS_MS},\"samples\":[]}}").len() as u64 - 1,
    }
}

/// Payload bytes of each message, and messages, of one poll's batched samples whose elements
/// (each with its commas) take `elements` bytes, in PUBLISHes of at most `limit` bytes on a
/// `topic`-byte topic.
fn batched_payloads(topic: usize, elements: u64, limit: u32, envelope: u64) -> (usize, u64) {
    let room = u64::from(limit)
        .saturating_sub(topic as u64 + 9 + envelope)
        .max(1);
    let messages = elements.div_ceil(room).max(1);
    let payload = elements / messages + envelope;
    (payload as usize, messages)
}

/// Health reports, keep-alive and connections.
fn fixed_lines(config: &Config, framing: Framing, packets: &mut mqtt5::Packets) -> Vec<Line> {
    let prefix = &config.uplink.topic_prefix;
    let mut lines = Vec::new();
    let health = typical_health(config);
    let topic = crate::uplink::presence::health_topic(prefix);
    let status = &config.status;
    let every = status.health_heartbeat.max(status.health_interval);
    let reports = DAY / every.as_secs_f64();
    let size = packets.recurring(&topic, health.len(), Qos::AtMostOnce, false);
    lines.push(Line {
        name: "health reports".into(),
        source: Source::Fixed,
        messages: reports,
        per_day: framing.exchange(size, 1, Qos::AtMostOnce).times(reports),
    });
    let pings = DAY / config.uplink.ping_interval().as_secs_f64();
    lines.push(keep_alive_line(pings, framing));
    lines.push(Line {
        name: "connection, birth".into(),
        source: Source::Fixed,
        messages: CONNECTIONS_PER_DAY,
        per_day: connection(config, framing, packets).times(CONNECTIONS_PER_DAY),
    });
    lines
}

/// `pings` PINGREQs a day and their PINGRESPs.
fn keep_alive_line(pings: f64, framing: Framing) -> Line {
    let ping = Flow {
        stream: (2 * (2 + framing.record)) as f64,
        segments: 3.0,
    };
    Line {
        name: "keep-alive".into(),
        source: Source::Fixed,
        messages: pings,
        per_day: ping.times(pings),
    }
}

/// One connection: TCP open and close, TLS, CONNECT/CONNACK, SUBSCRIBE/SUBACK, the birth.
fn connection(config: &Config, framing: Framing, packets: &mqtt5::Packets) -> Flow {
    let uplink = &config.uplink;
    let status = wire::status_topic(&uplink.topic_prefix);
    let will = death(TS_MS, OfflineReason::ConnectionLost, config.status.offline);
    let mut flow = connection_open(config, status.len(), will.len(), framing);
    let writable = config
        .devices
        .iter()
        .any(|device| device.points.iter().any(|point| point.write.is_some()));
    let birth = GatewayInfo::new(TS_MS, &config.devices).birth(TS_MS);
    let mut greet = packets.once(status.len(), birth.len(), Qos::AtLeastOnce);
    flow.stream += packets.connection_extra(config, writable) as f64;
    if writable {
        let filter = format!("{}/+/+/set", uplink.topic_prefix);
        greet += packet_size(2 + 2 + filter.len() + 1);
        flow.stream += (5 + framing.record) as f64; // SUBACK
    }
    flow.add(framing.exchange(greet, 1, Qos::AtLeastOnce));
    flow
}

/// TCP open and close, the TLS handshake, CONNECT with a will of `will_topic` and `will`
/// bytes, and CONNACK.
fn connection_open(config: &Config, will_topic: usize, will: usize, framing: Framing) -> Flow {
    let uplink = &config.uplink;
    let credentials = uplink
        .username
        .as_ref()
        .map_or(0, |user| 2 + user.len() + 2 + 32);
    // Variable header 10, client id, will topic and message, user name and password.
    let connect =
        packet_size(10 + 2 + uplink.client_id.len() + 2 + will_topic + 2 + will + credentials);
    let mut stream = connect + 4 + 2 * framing.record;
    let mut segments = 7 + 3; // TCP open and close; CONNECT, CONNACK, ACK
    if framing.record > 0 {
        stream += TLS_HANDSHAKE;
        if uplink
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth.is_some())
        {
            stream += TLS_CLIENT_CERT;
        }
        segments += 8;
    }
    Flow {
        stream: stream as f64,
        segments: f64::from(segments),
    }
}

/// A health report of this configuration's devices, its counters as after a month.
fn typical_health(config: &Config) -> bytes::Bytes {
    let month_ms = (MONTH_DAYS * DAY * 1000.0) as i64;
    let devices = config
        .devices
        .iter()
        .map(|device| {
            let polls = (MONTH_DAYS * DAY / device.poll_interval.as_secs_f64().max(1e-3)) as u64;
            let report = DeviceReport {
                status: Some(DeviceState::Online),
                polls,
                requests: polls,
                timeouts: 12,
                exceptions: 0,
                crc_errors: 0,
                errors: 3,
                stale_replies: 0,
                decode_errors: 0,
                last_success: Some(TS_MS),
            };
            (device.name.clone(), report)
        })
        .collect();
    let progress = crate::queue::QueueProgress {
        last_seq: SEQ,
        depth: 12,
        bytes: 53_248,
        oldest_ts_ms: Some(TS_MS - 1_500),
    };
    HealthReport::new(
        TS_MS,
        TS_MS - month_ms,
        progress,
        crate::queue::QueueStats::default(),
        3,
        devices,
    )
    .payload()
}

impl Budget {
    pub fn total(&self) -> Flow {
        self.sum(|_| true)
    }

    /// Health, keep-alive and connections: what the gateway costs with no samples at all.
    pub fn fixed(&self) -> Flow {
        self.sum(|line| line.source == Source::Fixed)
    }

    fn sum(&self, filter: impl Fn(&Line) -> bool) -> Flow {
        let mut total = Flow::default();
        for line in self.lines.iter().filter(|line| filter(line)) {
            total.add(line.per_day);
        }
        total
    }

    /// The expected stream bytes over `duration` with `connections` connections (instead of
    /// [`CONNECTIONS_PER_DAY`]): what a byte-counting proxy would count.
    pub fn stream_over(&self, duration: Duration, connections: f64) -> f64 {
        let days = duration.as_secs_f64() / DAY;
        self.lines
            .iter()
            .map(|line| match line.name.as_str() {
                "connection, birth" => line.per_day.stream / CONNECTIONS_PER_DAY * connections,
                _ => line.per_day.stream * days,
            })
            .sum()
    }

    /// The report `check --budget` prints.
    pub fn render(&self) -> String {
        let total = self.total().wire();
        let row = |line: &Line| {
            let wire = line.per_day.wire();
            [
                line.name.clone(),
                count(line.messages),
                if line.messages > 0.0 {
                    format!("{:.0}", wire / line.messages)
                } else {
                    "-".into()
                },
                megabytes(wire),
                megabytes(wire * MONTH_DAYS),
                format!("{:.1}%", 100.0 * wire / total.max(1.0)),
            ]
        };
        let header = ["SOURCE", "MSG/DAY", "B/MSG", "MB/DAY", "MB/MONTH", "SHARE"];
        let mut out = String::new();
        out.push_str(&format!(
            "Expected bytes on the uplink's wire ({}; IP and TCP headers included; on_change points at their worst case, a change every poll):\n",
            if self.tls { "TLS" } else { "no TLS" }
        ));
        let mut rows: Vec<[String; 6]> = self.lines.iter().map(row).collect();
        let all = Line {
            name: "total".into(),
            source: Source::Fixed,
            messages: self.lines.iter().map(|l| l.messages).sum(),
            per_day: self.total(),
        };
        rows.push(row(&all));
        out.push_str(&crate::table::with_header(header, rows));
        let fixed = self.fixed().wire();
        out.push_str(&format!(
            "\nFixed overhead (health, keep-alive, connection): {} MB/month.\n",
            megabytes(fixed * MONTH_DAYS)
        ));
        out.push_str("\nLargest contributors:\n");
        let top = self.points.iter().take(5).map(row);
        out.push_str(&crate::table::with_header(header, top));
        out
    }
}

fn count(n: f64) -> String {
    if n >= 100.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

fn megabytes(bytes: f64) -> String {
    let mb = bytes / 1e6;
    if mb >= 100.0 {
        format!("{mb:.0}")
    } else if mb >= 1.0 {
        format!("{mb:.1}")
    } else {
        format!("{mb:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const ONE_POINT: &str = "\
gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtts://b'}
buses: [{name: plc1, type: tcp, host: h}]
devices: [{name: a, bus: plc1, points: [{name: p, table: coil, address: 0, type: bool}]}]
";

    fn budget(text: &str) -> Budget {
        estimate(&load_str(text, "c.yaml").unwrap())
    }

    #[test]
    fn a_qos1_sample_is_its_packet_its_puback_and_the_framing() {
        let b = budget(ONE_POINT);
        // "fieldrelay/gw/a/p", {"value":false,"ts":<13>,"seq":<8>}
        let topic = "fieldrelay/gw/a/p".len();
        let payload = r#"{"value":false,"ts":1765000000000,"seq":10000000}"#.len();
        let publish = 1 + 1 + 2 + topic + 2 + payload;
        let per_sample = (publish + 22 + 4 + 22) as f64;
        let device = &b.lines[0];
        assert_eq!(device.messages, 86_400.0);
        assert_eq!(device.per_day.stream, per_sample * 86_400.0);
        assert_eq!(device.per_day.segments, 3.0 * 86_400.0);
        assert_eq!(b.points[0].per_day, device.per_day);
    }

    #[test]
    fn tls_qos_and_polling_scale_the_figure() {
        let base = budget(ONE_POINT).lines[0].per_day.stream;
        let plain = budget(&ONE_POINT.replace("mqtts", "mqtt")).lines[0]
            .per_day
            .stream;
        assert_eq!(base - plain, 2.0 * 22.0 * 86_400.0);
        let slow = budget(&ONE_POINT.replace("bus: plc1,", "bus: plc1, poll_interval: 10s,"));
        assert_eq!(slow.lines[0].per_day.stream, base / 10.0);
        let qos0 = budget(&ONE_POINT.replace("type: bool", "type: bool, qos: 0"));
        // No `,"seq":10000000` (15 bytes), no packet id, no PUBACK.
        assert_eq!(
            qos0.lines[0].per_day.stream,
            base - (15.0 + 2.0 + 26.0) * 86_400.0
        );
        let qos2 = budget(&ONE_POINT.replace("type: bool", "type: bool, qos: 2"));
        assert_eq!(
            qos2.lines[0].per_day.stream,
            base + (26.0 + 26.0) * 86_400.0
        );
    }

    /// Two boolean points `p` and `q`, and the same with `uplink.batch: <batch>`.
    fn two_points(batch: &str) -> (String, String) {
        let two = ONE_POINT.replace(
            "type: bool}]",
            "type: bool}, {name: q, table: coil, address: 1, type: bool}]",
        );
        let batched = two.replace(
            "{url: 'mqtts://b'}",
            &format!("{{url: 'mqtts://b', batch: {batch}}}"),
        );
        (two, batched)
    }

    #[test]
    fn per_device_counts_one_message_of_elements_per_poll() {
        let (two, batched) = two_points("per_device");
        let b = budget(&batched);
        // "fieldrelay/gw/a", {"ts":<13>,"samples":[{"point":"p",<value,ts,seq>},{…"q"…}]}
        let element = r#"{"point":"p","value":false,"ts":1765000000000,"seq":10000000}"#.len();
        let payload = r#"{"ts":1765000000000,"samples":[]}"#.len() + 2 * element + 1;
        // Over 127 bytes: a two-byte remaining length.
        let publish = 1 + 2 + 2 + "fieldrelay/gw/a".len() + 2 + payload;
        assert_eq!(b.lines[0].messages, 86_400.0);
        assert_eq!(
            b.lines[0].per_day.stream,
            (publish + 22 + 4 + 22) as f64 * 86_400.0
        );
        // Two short-named points save nothing (a point's name in its element costs about what
        // its own topic did, one PUBACK less): batching pays with many points per poll.
        assert!(b.lines[0].per_day.stream > 0.9 * budget(&two).lines[0].per_day.stream);
    }

    #[test]
    fn per_device_compact_counts_the_encoders_payload_for_a_poll() {
        let (_, batched) = two_points("per_device_compact");
        let b = budget(&batched);
        let v = Value::Bool(false);
        let row = |point, seq| compact::Row {
            point,
            value: &v,
            ts_ms: TS_MS,
            seq,
        };
        let payload = compact::encode([row("p", SEQ), row("q", SEQ + 1)]).len();
        let publish = 1 + 1 + 2 + "fieldrelay/gw/a".len() + 2 + payload;
        assert_eq!(b.lines[0].messages, 86_400.0);
        assert_eq!(
            b.lines[0].per_day.stream,
            (publish + 22 + 4 + 22) as f64 * 86_400.0
        );
        let per_device = budget(&batched.replace("per_device_compact", "per_device"));
        assert!(b.lines[0].per_day.stream < per_device.lines[0].per_day.stream);
    }

    #[test]
    fn queued_samples_of_one_poll_share_a_record() {
        let two = ONE_POINT.replace(
            "type: bool}]",
            "type: bool}, {name: q, table: coil, address: 1, type: bool}]",
        );
        let one = budget(ONE_POINT).lines[0].per_day.stream;
        let both = budget(&two).lines[0].per_day.stream;
        assert_eq!(both, 2.0 * one - 22.0 * 86_400.0);
    }

    #[test]
    fn fixed_overhead_counts_health_pings_and_a_daily_connection() {
        let b = budget(ONE_POINT);
        let fixed: Vec<&str> = b.lines[1..].iter().map(|l| l.name.as_str()).collect();
        assert_eq!(fixed, ["health reports", "keep-alive", "connection, birth"]);
        let config = load_str(ONE_POINT, "c.yaml").unwrap();
        let pings = 86_400.0 / config.uplink.ping_interval().as_secs_f64();
        assert_eq!(b.lines[2].per_day.stream, pings * 48.0);
        assert_eq!(b.lines[2].per_day.wire(), pings * (48.0 + 3.0 * 52.0));
        assert!(b.lines[3].per_day.stream > TLS_HANDSHAKE as f64);
        assert!(b.render().contains("Largest contributors"));
    }

    #[test]
    fn the_default_fixed_overhead_stays_under_2_mb_a_month() {
        // Two devices over TLS, every key at its default.
        let two = ONE_POINT.replace(
            "type: bool}]}]",
            "type: bool}]}, {name: b, bus: plc1, unit_id: 2, points: [{name: q, table: coil, address: 0, type: bool}]}]",
        );
        let month = budget(&two).fixed().wire() * MONTH_DAYS;
        assert!(month < 2e6, "{month} bytes a month");
        // What the defaults were before: a PINGREQ every 15 s, a health report a minute.
        let before = two.replace(
            "uplink: {url: 'mqtts://b'}",
            "uplink: {url: 'mqtts://b', keep_alive: 30s, health_heartbeat: 60s}",
        );
        let config = load_str(&before, "c.yaml").unwrap();
        let mut old = estimate(&config);
        let pings = &mut old.lines[3];
        assert_eq!(pings.name, "keep-alive");
        pings.per_day = pings.per_day.times(2.0);
        let before = old.fixed().wire() * MONTH_DAYS;
        assert!(before > 30.0 * month, "{before} against {month}");
    }
}
