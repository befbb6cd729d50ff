//! Pushed-configuration metrics: answers by status and whether a push is on trial.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter, family, gauge};
use crate::remote_config::payload::Status;
use crate::remote_config::PushStats;

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
        let rows: Vec<([(&str, &str); 1], u64)> = Status::ALL
            .iter()
            .zip(snapshot.answers)
            .map(|(status, count)| ([("status", status.label())], count))
            .collect();
        family(
            &mut encoder,
            "fieldrelay_config_pushes",
            "Answers to configurations pushed on P/config/set, by status (applied, rolled_back, \
             invalid, ...; docs/interface.md)",
            MetricType::Counter,
            &rows,
            |m, count| counter(m, *count),
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_config_push_on_trial",
            "1 while a pushed configuration runs on trial (not confirmed yet), else 0",
            i64::from(snapshot.on_trial),
        )
    }
}
