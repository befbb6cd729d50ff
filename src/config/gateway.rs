//! The `gateway` section: the gateway's name and where it keeps its data.
//!
//! ```yaml
//! gateway:
//!   id: plant1-gw01               # letters, digits, _ and -; the default client id
//!   data_dir: /var/lib/fieldrelay # holds queue.db
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::client::MAX_CLIENT_ID_LEN;
use super::decode::Decoded;
use super::error::Issue;
use super::rules::{identifier, require};

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// `[A-Za-z0-9_-]+`; default client id and part of the default topic prefix.
    pub id: String,
    /// Directory holding `queue.db`; created if missing.
    pub data_dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub id: Option<String>,
    pub data_dir: Option<String>,
}

/// The id is at most [`MAX_CLIENT_ID_LEN`] characters because it is the uplink's default client
/// id.
pub(crate) fn validate_gateway(
    gateway: &Decoded<RawGateway>,
    issues: &mut Vec<Issue>,
) -> Option<GatewayConfig> {
    let (raw, keys) = (&gateway.value, &gateway.keys);
    let id = identifier(keys, "id", &raw.id, Some(MAX_CLIENT_ID_LEN), issues);
    let data_dir = require(keys, "data_dir", &raw.data_dir, issues).and_then(|dir| {
        let problem = if dir.is_empty() {
            "must not be empty"
        } else if dir.contains('\0') {
            "must not contain a nul character"
        } else {
            return Some(PathBuf::from(dir));
        };
        issues.push(Issue::value(keys.path_of("data_dir"), problem));
        None
    });
    Some(GatewayConfig {
        id: id?,
        data_dir: data_dir?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{errors, with};

    #[test]
    fn a_long_gateway_id_is_refused_because_it_is_the_default_client_id() {
        let long = "g".repeat(129);
        assert_eq!(
            errors(&with(&[("  id: gw1", &format!("  id: {long}"))])),
            ["2:7: gateway.id: must be at most 128 characters, got 129"]
        );
    }
}
