//! Uplink metrics: the connection state ([`LinkState`] watch, the one the systemd status line
//! reads) and the link's counters ([`UplinkStats`]), both read at scrape time.
//!
//! Publish and acknowledgement rates are `rate()` of the counters; the gap between
//! `fieldrelay_queue_committed_total` and `fieldrelay_uplink_acked_total` is what the backlog
//! grows by.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use super::encode::{counter, gauge};
use crate::uplink::{LinkState, UplinkSnapshot, UplinkStats};

#[derive(Debug)]
pub struct UplinkCollector {
    stats: Arc<UplinkStats>,
    link: watch::Receiver<LinkState>,
}

impl UplinkCollector {
    pub fn new(stats: Arc<UplinkStats>, link: watch::Receiver<LinkState>) -> UplinkCollector {
        UplinkCollector { stats, link }
    }
}

/// A counter exported: name, help, and the field it reads.
type CounterField = (&'static str, &'static str, fn(&UplinkSnapshot) -> u64);

const COUNTERS: [CounterField; 10] = [
    (
        "fieldrelay_uplink_connects",
        "Connections the broker accepted; every one after the first is a reconnect",
        |s| s.connects,
    ),
    (
        "fieldrelay_uplink_connect_failures",
        "Connection attempts that failed (dial, TLS, CONNECT refused or unanswered)",
        |s| s.connect_failures,
    ),
    (
        "fieldrelay_uplink_disconnects",
        "Established connections lost (I/O error, broker closed, response timeout); not shutdown",
        |s| s.disconnects,
    ),
    (
        "fieldrelay_uplink_published",
        "PUBLISH packets of queue rows and QoS 0 samples written to the broker (first sends)",
        |s| s.published,
    ),
    (
        "fieldrelay_uplink_resent",
        "PUBLISH (DUP) and PUBREL packets resent on a resumed session for unacknowledged rows",
        |s| s.resent,
    ),
    (
        "fieldrelay_uplink_acked",
        "Queue rows the broker acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2) and that were \
         deleted from the queue",
        |s| s.acked,
    ),
    (
        "fieldrelay_uplink_live_discarded",
        "QoS 0 samples that waited while the link was down, discarded at the next connect",
        |s| s.live_discarded,
    ),
    (
        "fieldrelay_uplink_skipped_rows",
        "Queue rows that cannot be decoded, skipped by the uplink (they stay in queue.db; see \
         fieldrelay queue peek)",
        |s| s.skipped_rows,
    ),
    (
        "fieldrelay_uplink_alias_bytes_saved",
        "MQTT 5: topic bytes not sent thanks to topic aliases",
        |s| s.alias_bytes_saved,
    ),
    (
        "fieldrelay_uplink_quota_pauses",
        "MQTT 5: messages the broker answered quota exceeded (0x97), kept and sent again after \
         a pause",
        |s| s.quota_pauses,
    ),
];

impl Collector for UplinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let connected = *self.link.borrow() == LinkState::Connected;
        let snapshot = self.stats.snapshot();
        gauge(
            &mut encoder,
            "fieldrelay_uplink_connected",
            "1 while the uplink has a broker connection (CONNACK received), 0 while dialling or \
             backing off",
            i64::from(connected),
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_uplink_inflight",
            "Messages awaiting the broker's acknowledgement on the current connection (at most \
             uplink.max_inflight rows); 0 while disconnected",
            snapshot.inflight,
        )?;
        for (name, help, field) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(&mut metric, field(&snapshot))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn scrape_shows_the_link_state_and_every_counter() {
        let stats = Arc::new(UplinkStats::default());
        let (state, link) = watch::channel(LinkState::Connecting);
        let mut metrics = Metrics::new();
        metrics.add(UplinkCollector::new(stats.clone(), link));
        let text = metrics.render().unwrap();
        assert!(text.contains("\nfieldrelay_uplink_connected 0\n"), "{text}");
        for (name, _, _) in COUNTERS {
            assert!(
                text.contains(&format!("\n{name}_total 0\n")),
                "{name}: {text}"
            );
        }
        state.send_replace(LinkState::Connected);
        let text = metrics.render().unwrap();
        assert!(text.contains("\nfieldrelay_uplink_connected 1\n"), "{text}");
        assert!(text.contains("\nfieldrelay_uplink_inflight 0\n"), "{text}");
    }
}
