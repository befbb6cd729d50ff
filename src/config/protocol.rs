//! `uplink.protocol`, `uplink.session_expiry` and `uplink.will_delay`: which MQTT version the
//! JSON uplink speaks, and what MQTT 5 adds to its session.
//!
//! ```yaml
//! uplink:
//!   protocol: mqtt5        # mqtt311 (default) | mqtt5
//!   session_expiry: 72h    # how long the broker keeps the session after a disconnect; mqtt5
//!   will_delay: 30s        # how long the broker waits before it publishes the Last Will; mqtt5
//! ```
//!
//! `session_expiry` and `will_delay` written beside `protocol: mqtt311` are refused: they would
//! be silently unused (MQTT 3.1.1 has neither). `protocol: mqtt5` beside `profile: sparkplug`
//! is refused too: the Sparkplug B 3.0 edge node speaks MQTT 3.1.1, as the specification's
//! reference hosts do.
//!
//! # The session under MQTT 5
//! MQTT 5 replaces 3.1.1's `clean_session` by Clean Start and a Session Expiry Interval.
//! `session: persistent` connects with Clean Start 0 and `session_expiry` (the broker may
//! shorten it, which the uplink logs); `session: clean` with Clean Start 1 and an expiry of 0,
//! which is exactly 3.1.1's clean session.

use std::time::Duration;

use super::decode::{DurationValue, Keys};
use super::error::Issue;
use super::rules::{choice, optional, Choice};
use super::units::format_duration;

/// `session_expiry` when none is written: a broker keeps the session (QoS 2 handshakes, the
/// command subscription and the commands published meanwhile) over a weekend outage.
pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(3 * 24 * 3600);
/// MQTT's Session Expiry Interval is 32 bits of seconds; 0xFFFFFFFF means "never".
pub const MAX_SESSION_EXPIRY: Duration = Duration::from_secs(u32::MAX as u64 - 1);
/// `will_delay` when none is written: a connection that drops and comes back within half a
/// minute (a cellular hand-over, a broker restart) raises no offline alarm.
pub const DEFAULT_WILL_DELAY: Duration = Duration::from_secs(30);
/// A day: a longer will delay would hide a dead gateway for longer than anyone wants.
pub const MAX_WILL_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The MQTT version of the JSON uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 3.1.1 (the default and the v1 contract): every broker speaks it, but a broker can
    /// only refuse a PUBLISH by acknowledging it anyway or by closing the connection.
    #[default]
    Mqtt311,
    /// MQTT 5: the broker says why it refuses a message (the row is set aside, not lost and
    /// not retried forever), announces its limits, takes topic aliases and message expiry.
    Mqtt5(Mqtt5Session),
}

/// What MQTT 5 adds to the session (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mqtt5Session {
    /// Session Expiry Interval of a persistent session.
    pub session_expiry: Duration,
    /// Will Delay Interval of the Last Will.
    pub will_delay: Duration,
}

impl Protocol {
    /// The MQTT 5 settings, or `None` under MQTT 3.1.1.
    pub fn mqtt5(self) -> Option<Mqtt5Session> {
        match self {
            Protocol::Mqtt311 => None,
            Protocol::Mqtt5(session) => Some(session),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtocolWord {
    Mqtt311,
    Mqtt5,
}

impl Choice for ProtocolWord {
    const WHAT: &'static str = "MQTT protocol";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("mqtt311", ProtocolWord::Mqtt311),
        ("mqtt5", ProtocolWord::Mqtt5),
    ];
}

/// `uplink.protocol` with `session_expiry` and `will_delay`, checked together; `sparkplug`:
/// whether the uplink runs the Sparkplug profile.
pub(crate) fn validate_protocol(
    keys: &Keys,
    protocol: &Option<String>,
    session_expiry: Option<DurationValue>,
    will_delay: Option<DurationValue>,
    sparkplug: bool,
    issues: &mut Vec<Issue>,
) -> Option<Protocol> {
    match choice(keys, "protocol", protocol, ProtocolWord::Mqtt311, issues)? {
        ProtocolWord::Mqtt311 => {
            let mut refused = false;
            for (key, value) in [
                ("session_expiry", session_expiry),
                ("will_delay", will_delay),
            ] {
                if value.is_some() {
                    issues.push(Issue::value(
                        keys.path_of(key),
                        "only applies with protocol: mqtt5 (MQTT 3.1.1 has no such setting)",
                    ));
                    refused = true;
                }
            }
            (!refused).then_some(Protocol::Mqtt311)
        }
        ProtocolWord::Mqtt5 => {
            if sparkplug {
                issues.push(Issue::value(
                    keys.path_of("protocol"),
                    "the Sparkplug profile speaks MQTT 3.1.1 (Sparkplug B 3.0); use protocol: \
                     mqtt311 or profile: json",
                ));
                return None;
            }
            let session_expiry = bounded(
                keys,
                "session_expiry",
                session_expiry,
                DEFAULT_SESSION_EXPIRY,
                MAX_SESSION_EXPIRY,
                issues,
            );
            let will_delay = bounded(
                keys,
                "will_delay",
                will_delay,
                DEFAULT_WILL_DELAY,
                MAX_WILL_DELAY,
                issues,
            );
            Some(Protocol::Mqtt5(Mqtt5Session {
                session_expiry: session_expiry?,
                will_delay: will_delay?,
            }))
        }
    }
}

/// An optional duration of at most `max` (0 allowed); `default` when absent.
fn bounded(
    keys: &Keys,
    key: &str,
    value: Option<DurationValue>,
    default: Duration,
    max: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    let duration = optional(keys, key, value.map(|d| d.0), default)?;
    if duration <= max {
        return Some(duration);
    }
    issues.push(Issue::value(
        keys.path_of(key),
        format!(
            "must be at most {}, got {}",
            format_duration(max),
            format_duration(duration)
        ),
    ));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testing::{errors, with_uplink as with, VALID};

    #[test]
    fn mqtt311_by_default_and_mqtt5_with_a_weekend_session_and_a_short_will_delay() {
        let protocol = |text: &str| load_str(text, "c.yaml").unwrap().uplink.protocol;
        assert_eq!(protocol(VALID), Protocol::Mqtt311);
        assert_eq!(protocol(&with("  protocol: mqtt311\n")), Protocol::Mqtt311);
        assert_eq!(
            protocol(&with("  protocol: mqtt5\n")),
            Protocol::Mqtt5(Mqtt5Session {
                session_expiry: DEFAULT_SESSION_EXPIRY,
                will_delay: DEFAULT_WILL_DELAY,
            })
        );
        assert_eq!(
            protocol(&with(
                "  protocol: mqtt5\n  session_expiry: 1h\n  will_delay: 0s\n"
            )),
            Protocol::Mqtt5(Mqtt5Session {
                session_expiry: Duration::from_secs(3600),
                will_delay: Duration::ZERO,
            })
        );
    }

    #[test]
    fn a_bad_word_mqtt5_keys_under_mqtt311_and_too_long_delays_are_refused_in_place() {
        assert_eq!(
            errors(&with("  protocol: mqtt3\n")),
            [
                "6:13: uplink.protocol: unknown MQTT protocol \"mqtt3\": expected mqtt311 or \
                 mqtt5 (did you mean \"mqtt5\"?)"
            ]
        );
        assert_eq!(
            errors(&with("  session_expiry: 1h\n  will_delay: 5s\n")),
            [
                "6:19: uplink.session_expiry: only applies with protocol: mqtt5 (MQTT 3.1.1 has \
                 no such setting)",
                "7:15: uplink.will_delay: only applies with protocol: mqtt5 (MQTT 3.1.1 has no \
                 such setting)"
            ]
        );
        let too_long = errors(&with("  protocol: mqtt5\n  will_delay: 25h\n"));
        assert_eq!(too_long.len(), 1, "{too_long:?}");
        assert!(
            too_long[0].starts_with("7:15: uplink.will_delay: must be at most"),
            "{too_long:?}"
        );
    }

    #[test]
    fn mqtt5_beside_the_sparkplug_profile_is_refused() {
        let mut issues = Vec::new();
        let keys = Keys::default();
        let refused =
            validate_protocol(&keys, &Some("mqtt5".into()), None, None, true, &mut issues);
        assert_eq!(refused, None);
        assert_eq!(issues.len(), 1, "{issues:?}");
    }
}
