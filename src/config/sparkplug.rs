//! `uplink.profile` and `uplink.sparkplug`: which contract the uplink speaks, and the Sparkplug
//! B 3.0 edge node's settings.
//!
//! ```yaml
//! uplink:
//!   profile: sparkplug          # json (default) | sparkplug
//!   sparkplug:
//!     group_id: plant1          # required with profile: sparkplug
//!     edge_node_id: gw01        # default: gateway.id
//!     primary_host_id: scada1   # optional
//!     aliases: true
//!     history: in_order         # in_order | live_first
//!     flush_max_metrics: 500
//! ```
//!
//! Ids are non-empty UTF-8 without `/`, `+` or `#` (Sparkplug's reserved characters), the rule
//! `sparkplug::topic::validate_id` applies on the other side (a test there keeps the two
//! equal). `uplink.sparkplug` beside `profile: json` is refused: it would be silently unused.

use serde::Deserialize;
use serde_json::Value;

use super::decode::{decode_mapping, Decoded, Keys};
use super::error::Issue;
use super::rules::{choice, number, optional, require, Choice};

/// Default of `flush_max_metrics`: a DDATA of 500 aliased metrics is a few KiB, well under
/// any broker's packet limit, and few enough that a host's ingest keeps up.
pub const DEFAULT_FLUSH_MAX_METRICS: u32 = 500;
/// Upper bound of `flush_max_metrics`: 100,000 metrics is ~2 MB, past which brokers refuse.
pub const MAX_FLUSH_MAX_METRICS: u32 = 100_000;

/// The contract the uplink speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkProfile {
    /// Fieldrelay's own JSON topics, QoS 1/2 per point (the v1 contract, default).
    Json,
    /// Sparkplug B 3.0: an edge node for SCADA hosts, QoS 0 data with the queue as history.
    Sparkplug(SparkplugConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProfileWord {
    Json,
    Sparkplug,
}

impl Choice for ProfileWord {
    const WHAT: &'static str = "uplink profile";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("json", ProfileWord::Json),
        ("sparkplug", ProfileWord::Sparkplug),
    ];
}

/// `uplink.sparkplug`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugConfig {
    pub group_id: String,
    /// Resolved: `edge_node_id` or `gateway.id`.
    pub edge_node_id: String,
    /// Births and data wait for this host's online STATE.
    pub primary_host_id: Option<String>,
    /// Numeric aliases in DATA after the births.
    pub aliases: bool,
    pub history: SparkplugHistory,
    /// Most metrics per historical DDATA.
    pub flush_max_metrics: u32,
}

/// When live data goes out while history is still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparkplugHistory {
    /// Backlog first, live behind it: every point's values reach the host in time order, its
    /// current values lag by the flush.
    InOrder,
    /// Live data as it comes, backlog beside it: current values stay current, the host gets
    /// historical values older than ones it already shows.
    LiveFirst,
}

impl Choice for SparkplugHistory {
    const WHAT: &'static str = "history order";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("in_order", SparkplugHistory::InOrder),
        ("live_first", SparkplugHistory::LiveFirst),
    ];
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSparkplug {
    pub group_id: Option<String>,
    pub edge_node_id: Option<String>,
    pub primary_host_id: Option<String>,
    pub aliases: Option<bool>,
    pub history: Option<String>,
    pub flush_max_metrics: Option<i64>,
}

/// Whether `id` is a valid Sparkplug id: non-empty, without `/`, `+` or `#`.
pub fn is_sparkplug_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#'])
}

/// `uplink.profile` and `uplink.sparkplug` of the uplink mapping `keys`. `gateway_id` is `None`
/// when the gateway section is invalid (the default edge node id is then not resolved).
pub(crate) fn validate_profile(
    keys: &Keys,
    profile: &Option<String>,
    sparkplug: Option<&Value>,
    gateway_id: Option<&str>,
    issues: &mut Vec<Issue>,
) -> Option<UplinkProfile> {
    let word = choice(keys, "profile", profile, ProfileWord::Json, issues)?;
    let path = keys.path_of("sparkplug");
    match (word, sparkplug) {
        (ProfileWord::Json, None) => Some(UplinkProfile::Json),
        (ProfileWord::Json, Some(_)) => {
            issues.push(Issue::key(
                path,
                "sparkplug settings need profile: sparkplug (the profile is json)",
            ));
            None
        }
        (ProfileWord::Sparkplug, None) => {
            if !keys.rejected.contains("sparkplug") {
                issues.push(Issue::missing(
                    path,
                    "profile: sparkplug needs this section (at least its group_id)",
                ));
            }
            None
        }
        (ProfileWord::Sparkplug, Some(value)) => {
            let decoded =
                decode_mapping::<RawSparkplug>(value, &path, "the sparkplug settings", issues)?;
            validate_sparkplug(&decoded, gateway_id, issues).map(UplinkProfile::Sparkplug)
        }
    }
}

fn sparkplug_id(
    keys: &Keys,
    key: &str,
    value: Option<&String>,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let value = value?;
    if is_sparkplug_id(value) {
        return Some(value.clone());
    }
    issues.push(Issue::value(
        keys.path_of(key),
        format!("invalid {key} {value:?}: must not be empty or contain /, + or #"),
    ));
    None
}

fn validate_sparkplug(
    decoded: &Decoded<RawSparkplug>,
    gateway_id: Option<&str>,
    issues: &mut Vec<Issue>,
) -> Option<SparkplugConfig> {
    let (raw, keys) = (&decoded.value, &decoded.keys);
    let group_id = require(keys, "group_id", &raw.group_id, issues)
        .and_then(|id| sparkplug_id(keys, "group_id", Some(id), issues));
    let edge_node_id = match &raw.edge_node_id {
        Some(id) => sparkplug_id(keys, "edge_node_id", Some(id), issues),
        None if keys.rejected.contains("edge_node_id") => None,
        None => gateway_id.map(str::to_owned),
    };
    let primary_host_id = match &raw.primary_host_id {
        Some(id) => sparkplug_id(keys, "primary_host_id", Some(id), issues).map(Some),
        None if keys.rejected.contains("primary_host_id") => None,
        None => Some(None),
    };
    let aliases = optional(keys, "aliases", raw.aliases, true);
    let history = choice(
        keys,
        "history",
        &raw.history,
        SparkplugHistory::InOrder,
        issues,
    );
    let flush_max_metrics = number(
        keys,
        "flush_max_metrics",
        raw.flush_max_metrics,
        DEFAULT_FLUSH_MAX_METRICS,
        1..=i64::from(MAX_FLUSH_MAX_METRICS),
        issues,
    );
    Some(SparkplugConfig {
        group_id: group_id?,
        edge_node_id: edge_node_id?,
        primary_host_id: primary_host_id?,
        aliases: aliases?,
        history: history?,
        flush_max_metrics: flush_max_metrics?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testing::{errors, with};

    fn uplink(lines: &str) -> String {
        with(&[("  url: mqtt://broker.local\n", lines)])
    }

    #[test]
    fn json_is_the_default_and_sparkplug_resolves_its_defaults() {
        let config = load_str(&uplink("  url: mqtt://b\n"), "c.yaml").unwrap();
        assert_eq!(config.uplink.profile, UplinkProfile::Json);
        let text =
            uplink("  url: mqtt://b\n  profile: sparkplug\n  sparkplug: {group_id: plant 1}\n");
        let config = load_str(&text, "c.yaml").unwrap();
        assert_eq!(
            config.uplink.profile,
            UplinkProfile::Sparkplug(SparkplugConfig {
                group_id: "plant 1".into(),
                edge_node_id: "gw1".into(),
                primary_host_id: None,
                aliases: true,
                history: SparkplugHistory::InOrder,
                flush_max_metrics: DEFAULT_FLUSH_MAX_METRICS,
            })
        );
        let text = uplink(
            "  url: mqtt://b\n  profile: sparkplug\n  sparkplug:\n    group_id: g\n    edge_node_id: e\n    primary_host_id: scada1\n    aliases: false\n    history: live_first\n    flush_max_metrics: 10\n",
        );
        let UplinkProfile::Sparkplug(s) = load_str(&text, "c.yaml").unwrap().uplink.profile else {
            panic!("not sparkplug")
        };
        assert_eq!(
            (s.edge_node_id.as_str(), s.primary_host_id.as_deref()),
            ("e", Some("scada1"))
        );
        assert_eq!(
            (s.aliases, s.history, s.flush_max_metrics),
            (false, SparkplugHistory::LiveFirst, 10)
        );
    }

    #[test]
    fn sparkplug_keys_are_refused_at_their_place() {
        assert_eq!(
            errors(&uplink("  url: mqtt://b\n  profile: sparkplugb\n")),
            [
                r##"6:12: uplink.profile: unknown uplink profile "sparkplugb": expected json or sparkplug (did you mean "sparkplug"?)"##
            ]
        );
        assert_eq!(
            errors(&uplink("  url: mqtt://b\n  profile: sparkplug\n")),
            ["5:3: uplink.sparkplug: profile: sparkplug needs this section (at least its group_id)"]
        );
        assert_eq!(
            errors(&uplink("  url: mqtt://b\n  sparkplug: {group_id: g}\n")),
            ["6:3: uplink.sparkplug: sparkplug settings need profile: sparkplug (the profile is json)"]
        );
        assert_eq!(
            errors(&uplink(
                "  url: mqtt://b\n  profile: sparkplug\n  sparkplug:\n    edge_node_id: a/b\n    primary_host_id: '#'\n    history: newest\n    flush_max_metrics: 0\n    alias: true\n"
            )),
            [
                "8:5: uplink.sparkplug.group_id: missing required key",
                r#"8:19: uplink.sparkplug.edge_node_id: invalid edge_node_id "a/b": must not be empty or contain /, + or #"#,
                r##"9:22: uplink.sparkplug.primary_host_id: invalid primary_host_id "#": must not be empty or contain /, + or #"##,
                r#"10:14: uplink.sparkplug.history: unknown history order "newest": expected in_order or live_first"#,
                "11:24: uplink.sparkplug.flush_max_metrics: must be between 1 and 100000, got 0",
                r#"12:5: uplink.sparkplug.alias: unknown key "alias" (did you mean "aliases"?)"#,
            ]
        );
    }
}
