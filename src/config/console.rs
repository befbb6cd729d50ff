//! The optional `console:` section: where the local web console listens, and who may log in.
//!
//! ```yaml
//! console:
//!   listen: 0.0.0.0:8080
//!   auth:
//!     password_file: /etc/fieldrelay/console.passwd   # fieldrelay console-user add NAME
//! ```
//!
//! Absent section: no console, no listening socket, nothing kept for it. The address is an ip
//! literal and a port, as for `metrics.listen`. A console on any address but loopback must have
//! `auth`: the pages show the plant's values and the gateway's state to whoever reaches the
//! port, and a plant network is not a trusted one. On loopback (`127.0.0.0/8`, `::1`) `auth` is
//! optional: only the gateway's own users reach it (an SSH tunnel, a browser on the box).
//!
//! The password file is read by the running gateway (and re-read when it changes), not here:
//! `check` on a build machine must not need the site's secrets.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::decode::{decode_mapping, Decoded};
use super::error::Issue;
use super::metrics::listen_address;
use super::rules::require;

/// The resolved `console` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// `None` only on a loopback address.
    pub auth: Option<ConsoleAuth>,
}

/// HTTP Basic authentication against a file of `name:bcrypt-hash` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAuth {
    pub password_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsole {
    pub listen: Option<String>,
    /// Decoded separately into [`RawConsoleAuth`], key by key.
    pub auth: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsoleAuth {
    pub password_file: Option<String>,
}

/// `Some(None)`: no section. `None`: the section is invalid (issues pushed).
pub(crate) fn validate_console(
    console: Option<&Decoded<RawConsole>>,
    issues: &mut Vec<Issue>,
) -> Option<Option<ConsoleConfig>> {
    let Some(Decoded { value, keys }) = console else {
        return Some(None);
    };
    let auth = match &value.auth {
        None => Some(None),
        Some(raw) => decode_mapping::<RawConsoleAuth>(
            raw,
            &keys.path_of("auth"),
            "the console's auth settings",
            issues,
        )
        .and_then(|auth| validate_auth(&auth, issues))
        .map(Some),
    };
    let path = keys.path_of("listen");
    let listen = listen_address(keys, &value.listen, issues);
    let refused_auth = keys.rejected.contains("auth") || (value.auth.is_some() && auth.is_none());
    if let (Some(listen), Some(None), false) = (listen, &auth, refused_auth) {
        if !listen.ip().is_loopback() {
            issues.push(Issue::value(
                path,
                format!(
                    "the console listens on {listen}, which is not loopback: add auth: \
                     {{password_file: /etc/fieldrelay/console.passwd}} (users are added with \
                     `fieldrelay console-user add NAME`), or listen on 127.0.0.1"
                ),
            ));
            return None;
        }
    }
    Some(Some(ConsoleConfig {
        listen: listen?,
        auth: auth?,
    }))
}

fn validate_auth(auth: &Decoded<RawConsoleAuth>, issues: &mut Vec<Issue>) -> Option<ConsoleAuth> {
    let (raw, keys) = (&auth.value, &auth.keys);
    let file = require(keys, "password_file", &raw.password_file, issues)?;
    if file.is_empty() || file.contains('\0') {
        issues.push(Issue::value(
            keys.path_of("password_file"),
            "must be a file path",
        ));
        return None;
    }
    Some(ConsoleAuth {
        password_file: PathBuf::from(file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    use crate::config::testing::MINIMAL as BASE;

    fn console(extra: &str) -> Result<Option<ConsoleConfig>, Vec<String>> {
        load_str(&format!("{BASE}{extra}"), "c.yaml")
            .map(|config| config.console)
            .map_err(|errors| errors.errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_section_is_optional_and_loopback_needs_no_auth() {
        assert_eq!(console(""), Ok(None));
        assert_eq!(
            console("console: {listen: '127.0.0.1:8080'}\n"),
            Ok(Some(ConsoleConfig {
                listen: "127.0.0.1:8080".parse().unwrap(),
                auth: None
            }))
        );
        assert!(console("console: {listen: '[::1]:8080'}\n").is_ok());
        assert_eq!(
            console("console: {listen: '0.0.0.0:8080', auth: {password_file: /etc/p}}\n"),
            Ok(Some(ConsoleConfig {
                listen: "0.0.0.0:8080".parse().unwrap(),
                auth: Some(ConsoleAuth {
                    password_file: "/etc/p".into()
                })
            }))
        );
    }

    #[test]
    fn a_console_beyond_loopback_needs_auth() {
        assert_eq!(
            console("console:\n  listen: 0.0.0.0:8080\n"),
            Err(vec![
                "c.yaml:6:11: console.listen: the console listens on 0.0.0.0:8080, which is not \
                 loopback: add auth: {password_file: /etc/fieldrelay/console.passwd} (users are \
                 added with `fieldrelay console-user add NAME`), or listen on 127.0.0.1"
                    .to_owned()
            ])
        );
    }

    #[test]
    fn bad_sections_are_located_all_at_once() {
        assert_eq!(
            console("console: {listen: 'gw:80', auth: {password_fil: /p}}\n"),
            Err(vec![
                r#"c.yaml:5:19: console.listen: invalid address "gw:80": expected an ip address and a port, such as 127.0.0.1:9898, 0.0.0.0:9898 or [::1]:9898"#.to_owned(),
                r#"c.yaml:5:35: console.auth.password_fil: unknown key "password_fil" (did you mean "password_file"?)"#.to_owned(),
            ])
        );
        assert_eq!(
            console("console: {auth: /p}\n"),
            Err(vec![
                "c.yaml:5:10: console.listen: missing required key".to_owned(),
                "c.yaml:5:17: console.auth: expected the console's auth settings (a mapping of keys to values), got a string".to_owned(),
            ])
        );
        assert_eq!(
            console("console: {listen: '10.0.0.2:80', auth: {password_file: ''}}\n"),
            Err(vec![
                "c.yaml:5:56: console.auth.password_file: must be a file path".to_owned()
            ])
        );
    }
}
