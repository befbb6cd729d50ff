//! The running configuration as `P/config/current` shows it (pure): the YAML file as a JSON
//! tree, with what could help an attacker replaced by [`PLACEHOLDER`].
//!
//! Replaced: the paths of files that hold secrets (`password_file`, `key_file`: where the
//! secret lives is the first thing to look for), and any value under a key that names a secret
//! (`password`, `token`, …: a file written on the gateway may hold one even though a push may
//! not). CA and certificate paths, hosts, device maps are shown as they are: they are what a
//! fleet tool compares. JSON is YAML, so the tree can be edited and pushed back once the
//! placeholders are filled in.

use serde_json::Value;

use crate::config::is_secret_key;

/// What a secret value is replaced with.
pub const PLACEHOLDER: &str = "<redacted>";

/// Keys whose values are the paths of secret files.
const SECRET_FILES: [&str; 2] = ["password_file", "key_file"];

/// `text` (a YAML file) as a JSON tree with its secrets replaced; `None` if it is not YAML.
pub fn redacted(text: &str) -> Option<Value> {
    let mut tree: Value = serde_saphyr::from_str(text).ok()?;
    redact(&mut tree);
    Some(tree)
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let secret = SECRET_FILES.contains(&key.as_str()) || is_secret_key(key);
                if secret && !matches!(value, Value::Null) {
                    *value = Value::String(PLACEHOLDER.to_owned());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_files_and_values_are_replaced_everything_else_kept() {
        let text = "gateway: {id: gw}\nuplink:\n  url: mqtts://b\n  username: u\n  password_file: /etc/p\n  \
                    tls: {ca_file: /ca, key_file: /k}\nlocal: {password_file: /lp, password: x}\n";
        assert_eq!(
            redacted(text).unwrap(),
            json!({
                "gateway": {"id": "gw"},
                "uplink": {"url": "mqtts://b", "username": "u", "password_file": PLACEHOLDER,
                           "tls": {"ca_file": "/ca", "key_file": PLACEHOLDER}},
                "local": {"password_file": PLACEHOLDER, "password": PLACEHOLDER}
            })
        );
        assert_eq!(redacted("a: [unclosed"), None);
    }
}
