//! The keys of an MQTT client connection, which the `uplink` and `local` sections both have:
//! `url`, `client_id`, `keep_alive`, `topic_prefix`, `username` and `password_file`. Each rule is
//! written once here, so the two sections cannot drift apart; what differs (the defaults, TLS,
//! the uplink's reconnect and flow settings) stays with the section.
//!
//! The url is `mqtt://host[:port]` or `mqtts://host[:port]`, nothing more: paths, queries and
//! credentials are refused rather than ignored, so nothing written in it is silently dropped.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::decode::{DurationValue, Keys};
use super::error::Issue;
use super::rules::{file_path, is_host, is_identifier, optional, require};
use super::units::format_duration;

/// IANA port of unencrypted MQTT; used when an `mqtt://` url names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// IANA port of MQTT over TLS; used when an `mqtts://` url names none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;
/// The on-site broker's (a LAN: pings cost nothing there): the broker publishes the Last Will
/// within ~45 s (1.5 × keep alive) of a silent death. The uplink's default is longer
/// (`DEFAULT_UPLINK_KEEP_ALIVE`): a metered link pays for every ping.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// MQTT carries keep alive as a 16-bit number of seconds.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(65_535);
/// MQTT 3.1.1 only guarantees 23 characters; brokers in practice (mosquitto, EMQX, HiveMQ, AWS)
/// accept far more, and gateway ids built from site and device names often need it. 128 bounds
/// the CONNECT packet while fitting every real naming scheme we have seen.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The required `url`: host, port and whether it is `mqtts://`.
pub(crate) fn url(
    keys: &Keys,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<(String, u16, bool)> {
    let url = require(keys, "url", value, issues)?;
    parse_mqtt_url(url)
        .map_err(|error| issues.push(Issue::value(keys.path_of("url"), error.to_string())))
        .ok()
}

/// `client_id`, or `default` (which must fit too: it is derived from other names).
pub(crate) fn client_id(
    keys: &Keys,
    value: &Option<String>,
    default: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    let path = keys.path_of("client_id");
    match value {
        Some(id) if is_identifier(id) && id.len() <= MAX_CLIENT_ID_LEN => Some(id.clone()),
        Some(id) => {
            issues.push(Issue::value(
                path,
                format!(
                    "invalid client id {id:?}: use 1 to {MAX_CLIENT_ID_LEN} letters, digits, \"_\" or \"-\""
                ),
            ));
            None
        }
        None if keys.rejected.contains("client_id") => None,
        None => default.filter(|id| {
            let fits = id.len() <= MAX_CLIENT_ID_LEN;
            if !fits {
                issues.push(Issue::missing(
                    path.clone(),
                    format!(
                        "the default client id {id:?} is longer than {MAX_CLIENT_ID_LEN} characters: set {path}"
                    ),
                ));
            }
            fits
        }),
    }
}

/// `keep_alive`: whole seconds, because MQTT transmits it in seconds and rounding would silently
/// change what was asked for.
pub(crate) fn keep_alive(
    keys: &Keys,
    value: Option<DurationValue>,
    default: Duration,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    let keep_alive = optional(keys, "keep_alive", value.map(|d| d.0), default)?;
    let problem = if keep_alive < Duration::from_secs(1) || keep_alive > MAX_KEEP_ALIVE {
        "must be between 1s and 65535s"
    } else if keep_alive.subsec_nanos() != 0 {
        "must be a whole number of seconds (mqtt sends it in seconds)"
    } else {
        return Some(keep_alive);
    };
    issues.push(Issue::value(
        keys.path_of("keep_alive"),
        format!("{problem}, got {}", format_duration(keep_alive)),
    ));
    None
}

/// `topic_prefix`, or `default`.
pub(crate) fn topic_prefix(
    keys: &Keys,
    value: &Option<String>,
    default: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<String> {
    match value {
        Some(prefix) => match topic_prefix_problem(prefix) {
            None => Some(prefix.clone()),
            Some(problem) => {
                issues.push(Issue::value(keys.path_of("topic_prefix"), problem));
                None
            }
        },
        None if keys.rejected.contains("topic_prefix") => None,
        None => default,
    }
}

/// `username`, optional.
pub(crate) fn username(
    keys: &Keys,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Option<String>> {
    match value {
        Some(name) if name.is_empty() || name.contains('\0') => {
            issues.push(Issue::value(
                keys.path_of("username"),
                "must not be empty or contain a nul character",
            ));
            None
        }
        other => Some(other.clone()),
    }
}

/// `password_file`, optional, and only beside a `username`.
pub(crate) fn password_file(
    keys: &Keys,
    value: &Option<String>,
    username: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Option<PathBuf>> {
    let file = file_path(keys, "password_file", value, issues)?;
    if file.is_some() && username.is_none() && !keys.rejected.contains("username") {
        issues.push(Issue::value(
            keys.path_of("password_file"),
            "needs a username (mqtt 3.1.1 sends no password without one)",
        ));
        return None;
    }
    Some(file)
}

/// Why a url was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("invalid url {url:?}: {reason}")]
    Invalid { url: String, reason: &'static str },
}

/// Splits `mqtt://host[:port]` or `mqtts://host[:port]` into host, port (1883 or 8883 by
/// default) and whether TLS is wanted. IPv6 addresses go in
/// brackets (`mqtt://[::1]:1883`) and are returned without them, as `TcpStream::connect((host,
/// port))` wants. The scheme is case-insensitive; paths, queries and credentials are refused
/// rather than ignored, so nothing in the url is silently dropped.
pub(crate) fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), UrlError> {
    let invalid = |reason| UrlError::Invalid {
        url: url.to_owned(),
        reason,
    };
    let scheme_end = url
        .find("://")
        .ok_or(invalid("expected mqtt://host[:port]"))?;
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let tls = scheme.eq_ignore_ascii_case("mqtts");
    if !tls && !scheme.eq_ignore_ascii_case("mqtt") {
        return Err(invalid(
            "expected mqtt://host[:port] or mqtts://host[:port]",
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(invalid(
            "paths, queries and credentials are not supported: expected mqtt://host[:port]",
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (address, tail) = bracketed
            .split_once(']')
            .ok_or(invalid("unclosed \"[\" around an ipv6 address"))?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(invalid("invalid ipv6 address in brackets"));
        }
        let port = match tail {
            "" => None,
            tail => Some(
                tail.strip_prefix(':')
                    .ok_or(invalid("expected mqtt://host[:port]"))?,
            ),
        };
        (address, port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        if port.is_some_and(|port| port.contains(':')) {
            return Err(invalid(
                "ipv6 addresses must be in brackets, e.g. mqtt://[::1]:1883",
            ));
        }
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        if !is_host(host) {
            return Err(invalid("the host is not a valid host name or ip address"));
        }
        (host, port)
    };
    let port = match port {
        None if tls => DEFAULT_MQTTS_PORT,
        None => DEFAULT_MQTT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or(invalid("the port must be a number between 1 and 65535"))?,
    };
    Ok((host.to_owned(), port, tls))
}

/// Why a topic prefix cannot be used, or `None` if it can.
pub(crate) fn topic_prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("must not be empty")
    } else if prefix.contains(['+', '#']) {
        Some("must not contain the mqtt wildcards + or #")
    } else if prefix.starts_with('/') || prefix.ends_with('/') {
        Some("must not start or end with /")
    } else if prefix.contains('\0') {
        Some("must not contain a nul character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mqtt_urls() {
        let ok = |url: &str| parse_mqtt_url(url).unwrap();
        assert_eq!(
            ok("mqtt://127.0.0.1:1883"),
            ("127.0.0.1".to_owned(), 1883, false)
        );
        assert_eq!(ok("mqtt://broker"), ("broker".to_owned(), 1883, false));
        assert_eq!(ok("mqtts://broker"), ("broker".to_owned(), 8883, true));
        assert_eq!(ok("MQTTS://broker:443"), ("broker".to_owned(), 443, true));
        assert_eq!(
            ok("mqtt://broker.example.com:8883/"),
            ("broker.example.com".to_owned(), 8883, false)
        );
        assert_eq!(ok("mqtt://[fe80::1]"), ("fe80::1".to_owned(), 1883, false));
        assert_eq!(ok("Mqtt://[::1]:1"), ("::1".to_owned(), 1, false));
        for bad in [
            "broker:1883",
            "tcp://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://b:0",
            "mqtt://b:65536",
            "mqtt://b:",
            "mqtt://b:x",
            "mqtt://::1",
            "mqtt://[::1",
            "mqtt://[nope]:1",
            "mqtt://[::1]x",
            "mqtt://user:pw@b",
            "mqtt://b/topic",
            "mqtt://b?x=1",
            "mqtt://b c",
            "mqtt://b..c",
        ] {
            assert!(
                matches!(parse_mqtt_url(bad), Err(UrlError::Invalid { .. })),
                "{bad:?} gave {:?}",
                parse_mqtt_url(bad)
            );
        }
        assert_eq!(
            parse_mqtt_url("tcp://b").unwrap_err().to_string(),
            r#"invalid url "tcp://b": expected mqtt://host[:port] or mqtts://host[:port]"#
        );
    }
}
