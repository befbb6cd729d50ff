//! Secret values written into a configuration (pure): what a configuration pushed from the
//! cloud must not carry.
//!
//! A configuration names its secrets by file (`password_file`, `tls.key_file`): the secret
//! stays on the gateway, readable by the service user only, and the file's text is safe to
//! send, log and compare. A pushed file that holds a secret itself would put it on the broker,
//! in the result topics and in every copy of the file, so it is refused. What counts as one:
//! - a mapping key that names a secret (`password`, `passwd`, `secret`, `token`, `api_key`,
//!   `private_key`, `key`, any case) with a scalar value: the schema has no such key, so it can
//!   only be a secret put where a file path belongs;
//! - a PEM block (`-----BEGIN …`) anywhere in a string: an inline key or certificate.
//!
//! URLs with credentials (`mqtt://user:pass@host`) are already refused by the `url` rule.

use serde_json::Value;

use super::error::Issue;
use super::path::KeyPath;

/// Keys that name a secret value (compared lowercase).
const SECRET_KEYS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "private_key",
    "key",
];

/// Pushes an issue for every secret value in `document`.
pub(crate) fn refuse_inline_secrets(document: &Value, issues: &mut Vec<Issue>) {
    walk(document, &KeyPath::root(), issues);
}

/// Whether `key` names a secret value.
pub(crate) fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str())
}

fn walk(value: &Value, path: &KeyPath, issues: &mut Vec<Issue>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let at = path.key(key);
                let scalar = !matches!(value, Value::Object(_) | Value::Array(_) | Value::Null);
                if scalar && is_secret_key(key) {
                    issues.push(Issue::value(
                        at.clone(),
                        format!(
                            "a pushed configuration may not hold secret values: put the secret in \
                             a file on the gateway and name it (e.g. `{key}_file`)"
                        ),
                    ));
                } else {
                    walk(value, &at, issues);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &path.index(index), issues);
            }
        }
        Value::String(text) if text.contains("-----BEGIN") => issues.push(Issue::value(
            path.clone(),
            "a pushed configuration may not hold keys or certificates: put the PEM text in a \
             file on the gateway and name it (`tls.key_file`, `tls.cert_file`)",
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(yaml: &str) -> Vec<String> {
        let document: Value = serde_saphyr::from_str(yaml).unwrap();
        let mut issues = Vec::new();
        refuse_inline_secrets(&document, &mut issues);
        let mut paths: Vec<String> = issues.iter().map(|issue| issue.path.to_string()).collect();
        paths.sort();
        paths
    }

    #[test]
    fn secret_keys_and_pem_blocks_are_found_where_they_are() {
        let yaml = "uplink:\n  url: mqtt://b\n  password: hunter2\n  tls: {key_file: /k, Private_Key: x}\n\
                    devices: [{name: a, token: 7}]\nnote: \"-----BEGIN PRIVATE KEY-----\\nabc\"\n";
        assert_eq!(
            found(yaml),
            [
                "devices[0].token",
                "note",
                "uplink.password",
                "uplink.tls.Private_Key",
            ]
        );
    }

    #[test]
    fn file_paths_and_ordinary_values_pass() {
        let yaml = "uplink: {url: 'mqtts://b', username: u, password_file: /etc/p, \
                    tls: {key_file: /k, cert_file: /c}}\nconsole: {auth: {password_file: /p}}\n\
                    key_sets: [1, 2]\n";
        assert!(found(yaml).is_empty());
    }
}
