//! Pushed-configuration metrics: answers by status and whether a push is on trial.

use std::sync::Arc;

use super::encode::{counts_by, gauge};
use crate::remote_config::payload::Status;
use crate::remote_config::PushStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

#[derive(Debug)]
pub struct PushCollector {
    stats: Arc<PushStats>,
}

impl PushCollector {
    pub fn new(stats: Arc<PushStats>) -> PushCollector {
        PushCollector { stats }
    }
}

impl Collector for PushCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.stats.snapshot();
        counts_by(
            &mut encoder,
            "fieldrelay_config_pushes",
            "Answers to configurations pushed on P/config/set, by status (applied, rolled_back, \
             invalid, ...; docs/interface.md)",
            "status",
            Status::ALL.iter().map(|s| s.label()).zip(snapshot.answers),
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_config_push_on_trial",
            "1 while a pushed configuration runs on trial (not confirmed yet), else 0",
            i64::from(snapshot.on_trial),
        )
    }
}
