//! What an MQTT 5 broker announces in its CONNACK, and what the uplink makes of it. Pure.
//!
//! - **Receive Maximum** caps the in-flight window ([`BrokerLimits::window`]): the broker takes
//!   at most that many unacknowledged QoS 1/2 PUBLISHes, status certificates included, so one
//!   slot is kept for a certificate whenever the limit leaves room for it.
//! - **Maximum Packet Size** caps a batch and refuses a single row whose PUBLISH would exceed it
//!   (it is rejected locally with 0x95, never sent: [`BrokerLimits::fits`]).
//! - **Topic Alias Maximum** sizes the alias table ([`super::alias::Aliases`]).
//! - **Server Keep Alive** replaces ours; an assigned **Session Expiry Interval** is logged.
//! - **Maximum QoS** and **Retain Available**: a row the broker cannot take as it is would be
//!   refused with 0x9B / 0x9A and the connection closed; such rows are rejected locally with
//!   that code instead of looping ([`BrokerLimits::refuses`]).
//!
//! Message expiry: a row with an `expires_ms` goes out with the seconds it has left, rounded
//! up ([`expiry_secs`]), so a broker never delivers it stale.

use rumqttc::v5::mqttbytes::v5::ConnAckProperties;

use crate::config::Qos;

/// Bytes of a PUBLISH besides topic and payload under MQTT 5, at most: fixed header (5), topic
/// length (2), packet id (2), properties length (1), message expiry (5) and topic alias (3).
pub const PUBLISH_OVERHEAD_V5: usize = 18;

/// The limits of one MQTT 5 connection (MQTT 5 §3.2.2.3); absent properties mean no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLimits {
    pub receive_max: Option<u16>,
    pub max_packet: Option<u32>,
    pub topic_alias_max: u16,
    pub server_keep_alive: Option<u16>,
    pub session_expiry: Option<u32>,
    /// 0 or 1 when the broker does not take QoS 2 (or QoS 1).
    pub max_qos: Option<u8>,
    pub retain_available: bool,
}

impl BrokerLimits {
    pub fn from_connack(properties: Option<&ConnAckProperties>) -> BrokerLimits {
        let Some(p) = properties else {
            return BrokerLimits {
                retain_available: true,
                ..BrokerLimits::default()
            };
        };
        BrokerLimits {
            receive_max: p.receive_max,
            max_packet: p.max_packet_size,
            topic_alias_max: p.topic_alias_max.unwrap_or(0),
            server_keep_alive: p.server_keep_alive,
            session_expiry: p.session_expiry_interval,
            max_qos: p.max_qos,
            retain_available: p.retain_available != Some(0),
        }
    }

    /// The in-flight window for rows: `configured`, capped at Receive Maximum less one slot
    /// kept for a status certificate (when the limit is at least 2).
    pub fn window(&self, configured: u16) -> u16 {
        match self.receive_max {
            None => configured,
            Some(max) if max >= 2 => configured.min(max - 1),
            Some(max) => configured.min(max.max(1)),
        }
    }

    /// The largest batch payload a PUBLISH on `topic_len` bytes of topic can carry, capped at
    /// `configured`.
    pub fn batch_limit(&self, configured: u32) -> u32 {
        match self.max_packet {
            None => configured,
            Some(max) => configured.min(max.saturating_sub(PUBLISH_OVERHEAD_V5 as u32)),
        }
    }

    /// Whether a PUBLISH of `topic` and `payload` bytes fits the broker's Maximum Packet Size.
    pub fn fits(&self, topic: usize, payload: usize) -> bool {
        self.max_packet
            .is_none_or(|max| (topic + payload + PUBLISH_OVERHEAD_V5) as u64 <= u64::from(max))
    }

    /// The reason code the broker would refuse a message of `qos` and `retain` with, if any.
    pub fn refuses(&self, qos: Qos, retain: bool) -> Option<u8> {
        let level = match qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        };
        if self.max_qos.is_some_and(|max| level > max) {
            return Some(0x9B);
        }
        if retain && !self.retain_available {
            return Some(0x9A);
        }
        None
    }
}

/// The Message Expiry Interval of a row that expires at `expires_ms`, seen at `now_ms`: the
/// seconds left, rounded up; `None` for a row that never expires, and at least 1 (a row already
/// expired is not sent at all).
pub fn expiry_secs(expires_ms: Option<i64>, now_ms: i64) -> Option<u32> {
    let left = expires_ms?.saturating_sub(now_ms).max(1);
    let secs = (left + 999) / 1000;
    Some(u32::try_from(secs).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn receive_maximum_caps_the_window_keeping_a_slot_for_a_certificate() {
        let limits = |receive_max| BrokerLimits {
            receive_max,
            ..BrokerLimits::default()
        };
        assert_eq!(limits(None).window(64), 64);
        assert_eq!(limits(Some(10)).window(64), 9);
        assert_eq!(limits(Some(100)).window(64), 64);
        assert_eq!(limits(Some(1)).window(64), 1);
    }

    #[test]
    fn maximum_packet_size_caps_batches_and_single_rows() {
        let limits = BrokerLimits {
            max_packet: Some(1000),
            ..BrokerLimits::default()
        };
        assert_eq!(limits.batch_limit(65536), 1000 - PUBLISH_OVERHEAD_V5 as u32);
        assert_eq!(limits.batch_limit(500), 500);
        assert!(limits.fits(100, 1000 - 100 - PUBLISH_OVERHEAD_V5));
        assert!(!limits.fits(100, 1000 - 99 - PUBLISH_OVERHEAD_V5));
        assert!(BrokerLimits::default().fits(100, 1 << 30));
    }

    #[test]
    fn connack_properties_become_limits() {
        let props = ConnAckProperties {
            receive_max: Some(20),
            max_packet_size: Some(4096),
            topic_alias_max: Some(10),
            max_qos: Some(1),
            retain_available: Some(0),
            session_expiry_interval: None,
            assigned_client_identifier: None,
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        };
        let limits = BrokerLimits::from_connack(Some(&props));
        assert_eq!(limits.window(64), 19);
        assert_eq!(limits.topic_alias_max, 10);
        assert_eq!(limits.refuses(Qos::ExactlyOnce, false), Some(0x9B));
        assert_eq!(limits.refuses(Qos::AtLeastOnce, true), Some(0x9A));
        assert_eq!(limits.refuses(Qos::AtLeastOnce, false), None);
        let none = BrokerLimits::from_connack(None);
        assert_eq!(none.refuses(Qos::ExactlyOnce, true), None);
    }

    #[test]
    fn expiry_is_the_seconds_left_rounded_up() {
        assert_eq!(expiry_secs(None, 5), None);
        assert_eq!(expiry_secs(Some(10_000), 0), Some(10));
        assert_eq!(expiry_secs(Some(10_001), 0), Some(11));
        assert_eq!(expiry_secs(Some(5), 5), Some(1));
    }

    proptest! {
        /// The window never exceeds the configured one nor Receive Maximum, and is never 0.
        #[test]
        fn the_window_respects_both_limits(configured in 1u16.., max in 1u16..) {
            let limits = BrokerLimits { receive_max: Some(max), ..BrokerLimits::default() };
            let window = limits.window(configured);
            prop_assert!(window >= 1 && window <= configured && window <= max);
        }

        /// A row's expiry never outlives its `expires_ms` by a second or more, and never is 0.
        #[test]
        fn expiry_is_never_zero_nor_late(left in 1i64..10_000_000, now in 0i64..1 << 40) {
            let secs = i64::from(expiry_secs(Some(now + left), now).unwrap_or(0));
            prop_assert!(secs >= 1);
            prop_assert!(secs * 1000 >= left && secs * 1000 < left + 1000);
        }
    }
}
