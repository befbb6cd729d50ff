//! A device's status on `P/<device>/status` (pure): when it changes, and its payload.
//!
//! ```json
//! {"status":"online","ts":1763850000123}
//! {"status":"offline","ts":1763850003456,"error":"timed out after 1s"}
//! ```
//!
//! # Transitions
//! - Nothing is said before the device was tried: a gateway that just started does not report a
//!   device online before its first good poll, nor offline before `offline_after` failures.
//! - **offline** once `offline_after` consecutive polls failed (one lost reply does not flap the
//!   status); `error` is the last failure.
//! - **online** at the first good poll after that (or the first ever).
//! - Each state is reported once; failures beyond the threshold, or good polls while online,
//!   say nothing new.
//!
//! `ts` is the gateway's time of the transition. The message is retained and goes through the
//! durable queue, so a device that failed during a WAN outage is reported when the link returns,
//! in order with the samples around it.

use serde::Serialize;

use crate::modbus::DeviceHealth;

/// What the status topic says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Online,
    Offline,
}

/// A status to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: DeviceState,
    /// The last failure, for `Offline`.
    pub error: Option<String>,
}

impl Transition {
    /// The retained payload, at `ts_ms`.
    pub fn payload(&self, ts_ms: i64) -> String {
        #[derive(Serialize)]
        struct Payload<'a> {
            status: DeviceState,
            ts: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        let payload = Payload {
            status: self.state,
            ts: ts_ms,
            error: self.error.as_deref(),
        };
        serde_json::to_string(&payload)
            .unwrap_or_else(|_| format!(r#"{{"status":"{}","ts":{ts_ms}}}"#, self.state.as_str()))
    }
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
        }
    }
}

/// The reported status of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// `None` until something was reported.
    reported: Option<DeviceState>,
}

impl DeviceStatus {
    /// What was last reported.
    pub fn reported(&self) -> Option<DeviceState> {
        self.reported
    }

    /// Feeds the device's current health; returns the status to publish, if it changed.
    pub fn observe(&mut self, health: &DeviceHealth, offline_after: u32) -> Option<Transition> {
        let next = if health.consecutive_failures >= offline_after.max(1) {
            DeviceState::Offline
        } else if health.online && health.answered && health.consecutive_failures == 0 {
            DeviceState::Online
        } else {
            return None;
        };
        if self.reported == Some(next) {
            return None;
        }
        self.reported = Some(next);
        Some(Transition {
            state: next,
            error: match next {
                DeviceState::Offline => Some(
                    health
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not answering".to_owned()),
                ),
                DeviceState::Online => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good() -> DeviceHealth {
        DeviceHealth {
            online: true,
            consecutive_failures: 0,
            last_error: None,
            answered: true,
        }
    }

    fn failed(n: u32) -> DeviceHealth {
        DeviceHealth {
            online: false,
            consecutive_failures: n,
            last_error: Some("timed out after 1s".into()),
            answered: false,
        }
    }

    #[test]
    fn nothing_before_the_device_was_tried() {
        let mut status = DeviceStatus::default();
        assert_eq!(status.observe(&DeviceHealth::default(), 3), None);
        assert_eq!(status.reported(), None);
    }

    #[test]
    fn offline_after_n_failures_then_online_at_the_first_good_poll() {
        let mut status = DeviceStatus::default();
        assert_eq!(
            status.observe(&good(), 3).unwrap().state,
            DeviceState::Online
        );
        assert_eq!(status.observe(&good(), 3), None, "reported once");
        assert_eq!(status.observe(&failed(1), 3), None);
        assert_eq!(status.observe(&failed(2), 3), None);
        let offline = status.observe(&failed(3), 3).unwrap();
        assert_eq!(
            offline,
            Transition {
                state: DeviceState::Offline,
                error: Some("timed out after 1s".into())
            }
        );
        assert_eq!(status.observe(&failed(4), 3), None);
        assert_eq!(
            status.observe(&good(), 3).unwrap().state,
            DeviceState::Online
        );
    }

    #[test]
    fn a_device_that_never_answers_goes_offline() {
        let mut status = DeviceStatus::default();
        assert_eq!(
            status.observe(&failed(1), 1).unwrap().state,
            DeviceState::Offline
        );
    }

    #[test]
    fn payloads_are_the_contract() {
        let offline = Transition {
            state: DeviceState::Offline,
            error: Some("crc error".into()),
        };
        assert_eq!(
            offline.payload(5),
            r#"{"status":"offline","ts":5,"error":"crc error"}"#
        );
        let online = Transition {
            state: DeviceState::Online,
            error: None,
        };
        assert_eq!(online.payload(6), r#"{"status":"online","ts":6}"#);
    }

    proptest! {
        /// Whatever the sequence of polls, the reports alternate (never the same state twice in
        /// a row), an offline report comes only after `offline_after` failures in a row, and an
        /// online one only right after a good poll.
        #[test]
        fn reports_alternate_and_respect_the_threshold(
            polls in proptest::collection::vec(any::<bool>(), 0..200),
            offline_after in 1u32..6,
        ) {
            let mut status = DeviceStatus::default();
            let mut health = DeviceHealth::default();
            let mut last = None;
            for good_poll in polls {
                if good_poll {
                    health = good();
                } else {
                    health.online = false;
                    health.consecutive_failures += 1;
                    health.last_error = Some("x".into());
                }
                if let Some(t) = status.observe(&health, offline_after) {
                    prop_assert_ne!(Some(t.state), last);
                    match t.state {
                        DeviceState::Offline => {
                            prop_assert!(health.consecutive_failures >= offline_after)
                        }
                        DeviceState::Online => prop_assert!(good_poll),
                    }
                    last = Some(t.state);
                }
            }
        }
    }
}
