//! What the rest of the gateway hands the local broker client, without ever waiting for it.
//!
//! - [`LocalFeed::offer_sample`] takes a copy of each sample from the gateway's sample sink
//!   ([`crate::app::GatewaySink`]) with `try_send`: dropped and counted when the channel is full,
//!   so a stuck local broker costs the cloud path nothing.
//! - [`LocalFeed`] also takes device statuses (from the status monitor) and the results of the
//!   on-site broker's commands (from its command handler), on a second channel so that a flood
//!   of samples never crowds them out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::commands::LocalResults;
use crate::sample::Sample;
use crate::status::monitor::StatusSink;

/// A few seconds of samples of a large gateway: the client drains it continuously, so it only
/// fills while the local socket is stalled.
pub const SAMPLE_CAPACITY: usize = 4096;
/// Statuses and results are rare; this many pending means the client is stuck.
pub const EVENT_CAPACITY: usize = 1024;

/// A retained device status or a command result for the on-site broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEvent {
    /// `P/<device>/status`, retained, QoS 1.
    DeviceStatus { device: String, payload: String },
    /// `P/<device>/<point>/set/result`, QoS 1.
    Result {
        device: String,
        point: String,
        payload: String,
    },
}

/// The sending side, cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalFeed {
    samples: mpsc::Sender<Sample>,
    events: mpsc::Sender<LocalEvent>,
    /// Samples and events the client could not take (full channel), since start.
    dropped: Arc<AtomicU64>,
}

/// The receiving side, owned by the client.
#[derive(Debug)]
pub struct FeedReceiver {
    pub samples: mpsc::Receiver<Sample>,
    pub events: mpsc::Receiver<LocalEvent>,
}

impl LocalFeed {
    pub fn channel() -> (LocalFeed, FeedReceiver) {
        let (samples, sample_rx) = mpsc::channel(SAMPLE_CAPACITY);
        let (events, event_rx) = mpsc::channel(EVENT_CAPACITY);
        (
            LocalFeed {
                samples,
                events,
                dropped: Arc::default(),
            },
            FeedReceiver {
                samples: sample_rx,
                events: event_rx,
            },
        )
    }

    /// Offers a sample; `false` (and counted) when the client cannot take it now.
    pub fn offer_sample(&self, sample: Sample) -> bool {
        let taken = self.samples.try_send(sample).is_ok();
        if !taken {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    pub fn offer_event(&self, event: LocalEvent) -> bool {
        let taken = self.events.try_send(event).is_ok();
        if !taken {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Samples and events dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl StatusSink for LocalFeed {
    fn device_status(&self, device: &str, payload: &str) {
        self.offer_event(LocalEvent::DeviceStatus {
            device: device.to_owned(),
            payload: payload.to_owned(),
        });
    }
}

impl LocalResults for LocalFeed {
    fn result(&self, device: &str, point: &str, payload: String) -> bool {
        self.offer_event(LocalEvent::Result {
            device: device.to_owned(),
            point: point.to_owned(),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::sample::Value;

    fn sample(i: i64) -> Sample {
        Sample {
            device: "d".into(),
            point: "p".into(),
            value: Value::Int(i),
            ts_ms: 1,
            qos: Qos::AtMostOnce,
            retain: false,
        }
    }

    #[tokio::test]
    async fn a_full_or_closed_feed_drops_and_counts_without_waiting() {
        let (feed, mut rx) = LocalFeed::channel();
        for i in 0..SAMPLE_CAPACITY as i64 {
            assert!(feed.offer_sample(sample(i)));
        }
        assert!(!feed.offer_sample(sample(-1)));
        assert_eq!(feed.dropped(), 1);
        assert_eq!(rx.samples.recv().await, Some(sample(0)));
        assert!(feed.result("d", "p", "{}".into()));
        assert_eq!(
            rx.events.recv().await,
            Some(LocalEvent::Result {
                device: "d".into(),
                point: "p".into(),
                payload: "{}".into()
            })
        );
        drop(rx);
        assert!(!feed.result("d", "p", "{}".into()));
        assert_eq!(feed.dropped(), 2);
    }
}
