//! The data budget of `uplink.profile: sparkplug`: the same exchanges and framing as the JSON
//! profile's model (see [`super`]), with the edge node's own messages, sized by the encoder the
//! gateway publishes with ([`crate::uplink::sparkplug::node::Node`]).
//!
//! - **Samples**: per device and poll, the queued (QoS 1/2) samples go as the DDATA the node
//!   renders for those rows (aliases as configured), in one write; the QoS 0 samples as live
//!   DDATA in a write of their own. Data is QoS 0: no PUBACKs. After each write of rows a
//!   PINGREQ, the delete barrier, and its PINGRESP: one per poll of the most often polled
//!   device (devices polled together are written, and confirmed, together).
//! - **Health**: an NDATA of the node metrics that change (the queue depth and the oldest
//!   row's age, in a flowing gateway) every `status.health_interval`.
//! - **Keep-alive**: a PINGREQ and its PINGRESP every half `keep_alive` (the Sparkplug link
//!   pings at half the interval).
//! - **Connections**: TCP and TLS as for JSON; CONNECT with the NDEATH will; SUBSCRIBE to NCMD,
//!   DCMD and the primary host's STATE, its SUBACK; the host's retained STATE; NBIRTH and every
//!   DBIRTH.

use rumqttc::mqttbytes::v4::Publish;

use super::{
    connection_open, keep_alive_line, packet_size, publish_size, typical_sample, Flow, Framing,
    Line, Source, CONNECTIONS_PER_DAY, DAY, SEQ, TS_MS,
};
use crate::config::{Config, Qos, SparkplugConfig};
use crate::queue::{Delivery, Entry, StoredRow};
use crate::sparkplug::{BdSeq, MessageType, NodeTopics};
use crate::uplink::sparkplug::node::{Health, Node};

/// The host's retained STATE (`{"online":true,"timestamp":<13 digits>}`).
const STATE_PAYLOAD: usize = r#"{"online":true,"timestamp":1765000000000}"#.len();

/// The node's health as a flowing gateway shows it; `next` differs in depth and age.
fn health(next: bool) -> Health {
    Health {
        depth: if next { 13 } else { 12 },
        oldest_age_ms: if next { 1_600 } else { 1_500 },
        dropped: 0,
        connects: 30,
    }
}

fn bytes_of(packets: &[Publish]) -> u64 {
    packets
        .iter()
        .map(|p| publish_size(p.topic.len(), p.payload.len(), Qos::AtMostOnce))
        .sum()
}

/// Device and point lines, then the fixed ones. Empty when the node cannot be built (ids
/// `check` refuses anyway).
pub(super) fn lines(
    config: &Config,
    sparkplug: &SparkplugConfig,
    framing: Framing,
) -> (Vec<Line>, Vec<Line>) {
    let Ok(mut node) = Node::new(sparkplug, &config.devices) else {
        return (Vec::new(), Vec::new());
    };
    let births = node.births(TS_MS, BdSeq::new(1), health(false));
    let (mut lines, mut points) = (Vec::new(), Vec::new());
    // Barrier PINGREQs a day: one after each write of rows, which carries the rows of every
    // device committed by then; devices polled together share it, so one per poll of the
    // most often polled device with queued points.
    let mut barriers: f64 = 0.0;
    for device in &config.devices {
        let polls = DAY / device.poll_interval.as_secs_f64().max(1e-3);
        let (mut queued, mut live) = (Vec::new(), Vec::new());
        for (i, point) in device.points.iter().enumerate() {
            let sample = typical_sample(device, point);
            if point.qos == Qos::AtMostOnce {
                live.push(sample);
            } else {
                queued.push(StoredRow {
                    seq: SEQ + i as u64,
                    entry: Entry::Sample(sample),
                    delivery: Delivery::Queued,
                    expires_ms: None,
                });
            }
        }
        let mut flow = Flow::default();
        let mut messages = 0.0;
        if !queued.is_empty() {
            let sent = node.rows(TS_MS, &queued, 0, true);
            flow.add(framing.exchange(bytes_of(&sent.packets), 1, Qos::AtMostOnce));
            messages += sent.packets.len() as f64;
            barriers = barriers.max(polls);
        }
        if !live.is_empty() {
            let packets = node.live(TS_MS, &live);
            flow.add(framing.exchange(bytes_of(&packets), 1, Qos::AtMostOnce));
            messages += packets.len() as f64;
        }
        let n = device.points.len().max(1) as f64;
        for point in &device.points {
            points.push(Line {
                name: format!("{}/{}", device.name, point.name),
                source: Source::Device,
                messages: polls,
                per_day: flow.times(polls / n),
            });
        }
        lines.push(Line {
            name: format!("device {}", device.name),
            source: Source::Device,
            messages: polls * messages,
            per_day: flow.times(polls),
        });
    }
    if barriers > 0.0 {
        let ping = Flow {
            stream: (2 * (2 + framing.record)) as f64,
            segments: 2.0,
        };
        lines.push(Line {
            name: "delete barrier (PINGREQ)".into(),
            source: Source::Device,
            messages: barriers,
            per_day: ping.times(barriers),
        });
    }
    let reports = DAY / config.status.health_interval.as_secs_f64().max(1e-3);
    let ndata = node.ndata(TS_MS, health(true));
    let ndata = bytes_of(ndata.as_slice());
    lines.push(Line {
        name: "health (NDATA)".into(),
        source: Source::Fixed,
        messages: reports,
        per_day: framing.exchange(ndata, 1, Qos::AtMostOnce).times(reports),
    });
    lines.push(keep_alive_line(
        DAY / (config.uplink.keep_alive / 2).as_secs_f64().max(0.1),
        framing,
    ));
    lines.push(Line {
        name: "connection, birth".into(),
        source: Source::Fixed,
        messages: CONNECTIONS_PER_DAY,
        per_day: connection(config, sparkplug, &node, &births, framing).times(CONNECTIONS_PER_DAY),
    });
    (lines, points)
}

/// One connection: TCP, TLS, CONNECT with the NDEATH will, SUBSCRIBE, STATE, the births.
fn connection(
    config: &Config,
    sparkplug: &SparkplugConfig,
    node: &Node,
    births: &[Publish],
    framing: Framing,
) -> Flow {
    let (will_topic, will) = node.ndeath(TS_MS, BdSeq::new(1));
    let topics: &NodeTopics = node.topics();
    let mut filters = vec![topics.node(MessageType::NCmd), topics.dcmd_filter()];
    let host = sparkplug.primary_host_id.as_deref();
    filters.extend(host.map(NodeTopics::state));
    let subscribe = packet_size(2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>());
    let suback = packet_size(2 + filters.len());
    let state = host.map_or(0, |host| {
        let topic = NodeTopics::state(host);
        publish_size(topic.len(), STATE_PAYLOAD, Qos::AtLeastOnce) + 4
    });
    let mut flow = connection_open(config, will_topic.len(), will.len(), framing);
    // SUBSCRIBE, its SUBACK and the host's STATE (with our PUBACK), then the births.
    flow.add(Flow {
        stream: (subscribe + suback + state + 3 * framing.record) as f64,
        segments: 3.0,
    });
    flow.add(framing.exchange(bytes_of(births), 1, Qos::AtMostOnce));
    flow
}

#[cfg(test)]
mod tests {
    use crate::budget::{estimate, Budget};
    use crate::config::load_str;

    const TWO_POINTS: &str = "\
gateway: {id: gw, data_dir: /d}
uplink: {url: 'mqtts://b', profile: sparkplug, sparkplug: {group_id: plant}}
buses: [{name: plc1, type: tcp, host: h}]
devices: [{name: a, bus: plc1, points: [{name: temperature, table: holding, address: 0, type: f32}, {name: running, table: coil, address: 0, type: bool, qos: 0}]}]
";

    fn budget(text: &str) -> Budget {
        estimate(&load_str(text, "c.yaml").unwrap())
    }

    #[test]
    fn sparkplug_counts_ddata_a_barrier_ndata_and_births_instead_of_json_messages() {
        let b = budget(TWO_POINTS);
        let names: Vec<&str> = b.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "device a",
                "delete barrier (PINGREQ)",
                "health (NDATA)",
                "keep-alive",
                "connection, birth"
            ]
        );
        // A queued DDATA and a live one per poll (1 s).
        assert_eq!(b.lines[0].messages, 2.0 * 86_400.0);
        assert_eq!(b.lines[1].messages, 86_400.0);
        // Aliases make DATA smaller; names cost more.
        let named =
            budget(&TWO_POINTS.replace("{group_id: plant}", "{group_id: plant, aliases: false}"));
        assert!(named.lines[0].per_day.stream > b.lines[0].per_day.stream);
        // Against the JSON profile, per device: QoS 0 DATA, no PUBACKs, short metrics.
        let json =
            budget(&TWO_POINTS.replace(", profile: sparkplug, sparkplug: {group_id: plant}", ""));
        assert!(b.lines[0].per_day.stream < json.lines[0].per_day.stream);
        // The births grow with the points they declare; a primary host adds its STATE.
        let more = budget(&TWO_POINTS.replace(
            "qos: 0}]",
            "qos: 0}, {name: pressure_of_the_inlet, table: holding, address: 2, type: f32}]",
        ));
        assert!(more.lines[4].per_day.stream > b.lines[4].per_day.stream);
        let host = budget(&TWO_POINTS.replace(
            "{group_id: plant}",
            "{group_id: plant, primary_host_id: scada}",
        ));
        assert!(host.lines[4].per_day.stream > b.lines[4].per_day.stream);
        assert!(b.render().contains("delete barrier"));
    }
}
