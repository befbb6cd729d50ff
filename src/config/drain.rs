//! `uplink.drain` and `uplink.live_share`: in which order the uplink sends what the queue holds
//! once a connection is up, when a backlog waited for it.
//!
//! ```yaml
//! uplink:
//!   drain: live_first   # in_order (default) | live_first
//!   live_share: 25      # percent of max_inflight for fresh rows; only with live_first
//! ```
//!
//! `live_share` written beside `drain: in_order` is refused: it would be silently unused.

use super::decode::Keys;
use super::error::Issue;
use super::rules::{choice, number, Choice};

/// `live_share` when `drain: live_first` names none: a quarter of the window keeps fresh
/// samples flowing at a poll's pace while three quarters still drain the backlog.
pub const DEFAULT_LIVE_SHARE: u8 = 25;
/// A backlog always keeps a tenth of the window, so it drains even under a flood of fresh rows.
pub const MAX_LIVE_SHARE: u8 = 90;

/// The order in which queued rows go out after a connection came up with a backlog waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainOrder {
    /// Every row in `seq` order (the default and the v1 contract): samples reach the broker in
    /// order per point, and a fresh sample waits behind the whole backlog.
    #[default]
    InOrder,
    /// Rows committed since the connection came up go ahead of the backlog, using at most
    /// `live_share` percent of `max_inflight` while the backlog waits (all of it once the
    /// backlog is sent): fresh samples arrive within a round trip or two, at the price of
    /// order per point — a fresh sample may arrive before older ones of the same point.
    LiveFirst { live_share: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainWord {
    InOrder,
    LiveFirst,
}

impl Choice for DrainWord {
    const WHAT: &'static str = "drain order";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("in_order", DrainWord::InOrder),
        ("live_first", DrainWord::LiveFirst),
    ];
}

/// `uplink.drain` and `uplink.live_share`, checked together.
pub(crate) fn validate_drain(
    keys: &Keys,
    drain: &Option<String>,
    live_share: Option<i64>,
    issues: &mut Vec<Issue>,
) -> Option<DrainOrder> {
    let word = choice(keys, "drain", drain, DrainWord::InOrder, issues);
    match word? {
        DrainWord::InOrder => {
            if live_share.is_some() {
                issues.push(Issue::value(
                    keys.path_of("live_share"),
                    "only applies with drain: live_first (in_order sends every row in seq order)",
                ));
                return None;
            }
            Some(DrainOrder::InOrder)
        }
        DrainWord::LiveFirst => {
            let range = 1..=i64::from(MAX_LIVE_SHARE);
            number(
                keys,
                "live_share",
                live_share,
                DEFAULT_LIVE_SHARE,
                range,
                issues,
            )
            .map(|live_share| DrainOrder::LiveFirst { live_share })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testing::{errors, VALID};

    fn with(keys: &str) -> String {
        VALID.replace(
            "  url: mqtt://broker.local\n",
            &format!("  url: mqtt://broker.local\n{keys}"),
        )
    }

    #[test]
    fn in_order_by_default_and_live_first_with_a_quarter_of_the_window() {
        let drain = |text: &str| load_str(text, "c.yaml").unwrap().uplink.drain;
        assert_eq!(drain(VALID), DrainOrder::InOrder);
        assert_eq!(
            drain(&with("  drain: live_first\n")),
            DrainOrder::LiveFirst { live_share: 25 }
        );
        assert_eq!(
            drain(&with("  drain: live_first\n  live_share: 50\n")),
            DrainOrder::LiveFirst { live_share: 50 }
        );
    }

    #[test]
    fn a_bad_word_a_share_out_of_range_and_a_share_without_live_first_are_refused_in_place() {
        assert_eq!(
            errors(&with("  drain: newest_first\n")),
            ["6:10: uplink.drain: unknown drain order \"newest_first\": expected in_order or live_first"]
        );
        assert_eq!(
            errors(&with("  drain: live_first\n  live_share: 95\n")),
            ["7:15: uplink.live_share: must be between 1 and 90, got 95"]
        );
        assert_eq!(
            errors(&with("  live_share: 25\n")),
            ["6:15: uplink.live_share: only applies with drain: live_first (in_order sends every row in seq order)"]
        );
    }

    #[test]
    fn the_json_drain_order_is_refused_with_the_sparkplug_profile() {
        let sparkplug = VALID.replace(
            "uplink:\n",
            "uplink:\n  profile: sparkplug\n  sparkplug: {group_id: g}\n  drain: live_first\n",
        );
        let found = errors(&sparkplug);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("uplink.drain: the JSON profile's drain order"));
    }
}
