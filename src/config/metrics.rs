//! The optional `metrics:` section: where the Prometheus endpoint listens.
//!
//! ```yaml
//! metrics:
//!   listen: 127.0.0.1:9898
//! ```
//!
//! Absent section: no endpoint, no listening socket. The address is an IP literal and a port,
//! not a host name: what a name resolves to can change between start and reload, and an
//! endpoint without authentication should listen exactly where the file says.

use std::net::SocketAddr;

use serde::Deserialize;

use super::decode::{Decoded, Keys};
use super::error::Issue;
use super::rules::require;

/// Where `/metrics` is served (Prometheus text format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
}

/// `Some(None)`: no section. `None`: the section is invalid (issues pushed).
pub(crate) fn validate_metrics(
    metrics: Option<&Decoded<RawMetrics>>,
    issues: &mut Vec<Issue>,
) -> Option<Option<MetricsConfig>> {
    let Some(Decoded { value, keys }) = metrics else {
        return Some(None);
    };
    let listen = listen_address(keys, &value.listen, issues)?;
    Some(Some(MetricsConfig { listen }))
}

/// A section's required `listen` key (`metrics.listen`, `console.listen`): an ip address and a
/// port. `None`: missing or invalid (reported).
pub(crate) fn listen_address(
    keys: &Keys,
    listen: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<SocketAddr> {
    let listen = require(keys, "listen", listen, issues)?;
    parse_listen(listen)
        .map_err(|message| issues.push(Issue::value(keys.path_of("listen"), message)))
        .ok()
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.parse().map_err(|_| {
        format!(
            "invalid address {text:?}: expected an ip address and a port, such as \
             127.0.0.1:9898, 0.0.0.0:9898 or [::1]:9898"
        )
    })?;
    if address.port() == 0 {
        return Err("the port must be between 1 and 65535, got 0".to_owned());
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    use crate::config::testing::MINIMAL as BASE;

    fn errors(extra: &str) -> Vec<String> {
        match load_str(&format!("{BASE}{extra}"), "c.yaml") {
            Ok(config) => panic!("expected errors, got {:?}", config.metrics),
            Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_section_is_optional() {
        let config = load_str(BASE, "c.yaml").unwrap();
        assert_eq!(config.metrics, None);
    }

    #[test]
    fn listen_takes_ipv4_and_ipv6_addresses() {
        let config = load_str(
            &format!("{BASE}metrics: {{listen: 127.0.0.1:9898}}\n"),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("127.0.0.1:9898")
        );
        let config = load_str(
            &format!("{BASE}metrics: {{listen: '[::]:9898'}}\n"),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("[::]:9898")
        );
    }

    #[test]
    fn bad_sections_are_located() {
        assert_eq!(
            errors("metrics: {listen: 'localhost:9898'}\n"),
            [
                r#"c.yaml:5:19: metrics.listen: invalid address "localhost:9898": expected an ip address and a port, such as 127.0.0.1:9898, 0.0.0.0:9898 or [::1]:9898"#
            ]
        );
        assert_eq!(
            errors("metrics: {listen: '127.0.0.1:0'}\n"),
            ["c.yaml:5:19: metrics.listen: the port must be between 1 and 65535, got 0"]
        );
        assert_eq!(
            errors("metrics: {}\n"),
            ["c.yaml:5:10: metrics.listen: missing required key"]
        );
        assert_eq!(
            errors("metrics: {lissen: 127.0.0.1:1}\n"),
            [r#"c.yaml:5:11: metrics.lissen: unknown key "lissen" (did you mean "listen"?)"#]
        );
        assert_eq!(
            errors("metrics: 9898\n"),
            ["c.yaml:5:10: metrics: expected the metrics section (a mapping of keys to values), got a number"]
        );
    }
}
