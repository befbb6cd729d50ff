//! The HTTP/1.1 server of `/metrics` and the console: hyper's HTTP/1 connection driver under
//! our own accept loop, which bounds what a client can cost.
//!
//! Why hyper (and not axum, nor the hand-written responder this replaced): the console needs
//! keep-alive, streamed responses (server-sent events) and a parser that has seen the whole
//! internet's traffic; hyper is that parser and nothing more. Routing is a fixed set of paths
//! that a `match` answers, so axum's router, extractors and tower layers would be code we
//! carry without using (docs/ARCHITECTURE.md has the measured size of each choice).
//!
//! # What a client can cost (the port may be reachable by anything on the plant network)
//!
//! - **Connections**: at most [`Connections::limit`] at once per listening address; further
//!   ones are closed at once. A scrape-only address ([`Connections::OnePerRequest`]) keeps the
//!   old endpoint's 8 and answers one request per connection; an address that serves browsers
//!   ([`Connections::Browsers`]) keeps connections alive and allows 32 (three consoles, each a
//!   page, its assets and an event stream, fit several times).
//! - **Request heads**: at most [`MAX_HEAD`] bytes (then `431`, sent by hyper), complete
//!   within [`HEAD_TIMEOUT`] of the first byte or of the connection going idle (then the
//!   connection is closed: slow-loris and idle keep-alive connections end the same way).
//!   Malformed heads get `400`. Request bodies are never read.
//! - **Responses**: every write must make progress within [`WRITE_TIMEOUT`] ([`deadline`]), so
//!   a peer that stops reading — a stalled browser, a dead scraper — frees its slot and its
//!   buffers instead of holding them.
//! - **Methods**: `GET` and `HEAD` only (`405` with `Allow` otherwise); unknown paths `404`.
//! - **Stops** with the cancellation token: the listener and every open connection (event
//!   streams included) are dropped.
//! - **Binding** is retried with backoff ([`BIND_RETRY_INITIAL`] doubling to
//!   [`BIND_RETRY_MAX`]): the gateway keeps polling and forwarding while the port is taken.

pub mod body;
pub mod deadline;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

pub use body::Body;

use crate::backoff::Backoff;
use deadline::Deadline;

/// Largest request head accepted (hyper's smallest buffer). Prometheus sends about 300 bytes, a
/// browser 1 to 2 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// A request head must be complete this long after its first byte, or after the previous
/// response on a kept-alive connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Every write of a response must make progress within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry after a failed bind; doubles with jitter.
pub const BIND_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Slowest retry: a port freed by another program is taken within a minute.
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(60);
/// Pause after a failed `accept` (out of file descriptors): retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A response being made.
pub type Responding = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// How the clients of an address use their connections; the trade-off is memory and slots
/// against round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Connections {
    /// One request per connection, 8 at once: a scraper opens a connection per scrape, and
    /// nothing stays open between scrapes.
    OnePerRequest,
    /// Kept alive, 32 at once: a browser loads a page and its assets over a few connections
    /// and holds one for its event stream.
    Browsers,
}

impl Connections {
    pub fn limit(self) -> usize {
        match self {
            Connections::OnePerRequest => 8,
            Connections::Browsers => 32,
        }
    }
}

/// A part of what an address serves: the paths it claims, and its answers.
pub trait Route: Send + Sync + 'static {
    /// Whether `path` is this route's.
    fn claims(&self, path: &str) -> bool;
    /// The answer to a `GET` or `HEAD` of a claimed path (hyper leaves out the body of a
    /// `HEAD` answer).
    fn respond(&self, request: Request<Incoming>, peer: SocketAddr) -> Responding;
    /// How its clients connect.
    fn connections(&self) -> Connections;
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::full(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A plain-text response with one more header (`Allow`, `Retry-After`, `WWW-Authenticate`).
pub fn text_with(
    status: StatusCode,
    body: impl Into<String>,
    name: HeaderName,
    value: HeaderValue,
) -> Response<Body> {
    let mut response = text(status, body);
    response.headers_mut().insert(name, value);
    response
}

/// Serves every `(address, route)` until `cancel` fires: one server per distinct address, with
/// the routes of that address (so `/metrics` and the console share a port when configured so).
pub async fn serve_all(sites: Vec<(SocketAddr, Arc<dyn Route>)>, cancel: CancellationToken) {
    let mut by_address: BTreeMap<SocketAddr, Vec<Arc<dyn Route>>> = BTreeMap::new();
    for (address, route) in sites {
        by_address.entry(address).or_default().push(route);
    }
    let servers = TaskTracker::new();
    for (address, routes) in by_address {
        servers.spawn(serve(address, routes.into(), cancel.clone()));
    }
    servers.close();
    servers.wait().await;
}

/// Serves `routes` on `listen` until `cancel` fires. Binding is retried until it works; the
/// function returns only on cancellation.
pub async fn serve(listen: SocketAddr, routes: Arc<[Arc<dyn Route>]>, cancel: CancellationToken) {
    let Some(listener) = bind(listen, &cancel).await else {
        return;
    };
    match listener.local_addr() {
        Ok(address) => info!(%address, "serving http"),
        Err(_) => info!(%listen, "serving http"),
    }
    let connections = routes
        .iter()
        .map(|route| route.connections())
        .max()
        .unwrap_or(Connections::OnePerRequest);
    let permits = Arc::new(Semaphore::new(connections.limit()));
    let open = TaskTracker::new();
    let mut accept_failures = 0u64;
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                accept_failures = 0;
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    debug!(%peer, "too many http connections; closing this one");
                    continue;
                };
                let routes = routes.clone();
                let cancel = cancel.clone();
                open.spawn(async move {
                    tokio::select! {
                        () = serve_connection(stream, peer, routes, connections) => {}
                        () = cancel.cancelled() => {}
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                if accept_failures == 0 {
                    warn!(%error, "http server cannot accept connections");
                }
                accept_failures += 1;
                pause(ACCEPT_PAUSE, &cancel).await;
            }
        }
    }
    open.close();
    open.wait().await;
}

async fn bind(listen: SocketAddr, cancel: &CancellationToken) -> Option<TcpListener> {
    let mut backoff = Backoff::new(BIND_RETRY_INITIAL, BIND_RETRY_MAX);
    loop {
        let bound = tokio::select! {
            () = cancel.cancelled() => return None,
            bound = TcpListener::bind(listen) => bound,
        };
        match bound {
            Ok(listener) => return Some(listener),
            Err(bind_error) => {
                let first = backoff.failures() == 0;
                let delay = backoff.next_delay_with(0.5 + 0.5 * fastrand::f64());
                if first {
                    error!(%listen, error = %bind_error, ?delay, "cannot listen for http; retrying (the gateway keeps running)");
                } else {
                    debug!(%listen, error = %bind_error, ?delay, "still cannot listen for http");
                }
                pause(delay, cancel).await;
            }
        }
    }
}

/// Serves one connection until the client or a limit ends it. Nothing here fails the caller.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    routes: Arc<[Arc<dyn Route>]>,
    connections: Connections,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Deadline::new(stream, WRITE_TIMEOUT));
    let service = hyper::service::service_fn(move |request| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(dispatch(&routes, request, peer).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        // A client that sends its request and closes its side (`printf … | nc`) still gets the
        // answer, as it did from the responder before; the write timeout bounds the wait.
        .half_close(true)
        .keep_alive(connections == Connections::Browsers)
        .serve_connection(io, service)
        .await;
    if let Err(error) = served {
        debug!(%peer, %error, "http connection ended");
    }
}

async fn dispatch(
    routes: &[Arc<dyn Route>],
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text_with(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
            ALLOW,
            HeaderValue::from_static("GET, HEAD"),
        );
    }
    let path = request.uri().path();
    match routes.iter().find(|route| route.claims(path)) {
        Some(route) => route.respond(request, peer).await,
        None => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Sleeps for `duration` unless `cancel` fires first.
pub(crate) async fn pause(duration: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests;
