//! The files a configuration names: the uplink's `tls.ca_file`, `tls.cert_file`, `tls.key_file`
//! (or the system CA bundle an `mqtts://` url trusts without them) and `password_file`, and the
//! on-site broker's `password_file`.
//!
//! [`load`](super::load) opens and parses every one of them, so `check` finds a missing or
//! broken file and `run` refuses it with exit 78 (instead of failing at the first dial and
//! being restarted forever). Each problem is an [`Issue`] at the key that names the file, like
//! every other configuration error, and every file is checked even when other parts of the
//! configuration are invalid. The same loaders ([`client_config`], [`read_password`]) build
//! what the uplink dials with, so `check` and `run` cannot disagree about a file.
//!
//! `check` run as root also asks whether the service user (`fieldrelay`, when it exists) may
//! read each file ([`super::access`]): root reads anything, the service does not.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::access::ServiceUser;
use super::client::parse_mqtt_url;
use super::decode::Decoded;
use super::error::Issue;
use super::local::RawLocal;
use super::path::KeyPath;
use super::uplink::{RawUplink, TlsConfig, DEFAULT_CA_FILE};

/// Which file of a TLS setup a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct TlsFileError {
    pub file: TlsFile,
    pub path: PathBuf,
    pub reason: String,
}

/// Why the TLS setup as a whole cannot be built (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

fn file_error(file: TlsFile, path: &Path, reason: impl std::fmt::Display) -> TlsFileError {
    TlsFileError {
        file,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn pem_problem(path: &Path, error: pem::Error) -> String {
    match error {
        pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        e => format!("{}: {e}", path.display()),
    }
}

/// The PEM certificates in `path` (at least one).
pub fn certificates(
    file: TlsFile,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(file, path, pem_problem(path, e)))?;
    if certs.is_empty() {
        return Err(file_error(
            file,
            path,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The trust anchors in `path`, each one parsed.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(TlsFile::Ca, path)? {
        roots.add(cert).map_err(|e| {
            file_error(
                TlsFile::Ca,
                path,
                format!("{}: a certificate cannot be used: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

/// The private key in `path` (PKCS#8, PKCS#1 or SEC1 PEM), usable with the ring provider.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => format!(
                "{} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
                path.display()
            ),
            e => pem_problem(path, e),
        };
        file_error(TlsFile::Key, path, reason)
    })?;
    rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| file_error(TlsFile::Key, path, format!("{}: {e}", path.display())))?;
    Ok(key)
}

/// rustls client configuration on the ring provider (aws-lc-sys cross-compiles badly to ARM):
/// TLS 1.2 and 1.3, the broker verified against `ca_file` (server name = the url's host), a
/// client certificate when configured (a key that does not match it is refused here).
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots(&tls.ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = certificates(TlsFile::Cert, cert_file)?;
            let key = private_key(key_file)?;
            builder.with_client_auth_cert(chain, key)?
        }
    })
}

/// The password in `path`: the file's text less one trailing newline (`\n` or `\r\n`).
pub fn read_password(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read password file {}: {e}", path.display()),
        )
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// A file named by the configuration, with the key it is named at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileRef {
    /// `uplink.tls` (or the system bundle of an `mqtts://` url without one). `ca` is located at
    /// `uplink.url` when it is the default.
    Tls {
        ca: (KeyPath, PathBuf),
        ca_written: bool,
        client: Option<[(KeyPath, PathBuf); 2]>,
    },
    Password((KeyPath, PathBuf)),
}

/// The files `raw` names, from what was written (so they are checked whatever else is wrong).
/// Values that are not usable paths are left to validation, which reports them.
pub(crate) fn references(
    uplink: Option<&Decoded<RawUplink>>,
    local: Option<&Decoded<RawLocal>>,
) -> Vec<FileRef> {
    let mut refs = Vec::new();
    let path = |at: KeyPath, value: &Option<String>| {
        value
            .as_ref()
            .filter(|text| !text.is_empty() && !text.contains('\0'))
            .map(|text| (at, PathBuf::from(text)))
    };
    if let Some(uplink) = uplink {
        let (value, keys) = (&uplink.value, &uplink.keys);
        let mqtts = value
            .url
            .as_deref()
            .and_then(|url| parse_mqtt_url(url).ok())
            .is_some_and(|(_, _, tls)| tls);
        if mqtts {
            let tls = value.tls.as_ref();
            let text = |key: &str| {
                tls.and_then(|t| t.get(key))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let tls_path = keys.path_of("tls");
            let written = path(tls_path.key("ca_file"), &text("ca_file"));
            let ca_written = written.is_some();
            let ca =
                written.unwrap_or_else(|| (keys.path_of("url"), PathBuf::from(DEFAULT_CA_FILE)));
            let client = match (
                path(tls_path.key("cert_file"), &text("cert_file")),
                path(tls_path.key("key_file"), &text("key_file")),
            ) {
                (Some(cert), Some(key)) => Some([cert, key]),
                _ => None,
            };
            refs.push(FileRef::Tls {
                ca,
                ca_written,
                client,
            });
        }
        refs.extend(path(keys.path_of("password_file"), &value.password_file).map(password));
    }
    if let Some(local) = local {
        let at = local.keys.path_of("password_file");
        refs.extend(path(at, &local.value.password_file).map(password));
    }
    refs
}

fn password(file: (KeyPath, PathBuf)) -> FileRef {
    FileRef::Password(file)
}

/// Opens and parses every file of `refs`, pushing one issue per problem; with `user`, also
/// whether that user may read each file.
pub(crate) fn check(refs: &[FileRef], user: Option<&ServiceUser>, issues: &mut Vec<Issue>) {
    let mut readable = Vec::new();
    for file in refs {
        match file {
            FileRef::Tls {
                ca,
                ca_written,
                client,
            } => {
                match roots(&ca.1) {
                    Ok(_) => readable.push(ca),
                    Err(error) if *ca_written => issues.push(Issue::value(ca.0.clone(), error.reason)),
                    Err(error) => issues.push(Issue::value(
                        ca.0.clone(),
                        format!(
                            "mqtts:// without tls.ca_file trusts the system bundle, and {} (install ca-certificates or set uplink.tls.ca_file)",
                            error.reason
                        ),
                    )),
                }
                if let Some([cert, key]) = client {
                    check_client(cert, key, &mut readable, issues);
                }
            }
            FileRef::Password(file) => match read_password(&file.1) {
                Ok(_) => readable.push(file),
                Err(error) => issues.push(Issue::value(file.0.clone(), error.to_string())),
            },
        }
    }
    if let Some(user) = user {
        for (at, path) in readable {
            if let Err(reason) = user.may_read(path) {
                issues.push(Issue::value(at.clone(), reason));
            }
        }
    }
}

fn check_client<'r>(
    cert: &'r (KeyPath, PathBuf),
    key: &'r (KeyPath, PathBuf),
    readable: &mut Vec<&'r (KeyPath, PathBuf)>,
    issues: &mut Vec<Issue>,
) {
    let chain = certificates(TlsFile::Cert, &cert.1)
        .map_err(|error| issues.push(Issue::value(cert.0.clone(), error.reason)));
    let private =
        private_key(&key.1).map_err(|error| issues.push(Issue::value(key.0.clone(), error.reason)));
    let (Ok(chain), Ok(private)) = (chain, private) else {
        return;
    };
    readable.extend([cert, key]);
    let provider = rustls::crypto::ring::default_provider();
    if let Err(error) = rustls::sign::CertifiedKey::from_der(chain, private, &provider) {
        issues.push(Issue::value(
            key.0.clone(),
            format!(
                "{} does not go with the certificate in {}: {error}",
                key.1.display(),
                cert.1.display()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode_sections;
    use crate::config::load::load_document;

    fn refs(uplink: &str, local: &str) -> Vec<FileRef> {
        let text = format!("gateway: {{id: gw}}\nuplink:\n{uplink}{local}");
        load_document(&text, "c.yaml", |document, issues| {
            decode_sections(document, issues)
                .map(|raw| references(raw.uplink.as_ref(), raw.local.as_ref()))
        })
        .unwrap_or_else(|errors| panic!("{errors}"))
    }

    #[test]
    fn every_named_file_is_found_at_its_key() {
        assert_eq!(refs("  url: mqtt://b\n", ""), []);
        // mqtts:// without tls trusts the system bundle: a problem with it is at the url.
        assert_eq!(
            refs("  url: mqtts://b\n", ""),
            [FileRef::Tls {
                ca: (
                    KeyPath::root().key("uplink").key("url"),
                    DEFAULT_CA_FILE.into()
                ),
                ca_written: false,
                client: None,
            }]
        );
        let tls = "  url: mqtts://b\n  username: u\n  password_file: /pw\n  tls: {ca_file: /ca, cert_file: /c, key_file: /k}\n";
        let at = |key: &str| KeyPath::root().key("uplink").key("tls").key(key);
        assert_eq!(
            refs(
                tls,
                "local: {url: 'mqtt://l', username: u, password_file: /lpw}\n"
            ),
            [
                FileRef::Tls {
                    ca: (at("ca_file"), "/ca".into()),
                    ca_written: true,
                    client: Some([
                        (at("cert_file"), "/c".into()),
                        (at("key_file"), "/k".into())
                    ]),
                },
                FileRef::Password((
                    KeyPath::root().key("uplink").key("password_file"),
                    "/pw".into()
                )),
                FileRef::Password((
                    KeyPath::root().key("local").key("password_file"),
                    "/lpw".into()
                )),
            ]
        );
        // tls under mqtt:// is refused by validation; nothing to open.
        assert_eq!(refs("  url: mqtt://b\n  tls: {ca_file: /ca}\n", ""), []);
    }
}
