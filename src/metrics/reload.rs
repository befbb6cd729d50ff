//! Reload metrics, named like Prometheus' own (`prometheus_config_last_reload_successful`), so
//! an alert on "the file on disk is not what runs" is one line.

use std::sync::Arc;

use super::encode::{counts_by, gauge};
use crate::reload::{Outcome, ReloadStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

#[derive(Debug)]
pub struct ReloadCollector {
    stats: Arc<ReloadStats>,
}

impl ReloadCollector {
    pub fn new(stats: Arc<ReloadStats>) -> ReloadCollector {
        ReloadCollector { stats }
    }
}

impl Collector for ReloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.stats.snapshot();
        counts_by(
            &mut encoder,
            "fieldrelay_config_reloads",
            "Reload requests (SIGHUP) by result: applied, unchanged, invalid (refused, see the \
             journal), needs_restart (refused: a key that only a restart applies changed)",
            "result",
            Outcome::ALL.iter().map(|o| o.label()).zip(snapshot.counts),
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_config_last_reload_successful",
            "1 if the last reload was applied or found nothing to change (or none was requested), \
             0 if it was refused",
            i64::from(snapshot.last_successful),
        )?;
        gauge(
            &mut encoder,
            "fieldrelay_config_last_reload_success_timestamp_seconds",
            "Unix time the running configuration was loaded (start or last applied reload)",
            snapshot.loaded_ms as f64 / 1000.0,
        )
    }
}
