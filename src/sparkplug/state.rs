//! A primary host application's STATE, and whether the node may publish (pure).
//!
//! With `primary_host_id` configured, the node subscribes to `spBv1.0/STATE/<host>` (QoS 1)
//! and publishes no birth, data or death of devices until that host says it is online. The host
//! publishes its STATE retained, as JSON, at connect and as its will:
//! `{"online":true,"timestamp":<ms>}` / `{"online":false,"timestamp":<ms of its connect>}`
//! (`payloads-state-birth-payload`, `payloads-state-will-message-payload`). Sparkplug 2.2 hosts
//! published a bare `ONLINE`/`OFFLINE` on `STATE/<host>`; such a payload is refused
//! ([`StateError::Legacy`]), so a 2.2 host keeps the node waiting instead of being guessed at.
//!
//! # The gate ([`PrimaryHost`])
//! `last` is the newest STATE timestamp accepted, `last_online` the newest online one; both
//! outlive a reconnect (the spec keeps them per MQTT server; we have one).
//!
//! | phase | STATE | action | spec |
//! |---|---|---|---|
//! | waiting | online, none seen yet | births | `…-birth-publish-phid-wait-timestamp` ("no previous: valid") |
//! | waiting | online, `ts >= last` | births | `…-birth-publish-phid-wait-timestamp`, `…-birth-sequence-wait` |
//! | waiting | online, `ts < last` | ignore (stale) | idem |
//! | waiting | offline | keep waiting (a newer one moves `last`) | `…-phid-wait-online` |
//! | online | offline, `ts >= last_online` | NDEATH, disconnect, reconnect and wait | `…-termination-host-offline` |
//! | online | offline, `ts < last_online` | ignore | `…-termination-host-offline-timestamp` |
//! | online | online | nothing (a restarted host asks for a rebirth itself) | |
//! | any | lost connection | waiting | `…-termination-host-offline-reconnect` |
//!
//! The `>=` matters: a host's will carries the timestamp of its own birth, so its offline STATE
//! is equal to, not newer than, the online one it ends.

use serde::Deserialize;

/// A decoded STATE payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    pub online: bool,
    /// ms since the Unix epoch.
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("STATE payload is the Sparkplug 2.2 form {0:?}, not 3.0 JSON")]
    Legacy(String),
    #[error("STATE payload is not {{\"online\":bool,\"timestamp\":ms}}: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Raw {
    online: bool,
    timestamp: u64,
}

/// Largest STATE payload read (it is a two-key JSON object).
const MAX_STATE_BYTES: usize = 1024;

impl HostState {
    /// Parses a STATE payload (outside bytes: never panics). Unknown keys are allowed.
    pub fn parse(payload: &[u8]) -> Result<HostState, StateError> {
        if payload.len() > MAX_STATE_BYTES {
            return Err(StateError::Invalid(format!(
                "{} bytes is too long",
                payload.len()
            )));
        }
        let text = String::from_utf8_lossy(payload);
        if matches!(text.trim(), "ONLINE" | "OFFLINE") {
            return Err(StateError::Legacy(text.trim().to_owned()));
        }
        let raw: Raw =
            serde_json::from_slice(payload).map_err(|e| StateError::Invalid(e.to_string()))?;
        Ok(HostState {
            online: raw.online,
            timestamp: raw.timestamp,
        })
    }

    /// The JSON a host publishes (for tests and a host simulator).
    pub fn to_json(self) -> String {
        format!(
            r#"{{"online":{},"timestamp":{}}}"#,
            self.online, self.timestamp
        )
    }
}

/// Where the node stands with its primary host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected (or connecting) without a valid online STATE: publish nothing.
    Waiting,
    /// The host is online and the births went out: publish.
    Online,
}

/// What the caller does about a STATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    /// Publish NBIRTH and the DBIRTHs now (then data).
    Birth,
    /// Publish NDEATH, disconnect, reconnect, and wait again.
    Disconnect,
    /// Nothing changes.
    Ignore(Ignored),
}

/// Why a STATE changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Older than one already accepted (a stale retained message).
    Stale,
    /// Offline while waiting: still waiting.
    StillOffline,
    /// Online while online.
    AlreadyOnline,
}

/// The primary-host gate; see the module header for the transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryHost {
    phase: Phase,
    last: Option<u64>,
    last_online: Option<u64>,
}

impl Default for PrimaryHost {
    fn default() -> Self {
        PrimaryHost::new()
    }
}

impl PrimaryHost {
    pub fn new() -> PrimaryHost {
        PrimaryHost {
            phase: Phase::Waiting,
            last: None,
            last_online: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether births and data may be published.
    pub fn may_publish(&self) -> bool {
        self.phase == Phase::Online
    }

    /// A STATE from the configured host's topic.
    pub fn on_state(&mut self, state: HostState) -> GateAction {
        let ts = state.timestamp;
        match (self.phase, state.online) {
            (Phase::Waiting, true) => {
                if self.last.is_some_and(|last| ts < last) {
                    return GateAction::Ignore(Ignored::Stale);
                }
                self.last = Some(ts);
                self.last_online = Some(ts);
                self.phase = Phase::Online;
                GateAction::Birth
            }
            (Phase::Waiting, false) => {
                if self.last.is_some_and(|last| ts < last) {
                    return GateAction::Ignore(Ignored::Stale);
                }
                self.last = Some(ts);
                GateAction::Ignore(Ignored::StillOffline)
            }
            (Phase::Online, false) => {
                if self.last_online.is_some_and(|online| ts < online) {
                    return GateAction::Ignore(Ignored::Stale);
                }
                self.last = Some(ts);
                self.phase = Phase::Waiting;
                GateAction::Disconnect
            }
            (Phase::Online, true) => {
                if self.last.is_some_and(|last| ts < last) {
                    return GateAction::Ignore(Ignored::Stale);
                }
                self.last = Some(ts);
                self.last_online = Some(ts);
                GateAction::Ignore(Ignored::AlreadyOnline)
            }
        }
    }

    /// The connection ended: wait for an online STATE on the next one (the timestamps stay).
    pub fn on_disconnected(&mut self) {
        self.phase = Phase::Waiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn online(timestamp: u64) -> HostState {
        HostState {
            online: true,
            timestamp,
        }
    }

    fn offline(timestamp: u64) -> HostState {
        HostState {
            online: false,
            timestamp,
        }
    }

    fn online_at(ts: u64) -> PrimaryHost {
        let mut gate = PrimaryHost::new();
        assert_eq!(gate.on_state(online(ts)), GateAction::Birth);
        gate
    }

    #[test]
    fn parses_the_3_0_payload() {
        assert_eq!(
            HostState::parse(br#"{"online":true,"timestamp":1700000000000}"#),
            Ok(online(1_700_000_000_000))
        );
        assert_eq!(
            HostState::parse(br#"{"timestamp":5,"online":false,"extra":1}"#),
            Ok(offline(5))
        );
        assert_eq!(
            HostState::parse(&online(42).to_json().into_bytes()),
            Ok(online(42))
        );
    }

    #[test]
    fn refuses_legacy_and_malformed_payloads() {
        assert!(matches!(
            HostState::parse(b"ONLINE"),
            Err(StateError::Legacy(_))
        ));
        for bad in [
            &b""[..],
            b"{}",
            br#"{"online":"true","timestamp":1}"#,
            br#"{"online":true,"timestamp":-1}"#,
            br#"{"online":true,"timestamp":1.5}"#,
            br#"{"online":true}"#,
            b"\xff\xfe",
        ] {
            assert!(matches!(HostState::parse(bad), Err(StateError::Invalid(_))));
        }
    }

    #[test]
    fn waiting_then_first_online_births() {
        let mut gate = PrimaryHost::new();
        assert!(!gate.may_publish());
        assert_eq!(gate.on_state(online(10)), GateAction::Birth);
        assert!(gate.may_publish());
    }

    #[test]
    fn waiting_then_offline_keeps_waiting() {
        let mut gate = PrimaryHost::new();
        assert_eq!(
            gate.on_state(offline(10)),
            GateAction::Ignore(Ignored::StillOffline)
        );
        assert_eq!(gate.phase(), Phase::Waiting);
    }

    #[test]
    fn waiting_then_online_older_than_an_offline_is_stale() {
        let mut gate = PrimaryHost::new();
        gate.on_state(offline(20));
        assert_eq!(
            gate.on_state(online(19)),
            GateAction::Ignore(Ignored::Stale)
        );
        assert_eq!(gate.on_state(online(20)), GateAction::Birth);
    }

    #[test]
    fn online_then_offline_with_the_same_timestamp_disconnects() {
        // A host's will carries the timestamp of its birth.
        let mut gate = online_at(10);
        assert_eq!(gate.on_state(offline(10)), GateAction::Disconnect);
        assert_eq!(gate.phase(), Phase::Waiting);
    }

    #[test]
    fn online_then_newer_offline_disconnects() {
        let mut gate = online_at(10);
        assert_eq!(gate.on_state(offline(11)), GateAction::Disconnect);
    }

    #[test]
    fn online_then_older_offline_is_ignored() {
        let mut gate = online_at(10);
        assert_eq!(
            gate.on_state(offline(9)),
            GateAction::Ignore(Ignored::Stale)
        );
        assert!(gate.may_publish());
    }

    #[test]
    fn online_then_online_again_changes_nothing() {
        let mut gate = online_at(10);
        assert_eq!(
            gate.on_state(online(12)),
            GateAction::Ignore(Ignored::AlreadyOnline)
        );
        // The newer online raised the bar for the offline that ends it.
        assert_eq!(
            gate.on_state(offline(11)),
            GateAction::Ignore(Ignored::Stale)
        );
        assert_eq!(gate.on_state(offline(12)), GateAction::Disconnect);
    }

    #[test]
    fn disconnect_then_stale_retained_online_waits_then_new_online_births() {
        let mut gate = online_at(10);
        assert_eq!(gate.on_state(offline(10)), GateAction::Disconnect);
        gate.on_disconnected();
        // After the reconnect the broker delivers the retained STATE, the offline one; a late
        // copy of an older online must not start a session either.
        assert_eq!(
            gate.on_state(offline(10)),
            GateAction::Ignore(Ignored::StillOffline)
        );
        assert_eq!(gate.on_state(online(9)), GateAction::Ignore(Ignored::Stale));
        assert_eq!(gate.on_state(online(30)), GateAction::Birth);
    }

    #[test]
    fn lost_connection_then_same_online_retained_births_again() {
        let mut gate = online_at(10);
        gate.on_disconnected();
        assert!(!gate.may_publish());
        assert_eq!(gate.on_state(online(10)), GateAction::Birth);
    }

    proptest! {
        /// Whatever the host sends, the node publishes only after an online STATE it accepted,
        /// and an accepted STATE never has an older timestamp than the previous accepted one.
        #[test]
        fn publishing_follows_the_newest_accepted_state(events in proptest::collection::vec((any::<bool>(), 0u64..20, any::<bool>()), 0..40)) {
            let mut gate = PrimaryHost::new();
            let mut newest: Option<u64> = None;
            for (is_online, ts, drop_link) in events {
                if drop_link {
                    gate.on_disconnected();
                    prop_assert!(!gate.may_publish());
                    continue;
                }
                let was = gate.may_publish();
                let action = gate.on_state(HostState { online: is_online, timestamp: ts });
                match action {
                    GateAction::Birth => {
                        prop_assert!(is_online && !was);
                        prop_assert!(newest.is_none_or(|n| ts >= n));
                    }
                    GateAction::Disconnect => prop_assert!(!is_online && was),
                    GateAction::Ignore(_) => prop_assert_eq!(gate.may_publish(), was),
                }
                if !matches!(action, GateAction::Ignore(Ignored::Stale)) {
                    newest = Some(newest.map_or(ts, |n| n.max(ts)));
                }
            }
        }
    }
}
