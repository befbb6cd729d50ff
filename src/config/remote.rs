//! The optional `remote_config:` section: whether the cloud may push a whole configuration
//! (`P/config/set`), how large it may be, and how long a pushed configuration has to prove it
//! works before it is rolled back.
//!
//! ```yaml
//! remote_config:
//!   allow: true          # default false: the config topics are not even subscribed
//!   max_size: 1MiB       # a larger push is refused unread
//!   confirm_within: 2m   # reconnect to the broker, devices answering again, or roll back
//! ```
//!
//! Rules: `max_size` is at least 1KiB and at most 16MiB (a pushed file is held in memory while
//! it is checked, and the configuration loader refuses larger files anyway);
//! `confirm_within` is at least 1s (the uplink needs a round trip to prove itself). Keys other
//! than `allow` without `allow: true` are accepted: a fleet may stage the limits first.

use std::time::Duration;

use serde::Deserialize;

use super::decode::{Decoded, DurationValue, Keys, SizeValue};
use super::error::Issue;
use super::path::KeyPath;
use super::rules::{duration_at_least, optional};

/// A whole configuration with hundreds of devices fits in a few hundred KiB of YAML.
pub const DEFAULT_REMOTE_MAX_SIZE: u64 = 1 << 20;
/// Long enough for a reconnect with backoff and a few polls of slow serial devices, short
/// enough that a gateway locked out by a bad push is back within minutes.
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(120);
const MIN_REMOTE_MAX_SIZE: u64 = 1 << 10;
const MAX_REMOTE_MAX_SIZE: u64 = 16 << 20;
const MIN_CONFIRM_WITHIN: Duration = Duration::from_secs(1);

/// The resolved `remote_config` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Whether `P/config/set` and `P/config/get` are subscribed at all.
    pub allow: bool,
    /// Largest `P/config/set` payload read, in bytes.
    pub max_size: u64,
    /// How long a pushed configuration has to confirm before it is rolled back.
    pub confirm_within: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            allow: false,
            max_size: DEFAULT_REMOTE_MAX_SIZE,
            confirm_within: DEFAULT_CONFIRM_WITHIN,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemote {
    pub allow: Option<bool>,
    pub max_size: Option<SizeValue>,
    pub confirm_within: Option<DurationValue>,
}

/// The `remote_config` section, defaults when it is not written.
pub(crate) fn validate_remote(
    raw: Option<&Decoded<RawRemote>>,
    root: &Keys,
    issues: &mut Vec<Issue>,
) -> Option<RemoteConfig> {
    let Some(Decoded { value, keys }) = raw else {
        return (!root.rejected.contains("remote_config")).then(RemoteConfig::default);
    };
    let allow = optional(keys, "allow", value.allow, false);
    let max_size = optional(
        keys,
        "max_size",
        value.max_size.map(|s| s.0),
        DEFAULT_REMOTE_MAX_SIZE,
    )
    .and_then(|size| {
        if (MIN_REMOTE_MAX_SIZE..=MAX_REMOTE_MAX_SIZE).contains(&size) {
            Some(size)
        } else {
            issues.push(Issue::value(
                keys.path_of("max_size"),
                format!("must be between 1KiB and 16MiB, got {size} bytes"),
            ));
            None
        }
    });
    let confirm_within = duration_at_least(
        keys,
        "confirm_within",
        value.confirm_within,
        DEFAULT_CONFIRM_WITHIN,
        MIN_CONFIRM_WITHIN,
        issues,
    );
    Some(RemoteConfig {
        allow: allow?,
        max_size: max_size?,
        confirm_within: confirm_within?,
    })
}

/// With `allow: true` the gateway owns `P/config/...`: a device named `config` would publish
/// its samples on those topics (`P/config/set` for a point `set`) and is refused at its name.
pub(crate) fn refuse_config_device<'a>(
    remote: Option<&RemoteConfig>,
    device_names: impl Iterator<Item = &'a str>,
    issues: &mut Vec<Issue>,
) {
    if !remote.is_some_and(|remote| remote.allow) {
        return;
    }
    for (index, name) in device_names.enumerate() {
        if name == "config" {
            issues.push(Issue::value(
                KeyPath::root().key("devices").index(index).key("name"),
                "`config` is reserved for the configuration topics (P/config/...) while \
                 remote_config.allow is true: rename the device",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{errors, VALID};
    use crate::config::{load_str, RemoteConfig};
    use std::time::Duration;

    #[test]
    fn off_by_default_and_every_key_resolved() {
        let config = load_str(VALID, "c.yaml").unwrap();
        assert_eq!(config.remote_config, RemoteConfig::default());
        assert!(!config.remote_config.allow);
        let text = format!(
            "{VALID}remote_config: {{allow: true, max_size: 64KiB, confirm_within: 30s}}\n"
        );
        let config = load_str(&text, "c.yaml").unwrap();
        assert_eq!(
            config.remote_config,
            RemoteConfig {
                allow: true,
                max_size: 64 << 10,
                confirm_within: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn bad_values_are_refused_each_at_its_key() {
        let text = format!(
            "{VALID}remote_config: {{allow: yes please, max_size: 100, confirm_within: 10ms, x: 1}}\n"
        );
        let found = errors(&text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().any(|e| e.contains("remote_config.max_size")));
        assert!(found
            .iter()
            .any(|e| e.contains("remote_config.confirm_within")));
        assert!(found.iter().any(|e| e.contains("remote_config.allow")));
        assert!(found.iter().any(|e| e.contains("remote_config.x")));
    }

    #[test]
    fn a_device_named_config_is_refused_only_when_pushes_are_allowed() {
        let named = VALID.replace("name: boiler", "name: config");
        assert!(load_str(&named, "c.yaml").is_ok());
        let allowed = format!("{named}remote_config: {{allow: true}}\n");
        assert_eq!(
            errors(&allowed),
            [
                "11:11: devices[0].name: `config` is reserved for the configuration topics \
                 (P/config/...) while remote_config.allow is true: rename the device"
            ]
        );
    }

    #[test]
    fn pushes_are_refused_with_the_sparkplug_profile() {
        let sparkplug = VALID.replace(
            "uplink:\n",
            "uplink:\n  profile: sparkplug\n  sparkplug: {group_id: g}\n",
        );
        assert!(
            load_str(&sparkplug, "c.yaml").is_ok(),
            "{:?}",
            errors(&sparkplug)
        );
        let allowed = format!("{sparkplug}remote_config: {{allow: true}}\n");
        let found = errors(&allowed);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("remote_config.allow: configurations are pushed"));
    }
}
