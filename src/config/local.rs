//! The optional `local:` section (issue 6): the on-site broker fieldrelay connects to as a client,
//! to publish live values and status for HMIs and to take their commands.
//!
//! ```yaml
//! local:
//!   url: mqtt://127.0.0.1:1883        # the mosquitto the package configures
//!   username: fieldrelay              # the ACL's gateway account
//!   password_file: /etc/fieldrelay/local-password
//!   topic_prefix: fieldrelay/plant1-gw01   # default: uplink.topic_prefix
//!   client_id: plant1-gw01-local      # default: <uplink.client_id>-local
//!   keep_alive: 30s
//! ```
//!
//! Only `mqtt://`: the on-site broker is on the gateway itself or its LAN segment, and the shipped
//! mosquitto snippet has no TLS listener. The default client id differs from the uplink's, so a
//! site that points both sections at one broker does not make the two connections take each
//! other's session over.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::Issue;
use super::raw::{Decoded, DurationValue};
use super::rules::{is_identifier, optional};
use super::units::format_duration;
use super::validate::{
    parse_mqtt_url, topic_prefix_problem, DEFAULT_KEEP_ALIVE, MAX_CLIENT_ID_LEN, MAX_KEEP_ALIVE,
};
use super::UplinkConfig;

/// The resolved `local` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Resolved: `local.topic_prefix` or `uplink.topic_prefix`.
    pub topic_prefix: String,
    pub username: Option<String>,
    /// Read at every connect, like the uplink's.
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocal {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub keep_alive: Option<DurationValue>,
    pub topic_prefix: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
}

/// `Some(None)`: no section. `None`: the section is invalid (issues pushed). `uplink` is `None`
/// when the uplink section is invalid: the defaults derived from it are then not resolved (its
/// own errors are reported).
pub(crate) fn validate_local(
    raw: Option<&Decoded<RawLocal>>,
    uplink: Option<&UplinkConfig>,
    issues: &mut Vec<Issue>,
) -> Option<Option<LocalConfig>> {
    let Some(Decoded { value, keys }) = raw else {
        return Some(None);
    };
    let url = match &value.url {
        Some(url) => Some(url),
        None => {
            if !keys.rejected.contains("url") {
                let issue = if keys.present.contains("url") {
                    Issue::key(keys.path_of("url"), "a value is required")
                } else {
                    Issue::missing(keys.path_of("url"), "missing required key")
                };
                issues.push(issue);
            }
            None
        }
    };
    let endpoint = url.and_then(|url| match parse_mqtt_url(url) {
        Ok((_, _, true)) => {
            issues.push(Issue::value(
                keys.path_of("url"),
                format!(
                    "invalid url {url:?}: the local broker is reached over plain mqtt:// (it \
                     runs on the gateway or its LAN; the shipped mosquitto snippet has no tls \
                     listener)"
                ),
            ));
            None
        }
        Ok((host, port, false)) => Some((host, port)),
        Err(error) => {
            issues.push(Issue::value(keys.path_of("url"), error.to_string()));
            None
        }
    });
    let client_id = match &value.client_id {
        Some(id) if is_identifier(id) && id.len() <= MAX_CLIENT_ID_LEN => Some(id.clone()),
        Some(id) => {
            issues.push(Issue::value(
                keys.path_of("client_id"),
                format!(
                    "invalid client id {id:?}: use 1 to {MAX_CLIENT_ID_LEN} letters, digits, \"_\" or \"-\""
                ),
            ));
            None
        }
        None if keys.rejected.contains("client_id") => None,
        None => uplink.and_then(|uplink| {
            let id = format!("{}-local", uplink.client_id);
            if id.len() <= MAX_CLIENT_ID_LEN {
                Some(id)
            } else {
                issues.push(Issue::missing(
                    keys.path_of("client_id"),
                    format!(
                        "the default client id {id:?} is longer than {MAX_CLIENT_ID_LEN} characters: set local.client_id"
                    ),
                ));
                None
            }
        }),
    };
    let keep_alive = optional(
        keys,
        "keep_alive",
        value.keep_alive.map(|d| d.0),
        DEFAULT_KEEP_ALIVE,
    )
    .and_then(|keep_alive| {
        let path = keys.path_of("keep_alive");
        if keep_alive < Duration::from_secs(1) || keep_alive > MAX_KEEP_ALIVE {
            issues.push(Issue::value(
                path,
                format!(
                    "must be between 1s and 65535s, got {}",
                    format_duration(keep_alive)
                ),
            ));
            None
        } else if keep_alive.subsec_nanos() != 0 {
            issues.push(Issue::value(
                path,
                format!(
                    "must be a whole number of seconds (mqtt sends it in seconds), got {}",
                    format_duration(keep_alive)
                ),
            ));
            None
        } else {
            Some(keep_alive)
        }
    });
    let topic_prefix = match &value.topic_prefix {
        Some(prefix) => match topic_prefix_problem(prefix) {
            None => Some(prefix.clone()),
            Some(problem) => {
                issues.push(Issue::value(keys.path_of("topic_prefix"), problem));
                None
            }
        },
        None if keys.rejected.contains("topic_prefix") => None,
        None => uplink.map(|uplink| uplink.topic_prefix.clone()),
    };
    let username = match &value.username {
        Some(name) if name.is_empty() || name.contains('\0') => {
            issues.push(Issue::value(
                keys.path_of("username"),
                "must not be empty or contain a nul character",
            ));
            None
        }
        other => Some(other.clone()),
    };
    let password_file = match &value.password_file {
        Some(file) if file.is_empty() || file.contains('\0') => {
            issues.push(Issue::value(
                keys.path_of("password_file"),
                "must be a file path",
            ));
            None
        }
        Some(_) if value.username.is_none() && !keys.rejected.contains("username") => {
            issues.push(Issue::value(
                keys.path_of("password_file"),
                "needs a username (mqtt 3.1.1 sends no password without one)",
            ));
            None
        }
        other => Some(other.as_ref().map(PathBuf::from)),
    };
    let (host, port) = endpoint?;
    Some(Some(LocalConfig {
        host,
        port,
        client_id: client_id?,
        keep_alive: keep_alive?,
        topic_prefix: topic_prefix?,
        username: username?,
        password_file: password_file?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn config(local: &str) -> Result<Option<LocalConfig>, Vec<String>> {
        let text = format!(
            "gateway: {{id: gw, data_dir: /d}}
uplink: {{url: 'mqtt://cloud', topic_prefix: site/gw}}
buses: [{{name: plc1, type: tcp, host: h}}]
devices: [{{name: a, bus: plc1, points: [{{name: p, table: coil, address: 0, type: bool}}]}}]
{local}"
        );
        load_str(&text, "c.yaml").map(|c| c.local).map_err(|e| {
            e.errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        })
    }

    #[test]
    fn defaults_follow_the_uplink() {
        assert_eq!(config(""), Ok(None));
        assert_eq!(
            config("local: {url: 'mqtt://127.0.0.1', username: fieldrelay, password_file: /p}\n"),
            Ok(Some(LocalConfig {
                host: "127.0.0.1".into(),
                port: 1883,
                client_id: "gw-local".into(),
                keep_alive: Duration::from_secs(30),
                topic_prefix: "site/gw".into(),
                username: Some("fieldrelay".into()),
                password_file: Some(PathBuf::from("/p")),
            }))
        );
    }

    #[test]
    fn local_rules() {
        assert_eq!(
            config("local: {url: 'mqtts://h', password_file: /p, topic_prefix: 'a/#'}\n"),
            Err(vec![
                "local.url: invalid url \"mqtts://h\": the local broker is reached over plain mqtt:// (it runs on the gateway or its LAN; the shipped mosquitto snippet has no tls listener)".to_owned(),
                "local.password_file: needs a username (mqtt 3.1.1 sends no password without one)".to_owned(),
                "local.topic_prefix: must not contain the mqtt wildcards + or #".to_owned(),
            ])
        );
        assert_eq!(
            config("local: {client_id: 'a b'}\n"),
            Err(vec![
                "local.url: missing required key".to_owned(),
                "local.client_id: invalid client id \"a b\": use 1 to 128 letters, digits, \"_\" or \"-\"".to_owned(),
            ])
        );
    }

    #[test]
    fn keep_alive_is_refused_in_the_uplinks_words() {
        assert_eq!(
            config("local: {url: 'mqtt://h', keep_alive: 1500ms}\n"),
            Err(vec![
                "local.keep_alive: must be a whole number of seconds (mqtt sends it in seconds), got 1500ms".to_owned(),
            ])
        );
        assert_eq!(
            config("local: {url: 'mqtt://h', keep_alive: 0s}\n"),
            Err(vec![
                "local.keep_alive: must be between 1s and 65535s, got 0s".to_owned()
            ])
        );
    }
}
