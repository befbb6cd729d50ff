//! Broker profiles (`uplink.broker`): what the cloud brokers plants use document as the limits of
//! one client connection, as a table. Pure data: `fieldrelay check` holds a configuration to it
//! (`broker_fit.rs` in this module), the uplink caps its in-flight window and drain rate with it
//! ([`super::UplinkConfig::inflight_window`], [`super::UplinkConfig::drain_rate`]), and the data
//! budget reads the broker's name from it.
//!
//! Every figure comes from the page in its profile's `source` (also cited in
//! docs/configuration.md). A limit a broker does not document is `None`: nothing is assumed, and
//! the protocol's own limits and fieldrelay's ranges apply. `generic` documents nothing and so
//! changes nothing: it is the default, the behaviour before profiles existed.
//!
//! What a profile cannot know: the limits of a plan above the entry one, or a limit raised on
//! request (AWS quotas can be). A broker that is more generous than its profile is served by
//! `generic` with explicit `max_inflight` and `max_rate`.

use std::time::Duration;

use super::rules::Choice;

/// Which broker the uplink talks to, for its documented limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Broker {
    /// Any MQTT 3.1.1 broker (mosquitto, HiveMQ CE, EMQX, VerneMQ): no limits beyond the
    /// protocol's; nothing is refused or capped.
    #[default]
    Generic,
    /// AWS IoT Core: QoS 0/1 only, 100 publishes/s and 100 unacknowledged publishes per
    /// connection, topics of at most 7 slashes.
    AwsIot,
    /// Azure Event Grid's MQTT broker: QoS 0/1 only (a QoS 2 PUBLISH closes the connection),
    /// keep-alive at most 1160 s.
    AzureEventGrid,
    /// EMQX Cloud Serverless: 10 publishes/s per client, client ids of at most 23 characters
    /// over MQTT 3.x.
    EmqxServerless,
    /// HiveMQ Cloud: the whole protocol (QoS 2, retain); it documents billing, not per-client
    /// limits, so it refuses nothing more than `generic`.
    HivemqCloud,
}

impl Choice for Broker {
    const WHAT: &'static str = "broker";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("generic", Broker::Generic),
        ("aws_iot", Broker::AwsIot),
        ("azure_event_grid", Broker::AzureEventGrid),
        ("emqx_serverless", Broker::EmqxServerless),
        ("hivemq_cloud", Broker::HivemqCloud),
    ];
}

/// A broker's documented limits for one client connection; `None`: not documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerLimits {
    /// The highest QoS the broker accepts on a PUBLISH.
    pub max_qos: u8,
    /// PUBLISHes per second the broker accepts from one connection.
    pub publishes_per_s: Option<u32>,
    /// Unacknowledged QoS 1/2 PUBLISHes the broker accepts from one connection.
    pub max_inflight: Option<u16>,
    /// Largest payload of one PUBLISH, bytes.
    pub max_payload: Option<u32>,
    /// Most levels of a topic (slashes + 1).
    pub max_topic_levels: Option<usize>,
    /// Longest topic, bytes.
    pub max_topic_bytes: Option<usize>,
    /// Longest client id, characters.
    pub max_client_id: Option<usize>,
    /// Whether a retained PUBLISH is accepted.
    pub retain: bool,
    /// Longest keep-alive the broker accepts.
    pub max_keep_alive: Option<Duration>,
    /// The page(s) the figures come from.
    pub source: &'static str,
}

const NONE: BrokerLimits = BrokerLimits {
    max_qos: 2,
    publishes_per_s: None,
    max_inflight: None,
    max_payload: None,
    max_topic_levels: None,
    max_topic_bytes: None,
    max_client_id: None,
    retain: true,
    max_keep_alive: None,
    source: "",
};

impl Broker {
    /// The broker's word in the file (`aws_iot`).
    pub fn name(self) -> &'static str {
        self.word()
    }

    /// The documented limits of this broker.
    pub fn limits(self) -> BrokerLimits {
        match self {
            Broker::Generic => BrokerLimits {
                source: "the MQTT 3.1.1 standard",
                ..NONE
            },
            Broker::AwsIot => BrokerLimits {
                max_qos: 1,
                publishes_per_s: Some(100),
                max_inflight: Some(100),
                max_payload: Some(128 * 1024),
                max_topic_levels: Some(8),
                max_topic_bytes: Some(256),
                max_client_id: Some(128),
                retain: true,
                max_keep_alive: Some(Duration::from_secs(1200)),
                source: "https://docs.aws.amazon.com/general/latest/gr/iot-core.html#message-broker-limits, \
                         https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html",
            },
            Broker::AzureEventGrid => BrokerLimits {
                max_qos: 1,
                publishes_per_s: Some(1000),
                max_inflight: Some(1000),
                max_payload: None,
                max_topic_levels: None,
                max_topic_bytes: None,
                max_client_id: None,
                retain: true,
                max_keep_alive: Some(Duration::from_secs(1160)),
                source: "https://learn.microsoft.com/azure/event-grid/mqtt-support, \
                         https://learn.microsoft.com/azure/event-grid/quotas-limits, \
                         https://learn.microsoft.com/azure/event-grid/mqtt-retain",
            },
            Broker::EmqxServerless => BrokerLimits {
                max_qos: 2,
                publishes_per_s: Some(10),
                max_inflight: None,
                max_payload: Some(1024 * 1024),
                max_topic_levels: Some(10),
                max_topic_bytes: None,
                max_client_id: Some(23),
                retain: true,
                max_keep_alive: None,
                source: "https://docs.emqx.com/en/cloud/latest/create/restriction.html, \
                         https://docs.emqx.com/en/cloud/v4/create/restriction.html",
            },
            Broker::HivemqCloud => BrokerLimits {
                source: "https://community.hivemq.com/t/frequently-asked-questions-hivemq-cloud/514",
                ..NONE
            },
        }
    }
}

/// The drain rate the uplink keeps to under a broker's publishes/s: a tenth (at least one) below
/// it, left for what is not drained from the queue (births, health reports, QoS 0 samples).
pub fn drain_rate_under(publishes_per_s: u32) -> u32 {
    publishes_per_s
        .saturating_sub((publishes_per_s / 10).max(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_names_its_source_and_generic_limits_nothing() {
        for (word, broker) in Broker::WORDS {
            assert_eq!(broker.name(), *word);
            assert!(!broker.limits().source.is_empty(), "{word}");
        }
        assert_eq!(
            Broker::Generic.limits(),
            BrokerLimits {
                source: Broker::Generic.limits().source,
                ..NONE
            }
        );
        assert_eq!(Broker::default(), Broker::Generic);
    }

    #[test]
    fn the_drain_leaves_headroom_under_the_broker_rate() {
        assert_eq!(drain_rate_under(100), 90);
        assert_eq!(drain_rate_under(10), 9);
        assert_eq!(drain_rate_under(5), 4);
        assert_eq!(drain_rate_under(1), 1);
    }
}
