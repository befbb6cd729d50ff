//! The byte stream under an MQTT connection: plain TCP (`mqtt://`) or TLS (`mqtts://`) with
//! rustls on the `ring` provider (aws-lc-sys cross-compiles badly to ARM), optionally presenting
//! a client certificate (mutual TLS, as AWS IoT and most managed brokers want).
//!
//! Nothing here knows about the queue or the uplink: a [`Dialer`] turns an endpoint into a
//! [`Stream`], so the on-site broker's connection reuses it as is.
//!
//! Certificates and keys are read once, when the dialer is built at start-up, by the loaders
//! `config::files` also checks them with (so `check` and `run` agree; a bad file is a
//! configuration error, exit 78). The password file is read at every dial, so a rotated
//! password is used at the next reconnect.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::files::{self, TlsError};
use crate::config::TlsConfig;

/// Why a dialer could not be built (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid tls server name {0:?}")]
    ServerName(String),
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
                let config = files::client_config(tls)?;
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
            Some(path) => files::read_password(path)?,
        };
        Ok(Some((user.clone(), password)))
    }
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
