//! The byte stream under an MQTT connection: plain TCP (`mqtt://`) or TLS (`mqtts://`) with
//! rustls on the `ring` provider (aws-lc-sys cross-compiles badly to ARM), optionally presenting
//! a client certificate (mutual TLS, as AWS IoT and most managed brokers want).
//!
//! Nothing here knows about the queue or the uplink: a [`Dialer`] turns an endpoint into a
//! [`Stream`], so the local-broker connection of issue 6 reuses it as is.
//!
//! Certificates and keys are read once, when the dialer is built at start-up (a missing or
//! unreadable file is a start-up error naming the file). The password file is read at every
//! dial, so a rotated password is used at the next reconnect.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsConfig;

/// Why a dialer could not be built (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("invalid tls server name {0:?}")]
    ServerName(String),
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// TCP or TLS over TCP.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Dials one endpoint, the same way every time.
#[derive(Clone)]
pub struct Dialer {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .finish()
    }
}

impl Dialer {
    /// Builds the dialer, loading the TLS material now so that a bad file stops the start.
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<&TlsConfig>,
        username: Option<String>,
        password_file: Option<PathBuf>,
    ) -> Result<Dialer, TransportError> {
        let tls = match tls {
            None => None,
            Some(tls) => {
                let config = client_config(tls)?;
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| TransportError::ServerName(host.to_owned()))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Dialer {
            host: host.to_owned(),
            port,
            tls,
            username,
            password_file,
        })
    }

    /// `host:port`, for logs.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// TCP connect, then the TLS handshake if configured. The caller bounds it with a deadline.
    pub async fn dial(&self) -> io::Result<Stream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Tcp(tcp)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }

    /// Username and password for the CONNECT, reading the password file now.
    pub fn credentials(&self) -> io::Result<Option<(String, String)>> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password_file {
            None => String::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot read password file {}: {e}", path.display()),
                    )
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_owned()
            }
        };
        Ok(Some((user.clone(), password)))
    }
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TransportError {
    TransportError::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TransportError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// rustls client configuration on the ring provider: TLS 1.2 and 1.3, the broker verified
/// against `ca_file` (server name = the url's host, DNS name or IP address).
fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("ca certificates", &tls.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| file_error("ca certificates", &tls.ca_file, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = certificates("client certificate", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| file_error("client key", key_file, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(config)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
