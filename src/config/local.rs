//! The optional `local:` section: the on-site broker fieldrelay connects to as a client,
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

use super::client;
use super::decode::{Decoded, DurationValue};
use super::error::Issue;
use super::uplink::UplinkConfig;

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
    let endpoint = client::url(keys, &value.url, issues).and_then(|(host, port, tls)| {
        if tls {
            let url = value.url.as_deref().unwrap_or_default();
            issues.push(Issue::value(
                keys.path_of("url"),
                format!(
                    "invalid url {url:?}: the local broker is reached over plain mqtt:// (it \
                     runs on the gateway or its LAN; the shipped mosquitto snippet has no tls \
                     listener)"
                ),
            ));
            return None;
        }
        Some((host, port))
    });
    let default_id = uplink.map(|uplink| format!("{}-local", uplink.client_id));
    let client_id = client::client_id(keys, &value.client_id, default_id, issues);
    let keep_alive = client::keep_alive(keys, value.keep_alive, client::DEFAULT_KEEP_ALIVE, issues);
    let default_prefix = uplink.map(|uplink| uplink.topic_prefix.clone());
    let topic_prefix = client::topic_prefix(keys, &value.topic_prefix, default_prefix, issues);
    let username = client::username(keys, &value.username, issues);
    let password_file = client::password_file(keys, &value.password_file, &value.username, issues);
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
