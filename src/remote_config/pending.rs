//! The pushed configuration under trial (pure): what is kept on disk while a pushed file has
//! not proven itself, and every decision taken from it — at start, while it runs, and at its
//! deadline. The I/O that carries the decisions out is in `files.rs` and `task.rs`.
//!
//! # Phases
//! ```text
//!  push valid ──► Confirming ──(connected, devices answer)──► confirmed: answer `applied`
//!                     │ deadline passed, or the file does not start
//!                     ▼
//!                RollingBack ──(last-known-good restored and running)──► answer `rolled_back`
//! ```
//! The state file is written **before** the new configuration file replaces the old one, and
//! removed only **after** the answer is committed, so a `kill -9` or power cut anywhere leaves
//! one of these on disk, and the next start resolves it from the state and the hash of the
//! configuration file that is actually there ([`at_start`]):
//!
//! | phase | file on disk | deadline | decision |
//! |---|---|---|---|
//! | Confirming | new | not passed | keep confirming (the gateway was restarted, e.g. to apply) |
//! | Confirming | new | passed | roll back |
//! | Confirming | previous | – | answer `failed`: interrupted before the file was replaced |
//! | RollingBack | new | – | roll back (the restore was interrupted) |
//! | RollingBack | previous | – | answer `rolled_back` with what failed |
//! | any | neither | – | answer `superseded`: the file was changed on the gateway meanwhile |
//!
//! The deadline is wall-clock time (ms since the epoch), so it holds across restarts: a pushed
//! file that makes the gateway crash at start is rolled back at the first start after the
//! deadline, whatever systemd's restart rhythm.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What is kept on disk while a pushed configuration is on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The push's id (a string, as in `P/config/set`).
    pub id: String,
    /// SHA-256 of the pushed file and of the file it replaced (the last-known-good).
    pub new_hash: String,
    pub previous_hash: String,
    /// When the pushed file must have confirmed (ms since the epoch).
    pub deadline_ms: i64,
    /// `remote_config.confirm_within` at the push, for the answers.
    pub confirm_within_ms: u64,
    /// Devices that were online when the push arrived: each must answer again.
    pub devices: Vec<String>,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The pushed file is (or is about to be) the configuration file, and has to confirm.
    Confirming,
    /// Decided: the last-known-good goes back, for these reasons.
    RollingBack { failed: Vec<String> },
}

/// What to do with a state file found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStart {
    /// Keep running the pushed file until it confirms or the deadline passes.
    Confirm,
    /// Restore the last-known-good file (and record why first).
    RollBack { failed: Vec<String> },
    /// Nothing (more) to apply: answer and forget the state.
    Answer(Final),
}

/// How a push ends: the answer's status and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// Running and confirmed.
    Applied,
    /// The last-known-good runs again, for these reasons.
    RolledBack { failed: Vec<String> },
    /// Never applied: the gateway stopped before the file was replaced.
    Interrupted,
    /// The configuration file was replaced on the gateway meanwhile (by hand).
    Superseded,
}

/// While confirming: what the running gateway shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub now_ms: i64,
    /// Connected to the cloud broker (CONNACK on the current connection).
    pub connected: bool,
    /// `host:port` of the broker, for the answer.
    pub broker: String,
    /// Devices of the running configuration.
    pub configured: BTreeSet<String>,
    /// Devices whose last poll succeeded since their bus owner started.
    pub answering: BTreeSet<String>,
}

/// While confirming: the verdict of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    /// Not yet; these are missing.
    Waiting(Vec<String>),
    /// The deadline passed; these failed.
    RollBack(Vec<String>),
}

impl Pending {
    /// The state of a push `id` replacing `previous_hash` by `new_hash` at `now_ms`.
    pub fn new(
        id: String,
        hashes: (String, String),
        now_ms: i64,
        confirm_within_ms: u64,
        devices: Vec<String>,
    ) -> Pending {
        let (previous_hash, new_hash) = hashes;
        Pending {
            id,
            new_hash,
            previous_hash,
            deadline_ms: now_ms
                .saturating_add(i64::try_from(confirm_within_ms).unwrap_or(i64::MAX)),
            confirm_within_ms,
            devices,
            phase: Phase::Confirming,
        }
    }

    /// The decision at start, with the configuration file's hash `current` (see the module doc).
    pub fn at_start(&self, current: &str, now_ms: i64) -> AtStart {
        let is_new = current == self.new_hash;
        let is_previous = current == self.previous_hash;
        match &self.phase {
            Phase::Confirming if is_new && now_ms < self.deadline_ms => AtStart::Confirm,
            Phase::Confirming if is_new => AtStart::RollBack {
                failed: vec![format!(
                    "not confirmed within {}: the gateway did not come back up on it",
                    seconds(self.confirm_within_ms)
                )],
            },
            Phase::Confirming if is_previous => AtStart::Answer(Final::Interrupted),
            Phase::RollingBack { failed } if is_new => AtStart::RollBack {
                failed: failed.clone(),
            },
            Phase::RollingBack { failed } if is_previous => AtStart::Answer(Final::RolledBack {
                failed: failed.clone(),
            }),
            _ => AtStart::Answer(Final::Superseded),
        }
    }

    /// One look while confirming. The devices that must answer are those online before the
    /// push that the pushed file still configures (a device it removes cannot answer, and
    /// removing it was the point).
    pub fn verdict(&self, seen: &Observed) -> Verdict {
        let mut missing = Vec::new();
        if !seen.connected {
            missing.push(format!("uplink: not connected to {}", seen.broker));
        }
        missing.extend(
            self.devices
                .iter()
                .filter(|d| seen.configured.contains(*d) && !seen.answering.contains(*d))
                .map(|d| format!("device {d}: did not answer")),
        );
        if missing.is_empty() {
            Verdict::Confirmed
        } else if seen.now_ms >= self.deadline_ms {
            let within = seconds(self.confirm_within_ms);
            Verdict::RollBack(
                missing
                    .into_iter()
                    .map(|m| format!("{m} within {within}"))
                    .collect(),
            )
        } else {
            Verdict::Waiting(missing)
        }
    }

    /// This state, decided to roll back for `failed`.
    pub fn rolling_back(&self, failed: Vec<String>) -> Pending {
        Pending {
            phase: Phase::RollingBack { failed },
            ..self.clone()
        }
    }
}

fn seconds(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}ms", ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending::new(
            "p1".into(),
            ("old".into(), "new".into()),
            1_000,
            5_000,
            vec!["boiler".into(), "pump".into()],
        )
    }

    fn seen(now_ms: i64, connected: bool, answering: &[&str]) -> Observed {
        Observed {
            now_ms,
            connected,
            broker: "b:1883".into(),
            configured: ["boiler", "pump", "added"].map(String::from).into(),
            answering: answering.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn confirms_once_connected_and_every_device_online_before_answers() {
        let p = pending();
        assert_eq!(p.deadline_ms, 6_000);
        assert_eq!(
            p.verdict(&seen(2_000, false, &["boiler"])),
            Verdict::Waiting(vec![
                "uplink: not connected to b:1883".into(),
                "device pump: did not answer".into()
            ])
        );
        // A device added by the push need not answer; one it removed cannot.
        assert_eq!(
            p.verdict(&seen(2_000, true, &["boiler", "pump"])),
            Verdict::Confirmed
        );
        let mut removed = seen(2_000, true, &["boiler"]);
        removed.configured.remove("pump");
        assert_eq!(p.verdict(&removed), Verdict::Confirmed);
    }

    #[test]
    fn rolls_back_at_the_deadline_naming_what_failed() {
        assert_eq!(
            pending().verdict(&seen(6_000, false, &["boiler", "pump"])),
            Verdict::RollBack(vec!["uplink: not connected to b:1883 within 5s".into()])
        );
        // Confirmed at the deadline still counts.
        assert_eq!(
            pending().verdict(&seen(6_000, true, &["boiler", "pump"])),
            Verdict::Confirmed
        );
    }

    #[test]
    fn a_state_found_at_start_is_resolved_from_the_file_on_disk() {
        let p = pending();
        assert_eq!(p.at_start("new", 5_999), AtStart::Confirm);
        assert!(matches!(p.at_start("new", 6_000), AtStart::RollBack { .. }));
        assert_eq!(
            p.at_start("old", 2_000),
            AtStart::Answer(Final::Interrupted)
        );
        assert_eq!(
            p.at_start("other", 2_000),
            AtStart::Answer(Final::Superseded)
        );
        let back = p.rolling_back(vec!["x".into()]);
        assert_eq!(
            back.at_start("new", 2_000),
            AtStart::RollBack {
                failed: vec!["x".into()]
            }
        );
        assert_eq!(
            back.at_start("old", 2_000),
            AtStart::Answer(Final::RolledBack {
                failed: vec!["x".into()]
            })
        );
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let back = pending().rolling_back(vec!["device pump: did not answer".into()]);
        let text = serde_json::to_string(&back).unwrap();
        assert!(text.contains(r#""phase":"rolling_back""#), "{text}");
        assert_eq!(serde_json::from_str::<Pending>(&text).unwrap(), back);
    }
}
