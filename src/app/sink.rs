//! The gateway's sample sink: where every bus owner's samples go in the running gateway.
//!
//! A sample is first offered to the on-site broker's client (a copy, `try_send`, with `local:`),
//! then pushed into the queue (QoS 1/2 committed, QoS 0 onto the uplink's live channel). The
//! local copy goes first, so a queue waiting on a slow disk does not delay live values; the offer
//! never blocks, so a stuck local broker costs the cloud path nothing. The pollers only know the
//! [`SampleSink`] trait; this and start-up are the only places that know every consumer of a
//! sample: with `console:`, start-up wraps this sink in [`crate::console::Tapped`], which keeps
//! each point's last values for the console's pages before handing the sample on.

use crate::local::LocalFeed;
use crate::queue::Queue;
use crate::sample::{Sample, SampleSink};

/// The bus owners' sink in the running gateway: a live copy to the local client (when
/// configured), then the queue.
#[derive(Debug, Clone)]
pub struct GatewaySink {
    pub queue: Queue,
    pub local: Option<LocalFeed>,
}

impl GatewaySink {
    pub fn new(queue: &Queue, local: Option<&LocalFeed>) -> GatewaySink {
        GatewaySink {
            queue: queue.clone(),
            local: local.cloned(),
        }
    }
}

impl SampleSink for GatewaySink {
    async fn push(&self, sample: Sample) {
        if let Some(local) = &self.local {
            local.offer_sample(sample.clone());
        }
        SampleSink::push(&self.queue, sample).await;
    }
}
