//! The edge node's messages (pure): what to publish for a birth, a window of queued rows, a
//! live sample, a device going or coming back, and the death. No I/O and no clock: the driver
//! ([`super`]) passes `now` and writes what comes back.
//!
//! State kept here, per process:
//! - `seq` ([`SeqCounter`]): 0 on NBIRTH, +1 on every other message but NDEATH, 255 → 0;
//! - the last value and time of every point (for DBIRTH: current value, null when never read),
//!   updated by every sample sent, historical or live, in the order sent;
//! - which devices are known offline (from their status rows) and which got a DBIRTH in the
//!   current births: a device's data is always preceded by its DBIRTH.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;
use tracing::warn;

use crate::config::{DeviceConfig, SparkplugConfig};
use crate::queue::{Entry, MessageKind, StoredRow};
use crate::sample::{Sample, Value};
use crate::sparkplug::metric::NODE_METRICS;
use crate::sparkplug::payload::{self, BirthMetric, DataMetric, Encoded, MetricId};
use crate::sparkplug::{
    history, AliasTable, BdSeq, DataType, MessageType, MetricDef, NodeTopics, SeqCounter,
};

/// The gateway's health figures, in [`NODE_METRICS`] order (the values of the node metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub depth: u64,
    pub oldest_age_ms: u64,
    pub dropped: u64,
    pub connects: u64,
}

impl Health {
    fn values(self) -> [Value; 5] {
        let int = |n: u64| i64::try_from(n).map_or(Value::UInt(n), Value::Int);
        [
            int(self.depth),
            int(self.oldest_age_ms),
            int(self.dropped),
            int(self.connects),
            Value::Str(Arc::from(crate::status::gateway::VERSION)),
        ]
    }
}

/// One configured device: its points' metrics in configuration order.
#[derive(Debug, Clone)]
struct Device {
    name: Arc<str>,
    metrics: Vec<MetricDef>,
}

/// What a window of rows gave: messages to write, and rows settled without a message (which the
/// barrier must still cover before they are deleted, so they go with the others).
#[derive(Debug, Default)]
pub struct Sent {
    pub packets: Vec<Publish>,
    /// Every row the packets carry or that needed none, in `seq` order.
    pub rows: Vec<u64>,
}

/// The edge node; see the module header.
#[derive(Debug)]
pub struct Node {
    topics: NodeTopics,
    aliases: Option<AliasTable>,
    devices: Vec<Device>,
    flush_max: usize,
    seq: SeqCounter,
    last: HashMap<(Arc<str>, Arc<str>), (Value, i64)>,
    offline: HashSet<Arc<str>>,
    birthed: HashSet<Arc<str>>,
    /// What [`Node::aliases`] gives with aliases off.
    no_aliases: AliasTable,
    /// The node metrics' values as last published (NBIRTH or NDATA).
    health: [Option<Value>; NODE_METRICS.len()],
}

fn publish(topic: String, payload: Vec<u8>) -> Publish {
    Publish::new(topic, QoS::AtMostOnce, Bytes::from(payload))
}

fn log_refused(encoded: &Encoded, topic: &str) {
    for refused in &encoded.refused {
        warn!(%topic, metric = %refused.metric, error = %refused.error, "sparkplug metric value does not fit its datatype; left out");
    }
}

impl Node {
    pub fn new(config: &SparkplugConfig, devices: &[DeviceConfig]) -> Result<Node, String> {
        let topics =
            NodeTopics::new(&config.group_id, &config.edge_node_id).map_err(|e| e.to_string())?;
        Ok(Node {
            topics,
            aliases: config.aliases.then(|| AliasTable::for_devices(devices)),
            devices: devices
                .iter()
                .map(|d| Device {
                    name: Arc::from(d.name.as_str()),
                    metrics: d.points.iter().map(MetricDef::for_point).collect(),
                })
                .collect(),
            flush_max: usize::try_from(config.flush_max_metrics).unwrap_or(usize::MAX),
            seq: SeqCounter::new(),
            last: HashMap::new(),
            offline: HashSet::new(),
            birthed: HashSet::new(),
            no_aliases: AliasTable::default(),
            health: Default::default(),
        })
    }

    pub fn topics(&self) -> &NodeTopics {
        &self.topics
    }

    /// The will (and graceful death) of a connection with `bd_seq`: topic and payload.
    pub fn ndeath(&self, now_ms: i64, bd_seq: BdSeq) -> (String, Bytes) {
        (
            self.topics.node(MessageType::NDeath),
            Bytes::from(payload::ndeath(now_ms, bd_seq)),
        )
    }

    /// NBIRTH, then a DBIRTH for every device not known offline.
    pub fn births(&mut self, now_ms: i64, bd_seq: BdSeq, health: Health) -> Vec<Publish> {
        let defs: Vec<MetricDef> = NODE_METRICS.iter().map(|m| m.def()).collect();
        let values = health.values();
        let metrics: Vec<BirthMetric<'_>> = defs
            .iter()
            .zip(&values)
            .map(|(def, value)| BirthMetric {
                def,
                alias: self.aliases.as_ref().and_then(|a| a.node(&def.name)),
                value: Some(value),
                ts_ms: now_ms,
            })
            .collect();
        self.health = values.clone().map(Some);
        let _ = self.seq.nbirth();
        let topic = self.topics.node(MessageType::NBirth);
        let encoded = payload::nbirth(now_ms, bd_seq, &metrics);
        log_refused(&encoded, &topic);
        let mut packets = vec![publish(topic, encoded.bytes)];
        self.birthed.clear();
        let names: Vec<Arc<str>> = self.devices.iter().map(|d| d.name.clone()).collect();
        for name in names {
            if !self.offline.contains(&name) {
                packets.extend(self.dbirth(now_ms, &name));
            }
        }
        packets
    }

    /// NDATA of the health figures that changed since the last NBIRTH or NDATA; `None` when
    /// none did.
    pub fn ndata(&mut self, now_ms: i64, health: Health) -> Option<Publish> {
        let values = health.values();
        let changed: Vec<usize> = (0..values.len())
            .filter(|&i| self.health[i].as_ref() != Some(&values[i]))
            .collect();
        if changed.is_empty() {
            return None;
        }
        let metrics: Vec<DataMetric<'_>> = changed
            .iter()
            .map(|&i| {
                let node = &NODE_METRICS[i];
                DataMetric {
                    id: match self.aliases.as_ref().and_then(|a| a.node(node.name)) {
                        Some(alias) => MetricId::Alias(alias),
                        None => MetricId::Name(node.name),
                    },
                    datatype: node.datatype,
                    value: &values[i],
                    ts_ms: now_ms,
                    historical: false,
                }
            })
            .collect();
        let topic = self.topics.node(MessageType::NData);
        let encoded = payload::data(now_ms, self.seq.next_seq(), &metrics);
        log_refused(&encoded, &topic);
        for i in changed {
            self.health[i] = Some(values[i].clone());
        }
        Some(publish(topic, encoded.bytes))
    }

    /// DBIRTH of one configured device with its current values.
    fn dbirth(&mut self, now_ms: i64, device: &Arc<str>) -> Option<Publish> {
        let index = self.devices.iter().position(|d| d.name == *device)?;
        let dev = &self.devices[index];
        let metrics: Vec<BirthMetric<'_>> = dev
            .metrics
            .iter()
            .map(|def| {
                let last = self.last.get(&(dev.name.clone(), def.name.clone()));
                BirthMetric {
                    def,
                    alias: self
                        .aliases
                        .as_ref()
                        .and_then(|a| a.device(&dev.name, &def.name)),
                    value: last.map(|(v, _)| v),
                    ts_ms: last.map_or(now_ms, |(_, ts)| *ts),
                }
            })
            .collect();
        let topic = self.topics.device(MessageType::DBirth, &dev.name);
        let encoded = payload::dbirth(now_ms, self.seq.next_seq(), &metrics);
        log_refused(&encoded, &topic);
        self.birthed.insert(device.clone());
        Some(publish(topic, encoded.bytes))
    }

    fn ddeath(&mut self, now_ms: i64, device: &Arc<str>) -> Publish {
        self.birthed.remove(device);
        let topic = self.topics.device(MessageType::DDeath, device);
        publish(topic, payload::ddeath(now_ms, self.seq.next_seq()))
    }

    /// The alias table (empty when aliases are off: commands then name their metrics).
    pub fn aliases(&self) -> &AliasTable {
        self.aliases.as_ref().unwrap_or(&self.no_aliases)
    }

    /// The datatype a point's birth declares; `None` for an unknown point.
    pub fn datatype_of(&self, device: &str, point: &str) -> Option<DataType> {
        self.datatype(device, point)
    }

    fn datatype(&self, device: &str, point: &str) -> Option<DataType> {
        let dev = self.devices.iter().find(|d| &*d.name == device)?;
        dev.metrics
            .iter()
            .find(|m| &*m.name == point)
            .map(|m| m.datatype)
    }

    /// One DDATA of samples of one device (all historical or all live); a DBIRTH first when
    /// the device has none in the current births.
    fn ddata(
        &mut self,
        now_ms: i64,
        device: &Arc<str>,
        historical: bool,
        samples: &[&Sample],
    ) -> Vec<Publish> {
        let mut packets = Vec::new();
        if !self.birthed.contains(device) {
            self.offline.remove(device);
            packets.extend(self.dbirth(now_ms, device));
        }
        let mut metrics = Vec::with_capacity(samples.len());
        for sample in samples {
            let Some(datatype) = self.datatype(device, &sample.point) else {
                continue;
            };
            let id = match &self.aliases {
                Some(aliases) => match aliases.device(device, &sample.point) {
                    Some(alias) => MetricId::Alias(alias),
                    None => continue,
                },
                None => MetricId::Name(&sample.point),
            };
            metrics.push(DataMetric {
                id,
                datatype,
                value: &sample.value,
                ts_ms: sample.ts_ms,
                historical,
            });
        }
        if metrics.is_empty() {
            return packets;
        }
        let topic = self.topics.device(MessageType::DData, device);
        let encoded = payload::data(now_ms, self.seq.next_seq(), &metrics);
        log_refused(&encoded, &topic);
        packets.push(publish(topic, encoded.bytes));
        for sample in samples {
            self.last.insert(
                (sample.device.clone(), sample.point.clone()),
                (sample.value.clone(), sample.ts_ms),
            );
        }
        packets
    }

    /// A window of queued rows (in `seq` order): DDATA for samples (historical when `seq <=
    /// boundary`), DDEATH/DBIRTH for device status rows; command results and samples of
    /// undeclared points are settled without a message (Sparkplug has no topic for them).
    /// Status rows of history only update what the node knows when `publish_status` is false
    /// (`live_first`, where history no longer says what is current).
    pub fn rows(
        &mut self,
        now_ms: i64,
        rows: &[StoredRow],
        boundary: u64,
        publish_status: bool,
    ) -> Sent {
        let mut sent = Sent::default();
        // Cut at status rows so that a device's DDEATH/DBIRTH stays in order with its data.
        let mut start = 0;
        for (i, row) in rows.iter().enumerate() {
            if let Entry::Message(message) = &row.entry {
                if message.kind == MessageKind::DeviceStatus {
                    self.samples(now_ms, &rows[start..i], boundary, &mut sent);
                    self.status(
                        now_ms,
                        &message.device,
                        &message.payload,
                        publish_status || row.seq > boundary,
                        &mut sent,
                    );
                    start = i + 1;
                }
            }
        }
        self.samples(now_ms, &rows[start..], boundary, &mut sent);
        sent.rows = rows.iter().map(|r| r.seq).collect();
        sent
    }

    fn samples(&mut self, now_ms: i64, rows: &[StoredRow], boundary: u64, sent: &mut Sent) {
        let declared = |device: &str, point: &str| self.datatype(device, point).is_some();
        let plan = history::plan(rows, boundary, self.flush_max, declared);
        let messages: Vec<(Arc<str>, bool, Vec<Sample>)> = plan
            .messages
            .iter()
            .map(|m| {
                let samples: Vec<Sample> = m.rows.iter().map(|(_, s)| (*s).clone()).collect();
                (samples[0].device.clone(), m.historical, samples)
            })
            .collect();
        for (device, historical, samples) in messages {
            let refs: Vec<&Sample> = samples.iter().collect();
            sent.packets
                .extend(self.ddata(now_ms, &device, historical, &refs));
        }
    }

    fn status(
        &mut self,
        now_ms: i64,
        device: &Arc<str>,
        payload: &str,
        publish: bool,
        sent: &mut Sent,
    ) {
        let online = !payload.contains(r#""status":"offline""#);
        if online {
            self.offline.remove(device);
            if publish && !self.birthed.contains(device) {
                sent.packets.extend(self.dbirth(now_ms, device));
            }
        } else {
            self.offline.insert(device.clone());
            if publish && self.birthed.contains(device) {
                sent.packets.push(self.ddeath(now_ms, device));
            }
        }
    }

    /// Live QoS 0 samples (never queued): one DDATA per device.
    pub fn live(&mut self, now_ms: i64, samples: &[Sample]) -> Vec<Publish> {
        let mut packets = Vec::new();
        let mut devices: Vec<Arc<str>> = Vec::new();
        for sample in samples {
            if !devices.contains(&sample.device) {
                devices.push(sample.device.clone());
            }
        }
        for device in devices {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.device == device && self.datatype(&s.device, &s.point).is_some())
                .collect();
            if !of.is_empty() {
                packets.extend(self.ddata(now_ms, &device, false, &of));
            }
        }
        packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Qos, SparkplugHistory, Table};
    use crate::modbus::fixtures::{device, point};
    use crate::queue::{Delivery, Message};
    use crate::sparkplug::proto::Payload;
    use prost::Message as _;

    fn node(aliases: bool, flush_max_metrics: u32) -> Node {
        let config = SparkplugConfig {
            group_id: "g".into(),
            edge_node_id: "e".into(),
            primary_host_id: None,
            aliases,
            history: SparkplugHistory::InOrder,
            flush_max_metrics,
        };
        let u16_point = |name| point(name, Table::Holding, 0, crate::config::DataType::U16);
        let devices = [
            device("a", 1, vec![u16_point("x"), u16_point("y")]),
            device("b", 2, vec![u16_point("z")]),
        ];
        Node::new(&config, &devices).unwrap()
    }

    fn sample(seq: u64, device: &str, point: &str, value: i64) -> StoredRow {
        StoredRow {
            seq,
            entry: Entry::Sample(Sample {
                device: Arc::from(device),
                point: Arc::from(point),
                value: Value::Int(value),
                ts_ms: 1000 + seq as i64,
                qos: Qos::AtLeastOnce,
                retain: false,
            }),
            delivery: Delivery::Queued,
            expires_ms: None,
        }
    }

    fn message(seq: u64, kind: MessageKind, device: &str, payload: &str) -> StoredRow {
        StoredRow {
            seq,
            entry: Entry::Message(Message {
                kind,
                device: Arc::from(device),
                point: Arc::from(""),
                payload: payload.into(),
                ts_ms: 0,
                qos: Qos::AtLeastOnce,
                retain: true,
            }),
            delivery: Delivery::Queued,
            expires_ms: None,
        }
    }

    /// (topic, seq, metrics) of each packet.
    fn read(packets: &[Publish]) -> Vec<(String, Option<u64>, Payload)> {
        packets
            .iter()
            .map(|p| {
                let payload = Payload::decode(p.payload.as_ref()).unwrap();
                (p.topic.clone(), payload.seq, payload)
            })
            .collect()
    }

    #[test]
    fn births_then_history_then_live_with_seq_in_order() {
        let mut node = node(true, 2);
        let births = read(&node.births(5, BdSeq::new(3), Health::default()));
        let topics: Vec<&str> = births.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "spBv1.0/g/NBIRTH/e",
                "spBv1.0/g/DBIRTH/e/a",
                "spBv1.0/g/DBIRTH/e/b"
            ]
        );
        let seqs: Vec<_> = births.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(seqs, [Some(0), Some(1), Some(2)]);
        // Never read: null in the birth.
        assert!(births[1].2.metrics.iter().all(|m| m.is_null == Some(true)));

        let rows = [
            sample(1, "a", "x", 1),
            sample(2, "a", "y", 2),
            sample(3, "a", "x", 3),
            message(4, MessageKind::CommandResult, "a", "{}"),
            sample(5, "a", "x", 4),
        ];
        let sent = node.rows(6, &rows, 3, true);
        assert_eq!(
            sent.rows,
            [1, 2, 3, 4, 5],
            "every row, the command result too"
        );
        let data = read(&sent.packets);
        // History cut at two metrics, oldest first, then live; seq goes on.
        let shape: Vec<(Option<u64>, usize, bool)> = data
            .iter()
            .map(|(_, seq, p)| {
                let historical = p.metrics.iter().all(|m| m.is_historical == Some(true));
                (*seq, p.metrics.len(), historical)
            })
            .collect();
        assert_eq!(
            shape,
            [(Some(3), 2, true), (Some(4), 1, true), (Some(5), 1, false)]
        );
        let first = &data[0].2.metrics[0];
        assert!(first.name.is_none() && first.alias.is_some() && first.datatype.is_none());
        assert_eq!(first.timestamp, Some(1001), "the sample's own time");
    }

    #[test]
    fn device_status_rows_make_ddeath_and_dbirth_with_current_values() {
        let mut node = node(false, 500);
        node.births(0, BdSeq::FIRST, Health::default());
        let rows = [
            sample(1, "b", "z", 7),
            message(
                2,
                MessageKind::DeviceStatus,
                "b",
                r#"{"status":"offline","ts":1}"#,
            ),
            message(
                3,
                MessageKind::DeviceStatus,
                "b",
                r#"{"status":"online","ts":2}"#,
            ),
            sample(4, "b", "z", 8),
        ];
        let data = read(&node.rows(9, &rows, 0, true).packets);
        let topics: Vec<&str> = data.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "spBv1.0/g/DDATA/e/b",
                "spBv1.0/g/DDEATH/e/b",
                "spBv1.0/g/DBIRTH/e/b",
                "spBv1.0/g/DDATA/e/b"
            ]
        );
        let rebirth = &data[2].2.metrics[0];
        assert_eq!(rebirth.name.as_deref(), Some("z"));
        assert_eq!(rebirth.timestamp, Some(1001), "the value's own time");
        assert!(rebirth.is_null.is_none() && rebirth.value.is_some());
        // Aliases off: names in DATA.
        assert_eq!(data[3].2.metrics[0].name.as_deref(), Some("z"));
        // An offline device gets no DBIRTH in the next births.
        let offline = [message(
            5,
            MessageKind::DeviceStatus,
            "b",
            r#"{"status":"offline"}"#,
        )];
        node.rows(10, &offline, 0, true);
        let births = node.births(11, BdSeq::FIRST, Health::default());
        assert_eq!(births.len(), 2, "NBIRTH and a's DBIRTH");
    }

    #[test]
    fn seq_wraps_after_255_and_ndata_carries_only_changes() {
        let mut node = node(true, 500);
        node.births(0, BdSeq::FIRST, Health::default());
        let mut seqs = Vec::new();
        for i in 0..300 {
            let sent = node.rows(1, &[sample(i + 1, "a", "x", i as i64)], 0, true);
            seqs.extend(read(&sent.packets).into_iter().map(|(_, s, _)| s.unwrap()));
        }
        assert_eq!(&seqs[250..256], [253, 254, 255, 0, 1, 2]);
        assert!(
            node.ndata(2, Health::default()).is_none(),
            "nothing changed"
        );
        let health = Health {
            depth: 4,
            ..Health::default()
        };
        let ndata = read(&[node.ndata(3, health).unwrap()]);
        assert_eq!(ndata[0].0, "spBv1.0/g/NDATA/e");
        assert_eq!(ndata[0].2.metrics.len(), 1);
        assert_eq!(ndata[0].2.metrics[0].alias, Some(1), "Queue/Depth");
        assert!(node.ndata(4, health).is_none());
    }
}
