//! Which configuration runs, as the birth and the health report say it (`"config":{"hash":…,
//! "id":…}`): the SHA-256 of the configuration file's bytes, and the id of the push that wrote
//! it when a pushed configuration runs.
//!
//! The hash is that of the file as it is on disk, so `sha256sum /etc/fieldrelay/config.yaml`
//! on the gateway, or of the text a fleet tool pushed, gives the same value. The id is kept in
//! a small file beside the configuration ([`origin_path`], JSON `{"id":…,"hash":…}`) written
//! when a push is confirmed; it counts only while its hash is the file's, so a file edited on
//! the gateway afterwards runs without an id.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The running configuration's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStamp {
    /// Lowercase hex SHA-256 of the file's bytes.
    pub hash: String,
    /// The `id` of the push that wrote the file; `None` for a file written on the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ConfigStamp {
    /// The stamp of the file `text`, set by the push `id` (if any).
    pub fn of_text(text: &[u8], id: Option<String>) -> ConfigStamp {
        ConfigStamp {
            hash: sha256_hex(text),
            id,
        }
    }

    /// The stamp of the configuration file at `path` (its id from [`origin_path`] if that
    /// names the same bytes); `None` when the file cannot be read.
    pub fn read(path: &Path) -> Option<ConfigStamp> {
        let text = std::fs::read(path).ok()?;
        let hash = sha256_hex(&text);
        let id = std::fs::read(origin_path(path))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ConfigStamp>(&bytes).ok())
            .filter(|origin| origin.hash == hash)
            .and_then(|origin| origin.id);
        Some(ConfigStamp { hash, id })
    }
}

/// Where the id of the push that wrote the configuration at `path` is kept.
pub fn origin_path(path: &Path) -> PathBuf {
    sibling(path, "origin")
}

/// `path` with `.suffix` appended to its file name (`config.yaml.origin`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256sum_and_the_id_counts_only_for_its_own_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        assert_eq!(ConfigStamp::read(&path).unwrap().id, None);
        let origin = ConfigStamp::of_text(b"a: 1\n", Some("push-7".into()));
        std::fs::write(origin_path(&path), serde_json::to_vec(&origin).unwrap()).unwrap();
        assert_eq!(ConfigStamp::read(&path).unwrap(), origin);
        std::fs::write(&path, "a: 2\n").unwrap();
        assert_eq!(ConfigStamp::read(&path).unwrap().id, None);
        assert_eq!(
            origin_path(&path).file_name().unwrap(),
            "config.yaml.origin"
        );
    }
}
