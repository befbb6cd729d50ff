//! What `uplink.protocol: mqtt5` changes in the budget's packet sizes (MQTT 5 §3): a property
//! length byte in every PUBLISH, CONNECT, will, CONNACK, SUBSCRIBE and SUBACK; a Message
//! Expiry Interval (5 bytes) in a PUBLISH whose point has a `max_age`; Session Expiry (5) in
//! CONNECT with `session: persistent`, Will Delay (5) in the will when `will_delay` is not 0;
//! and topic aliases (see [`crate::uplink::alias`]).
//!
//! Topic aliases: the uplink gives an alias to a topic on its second send and keeps it for the
//! connection, up to the broker's Topic Alias Maximum, which only the CONNACK tells. The budget
//! assumes [`ASSUMED_TOPIC_ALIAS_MAX`] (mosquitto's default `max_topic_alias`) and hands the
//! aliases to the recurring topics in the order the gateway first repeats them: the data
//! topics, device by device and point by point (a poll repeats sooner than any report), then
//! the health topic. An aliased PUBLISH carries an empty topic (its 2-byte length stays) and
//! the 3-byte alias; each aliased topic goes once by name and once with its alias per
//! connection, counted with the connection. The birth, sent once, goes by name.
//!
//! The CONNACK is sized as mosquitto 2.0 sends it: Topic Alias Maximum and Receive Maximum
//! (3 bytes each). PUBACK, PUBREC, PUBREL and PUBCOMP of a success carry neither reason code
//! nor properties (MQTT 5 §3.4.2.1): as under MQTT 3.1.1.

use crate::config::{Config, Qos, SessionMode};
use crate::uplink::alias::ALIAS_PROPERTY;

use super::publish_size;

/// The Topic Alias Maximum the budget assumes: mosquitto's default `max_topic_alias`.
pub const ASSUMED_TOPIC_ALIAS_MAX: usize = 10;
/// A four-byte-integer property: its identifier and the value.
const INT_PROPERTY: u64 = 5;
/// A two-byte-integer property.
const SHORT_PROPERTY: u64 = 3;

/// PUBLISH sizes of one connection under either protocol, aliases handed out as asked.
#[derive(Debug)]
pub(super) struct Packets {
    mqtt5: bool,
    /// Lengths of the topics given an alias, in order.
    aliased: Vec<(String, usize)>,
    alias_max: usize,
}

impl Packets {
    pub(super) fn new(config: &Config) -> Packets {
        Packets {
            mqtt5: config.uplink.protocol.mqtt5().is_some(),
            aliased: Vec::new(),
            alias_max: ASSUMED_TOPIC_ALIAS_MAX,
        }
    }

    /// A PUBLISH sent over and over on `topic` (samples, batches, health); `expiry`: its rows
    /// carry a Message Expiry Interval.
    pub(super) fn recurring(&mut self, topic: &str, payload: usize, qos: Qos, expiry: bool) -> u64 {
        if !self.mqtt5 {
            return publish_size(topic.len(), payload, qos);
        }
        let known = self.aliased.iter().any(|(t, _)| t == topic);
        let fits = self.aliased.len() < self.alias_max && topic.len() as u64 > ALIAS_PROPERTY;
        if !known && fits {
            self.aliased.push((topic.to_owned(), topic.len()));
        }
        let (topic, alias) = if known || fits {
            (0, ALIAS_PROPERTY)
        } else {
            (topic.len(), 0)
        };
        let expiry = if expiry { INT_PROPERTY } else { 0 };
        publish_size(topic, payload + (1 + alias + expiry) as usize, qos)
    }

    /// A PUBLISH sent once per connection (the birth): by name.
    pub(super) fn once(&self, topic: usize, payload: usize, qos: Qos) -> u64 {
        publish_size(topic, payload + usize::from(self.mqtt5), qos)
    }

    /// Bytes MQTT 5 adds to the CONNECT, CONNACK, SUBSCRIBE and SUBACK of a connection, and
    /// the sends that set up its aliases (each aliased topic by name twice, one alias).
    pub(super) fn connection_extra(&self, config: &Config, subscribes: bool) -> u64 {
        let Some(v5) = config.uplink.protocol.mqtt5() else {
            return 0;
        };
        let persistent = config.uplink.session == SessionMode::Persistent;
        let session = if persistent && !v5.session_expiry.is_zero() {
            INT_PROPERTY
        } else {
            0
        };
        let will = if v5.will_delay.is_zero() {
            0
        } else {
            INT_PROPERTY
        };
        let connect = 1 + session + 1 + will;
        let connack = 1 + 2 * SHORT_PROPERTY;
        let subscribe = if subscribes { 2 } else { 0 };
        // Steady-state sends of an aliased topic count 3 bytes of alias and no topic; its
        // first two sends carry the topic, the second the alias too.
        let setup: u64 = self
            .aliased
            .iter()
            .map(|(_, len)| 2 * *len as u64 + ALIAS_PROPERTY - 2 * ALIAS_PROPERTY)
            .sum();
        connect + connack + subscribe + setup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(protocol: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "gateway: {{id: gw, data_dir: {}}}\nuplink: {{url: mqtt://127.0.0.1:1883, \
                 protocol: {protocol}}}\nbuses: [{{name: b, type: tcp, host: 127.0.0.1}}]\n\
                 devices: [{{name: d, bus: b, points: [{{name: t, table: holding, address: 0, \
                 type: u16}}]}}]\n",
                dir.path().display()
            ),
        )
        .unwrap();
        crate::config::load(&path).unwrap()
    }

    #[test]
    fn mqtt311_sizes_are_the_plain_packet() {
        let mut packets = Packets::new(&config("mqtt311"));
        assert_eq!(
            packets.recurring("p/d/t", 10, Qos::AtLeastOnce, true),
            publish_size(5, 10, Qos::AtLeastOnce)
        );
        assert_eq!(packets.connection_extra(&config("mqtt311"), true), 0);
    }

    #[test]
    fn mqtt5_aliases_the_first_recurring_topics_then_names_the_rest() {
        let config = config("mqtt5");
        let mut packets = Packets::new(&config);
        let topic = |i: usize| format!("plant/boiler/point{i:02}");
        let plain = publish_size(topic(0).len(), 40, Qos::AtLeastOnce);
        // Aliased: no topic bytes, 1 property length, 3 alias, 5 expiry.
        assert_eq!(
            packets.recurring(&topic(0), 40, Qos::AtLeastOnce, true),
            plain - topic(0).len() as u64 + 1 + 3 + 5
        );
        for i in 1..ASSUMED_TOPIC_ALIAS_MAX {
            packets.recurring(&topic(i), 40, Qos::AtLeastOnce, false);
        }
        // The table is full: by name, the property length alone.
        let over = topic(ASSUMED_TOPIC_ALIAS_MAX);
        assert_eq!(
            packets.recurring(&over, 40, Qos::AtLeastOnce, false),
            plain + 1
        );
        // A known topic stays aliased.
        assert_eq!(
            packets.recurring(&topic(3), 40, Qos::AtLeastOnce, false),
            plain - topic(3).len() as u64 + 1 + 3
        );
        assert_eq!(
            packets.once(6, 100, Qos::AtLeastOnce),
            publish_size(6, 101, Qos::AtLeastOnce)
        );
        // CONNECT: properties (session expiry) and the will's (will delay); CONNACK 7;
        // SUBSCRIBE and SUBACK 1 each; each of the 10 aliases' setup.
        let setup = ASSUMED_TOPIC_ALIAS_MAX as u64 * (2 * topic(0).len() as u64 - 3);
        assert_eq!(
            packets.connection_extra(&config, true),
            (1 + 5 + 1 + 5) + 7 + 2 + setup
        );
    }
}
