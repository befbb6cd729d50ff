//! Status certificates and health reports: `uplink.status` and
//! `uplink.health_interval`, resolved into [`StatusConfig`].
//!
//! ```yaml
//! uplink:
//!   status:
//!     offline: retain     # retain | clear: what the death certificate leaves on P/status
//!   health_interval: 60s  # P/health looked at every minute, sent when something changed…
//!   health_heartbeat: 1h  # …and at least this often
//! ```
//!
//! The report is sent when what it says about problems changed (a device's status, its failure
//! counters, dropped rows, reconnects) and otherwise only every `health_heartbeat`: a healthy
//! gateway costs one report an hour on a metered link, a failing one reports within
//! `health_interval`. A `health_heartbeat` no longer than `health_interval` sends every report.
//! Without `health_heartbeat`, a file that names `health_interval` gets a report every interval
//! (what such a file asked for before the heartbeat existed); one that names neither gets the
//! cheap defaults.
//!
//! The keys live under `uplink` because they shape what the uplink publishes, but they are kept
//! out of [`super::uplink::UplinkConfig`] (a connection's settings) in a section of their own.
//!
//! `offline` is an enum, not a `retain_offline: true` boolean: each value names its trade-off.
//! The boolean spelling, which was once proposed, is refused with a message naming the
//! replacement, so a file that uses it fails loudly instead of half-working.

use std::time::Duration;

use serde::Deserialize;

use super::decode::{decode_mapping, Decoded, Keys};
use super::error::Issue;
use super::rules::{choice, duration_at_least, Choice};
use super::uplink::RawUplink;

/// A minute: a problem shows within a minute; unchanged reports are held back until the
/// heartbeat, so the interval costs nothing while all is well.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// An hour: a healthy gateway's report costs ~0.6 MB/month on a metered link (two devices,
/// TLS), where one a minute cost ~34 MB (`fieldrelay check --budget`).
pub const DEFAULT_HEALTH_HEARTBEAT: Duration = Duration::from_secs(3600);
/// Faster reports would be load, not information (the counters move per poll).
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The resolved status settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusConfig {
    pub offline: OfflineStatus,
    /// How often the health report is built; it is published (while connected) when it
    /// changed, or when `health_heartbeat` passed since the last one.
    pub health_interval: Duration,
    pub health_heartbeat: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            offline: OfflineStatus::Retain,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_heartbeat: DEFAULT_HEALTH_HEARTBEAT,
        }
    }
}

/// What the death certificate (Last Will, graceful shutdown) leaves on `P/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineStatus {
    /// A retained `{"status":"offline",…}` (default): a dashboard that connects later still sees
    /// that the gateway is down and why; a decommissioned gateway's last word stays on the
    /// broker until someone clears it.
    Retain,
    /// An empty retained payload, which deletes the retained status: nothing stale is left
    /// behind (short-lived or autoscaled fleets), but a client that connects later cannot tell
    /// "offline" from "never existed". Connected subscribers get the empty message as the death.
    Clear,
}

impl Choice for OfflineStatus {
    const WHAT: &'static str = "offline status";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("retain", OfflineStatus::Retain),
        ("clear", OfflineStatus::Clear),
    ];
}

/// `uplink.status`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatus {
    pub offline: Option<String>,
    /// The boolean spelling, refused with a pointer to `offline`: only its presence is looked
    /// at.
    #[allow(dead_code)]
    pub retain_offline: Option<serde_json::Value>,
}

/// Resolves `uplink.status` and `uplink.health_interval` (defaults without an uplink section are
/// irrelevant: a missing uplink is reported elsewhere).
pub(crate) fn validate_status(
    uplink: Option<&Decoded<RawUplink>>,
    issues: &mut Vec<Issue>,
) -> Option<StatusConfig> {
    let Some(Decoded { value, keys }) = uplink else {
        return Some(StatusConfig::default());
    };
    let health_interval = duration_at_least(
        keys,
        "health_interval",
        value.health_interval,
        DEFAULT_HEALTH_INTERVAL,
        MIN_HEALTH_INTERVAL,
        issues,
    );
    // A file written before the heartbeat existed and naming its `health_interval` asked for a
    // report every interval: it keeps getting one. Only the defaults became cheap.
    let heartbeat_default = match (value.health_interval, health_interval) {
        (Some(_), Some(interval)) => interval,
        _ => DEFAULT_HEALTH_HEARTBEAT,
    };
    let health_heartbeat = duration_at_least(
        keys,
        "health_heartbeat",
        value.health_heartbeat,
        heartbeat_default,
        MIN_HEALTH_INTERVAL,
        issues,
    );
    let offline = match &value.status {
        None if keys.rejected.contains("status") => None,
        None => Some(OfflineStatus::Retain),
        Some(section) => offline_status(section, keys, issues),
    };
    Some(StatusConfig {
        offline: offline?,
        health_interval: health_interval?,
        health_heartbeat: health_heartbeat?,
    })
}

fn offline_status(
    section: &serde_json::Value,
    uplink: &Keys,
    issues: &mut Vec<Issue>,
) -> Option<OfflineStatus> {
    let path = uplink.path_of("status");
    let Decoded { value, keys } =
        decode_mapping::<RawStatus>(section, &path, "the status settings", issues)?;
    if keys.present.contains("retain_offline") {
        issues.push(Issue::key(
            keys.path_of("retain_offline"),
            "write `offline: retain` (keep a retained offline status) or `offline: clear` \
             (delete the retained status) instead",
        ));
        return None;
    }
    choice(
        &keys,
        "offline",
        &value.offline,
        OfflineStatus::Retain,
        issues,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn config(uplink_extra: &str) -> Result<StatusConfig, Vec<String>> {
        let text = format!(
            "gateway: {{id: gw, data_dir: /d}}
uplink:
  url: 'mqtt://b'
{uplink_extra}buses: [{{name: plc1, type: tcp, host: h}}]
devices: [{{name: a, bus: plc1, points: [{{name: p, table: coil, address: 0, type: bool}}]}}]
"
        );
        load_str(&text, "c.yaml")
            .map(|c| c.status)
            .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_retain_and_report_every_minute() {
        assert_eq!(config(""), Ok(StatusConfig::default()));
        assert_eq!(
            config("  status: {offline: clear}\n  health_interval: 5s\n"),
            Ok(StatusConfig {
                offline: OfflineStatus::Clear,
                // A file naming only the interval keeps a report every interval.
                health_interval: Duration::from_secs(5),
                health_heartbeat: Duration::from_secs(5),
            })
        );
        assert_eq!(
            config(
                "  health_heartbeat: 1m
"
            )
            .map(|s| s.health_heartbeat),
            Ok(Duration::from_secs(60))
        );
    }

    #[test]
    fn the_issue_spelling_names_its_replacement() {
        assert_eq!(
            config("  status: {retain_offline: true}\n"),
            Err(vec![
                "c.yaml:4:12: uplink.status.retain_offline: write `offline: retain` (keep a retained offline status) or `offline: clear` (delete the retained status) instead".to_owned()
            ])
        );
        assert_eq!(
            config("  status: {offline: keep}\n  health_interval: 100ms\n"),
            Err(vec![
                "c.yaml:4:21: uplink.status.offline: unknown offline status \"keep\": expected retain or clear".to_owned(),
                "c.yaml:5:20: uplink.health_interval: must be at least 1s, got 100ms".to_owned(),
            ])
        );
    }
}
