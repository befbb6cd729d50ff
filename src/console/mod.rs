//! The local web console: what a technician at the cabinet needs without MQTT tools — whether
//! the devices answer and what they read, whether the cloud link is up, how much waits in the
//! queue, what commands did, what the log says. Read-only.
//!
//! # Shape
//! - Four server-rendered pages ([`pages`]): Overview (gateway, uplink, queue, drops, the rows
//!   the broker rejected with what to do, a chart of the last hour from [`history`]), Devices
//!   (health, counters, every point's value with unit, time, age and a sparkline, from
//!   [`values`]), Commands (the queue's remembered commands, read-only from `queue.db`), Log
//!   (the last lines, from [`log`]).
//! - One script and one stylesheet (`assets/`, embedded with `include_str!`, about 10 KiB
//!   together; no build step, no CDN): they open an event stream ([`events`]) that replaces
//!   fragments, updates values within [`events::TICK`] of the sample, ages times and draws
//!   sparklines. Without the script the pages still show the truth as of their load.
//! - Served by [`crate::http`] as one [`Route`], on its own address or beside `/metrics`.
//!
//! # What it costs the gateway
//! Nobody watching: the value table's record per sample ([`values`], a few hundred ns), one
//! history point every 10 s, an atomic load per log event. Each open page: one event-stream
//! task that wakes every 250 ms and reads watches and counters; it never makes a part wait.
//! Nothing here is on the path of a queued sample; a console that cannot bind its port or a
//! browser that misbehaves costs only itself.
//!
//! # Security
//! Read-only: `GET` and `HEAD` only, no form, no write path. With `auth` every request needs
//! HTTP Basic credentials from the password file ([`auth`], [`users`]); `check` refuses a
//! console on a non-loopback address without it. Responses carry a strict
//! `Content-Security-Policy` (own script and style only), `X-Frame-Options: DENY` and
//! `Cache-Control: no-store` for pages. `/metrics` on the same address stays without
//! credentials, as it always was (Prometheus scrapes it); give it its own address to keep it
//! apart.

pub mod auth;
pub mod events;
pub mod history;
pub mod log;
pub mod pages;
pub mod users;
pub mod values;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    RETRY_AFTER, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ConsoleConfig;
use crate::http::{self, Body, Connections, Responding, Route};
pub use log::LogLayer;
pub use values::{LatestValues, Tapped};
pub use view::Parts;

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The running console: what its pages read.
pub struct Console {
    pub parts: Parts,
    pub values: Arc<LatestValues>,
    pub history: history::SharedHistory,
    gate: Option<auth::Gate>,
    streams: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// Starts the console's helpers (the chart's sampler, the log ring) and returns its route for
/// the HTTP server; `values` is the table the bus owners' sink fills ([`Tapped`]).
pub fn start(
    settings: &ConsoleConfig,
    parts: Parts,
    values: Arc<LatestValues>,
    cancel: CancellationToken,
) -> Arc<dyn Route> {
    log::enable();
    let history = Arc::new(Mutex::new(history::QueueHistory::default()));
    tokio::spawn(history::sample(
        history.clone(),
        parts.queue.clone(),
        parts.uplink.clone(),
        cancel.clone(),
    ));
    Arc::new(Site(Arc::new(Console {
        parts,
        values,
        history,
        gate: settings
            .auth
            .as_ref()
            .map(|auth| auth::Gate::new(auth.password_file.clone())),
        streams: Arc::new(Semaphore::new(events::MAX_STREAMS)),
        cancel,
    })))
}

/// The console as a route of the HTTP server.
struct Site(Arc<Console>);

const PATHS: [&str; 7] = [
    "/",
    "/devices",
    "/commands",
    "/log",
    "/events",
    "/assets/console.js",
    "/assets/console.css",
];

impl Route for Site {
    fn claims(&self, path: &str) -> bool {
        PATHS.contains(&path)
    }

    fn respond(&self, request: Request<Incoming>, peer: SocketAddr) -> Responding {
        let console = self.0.clone();
        Box::pin(async move {
            let mut response = answer(console, request, peer).await;
            let headers = response.headers_mut();
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            );
            response
        })
    }

    fn connections(&self) -> Connections {
        Connections::Browsers
    }
}

async fn answer(
    console: Arc<Console>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if let Some(gate) = &console.gate {
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match gate.check(header, peer.ip()).await {
            auth::Verdict::Allow => {}
            auth::Verdict::Challenge => {
                // The gateway id is [A-Za-z0-9_-]: always a valid header value.
                let realm = format!(
                    "Basic realm=\"fieldrelay {}\", charset=\"UTF-8\"",
                    console.parts.gateway_id
                );
                let realm = HeaderValue::from_str(&realm)
                    .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"fieldrelay\""));
                return http::text_with(
                    StatusCode::UNAUTHORIZED,
                    "credentials required\n",
                    WWW_AUTHENTICATE,
                    realm,
                );
            }
            auth::Verdict::Wait(after) => {
                return http::text_with(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins; wait\n",
                    RETRY_AFTER,
                    HeaderValue::from(after.as_secs().max(1)),
                );
            }
        }
    }
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let parts = &console.parts;
    let main = match path {
        "/assets/console.js" => return asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/assets/console.css" => return asset(STYLE, "text/css; charset=utf-8"),
        "/events" => return stream(&console, query),
        "/" => {
            let points = history::read(&console.history, |h| h.points());
            let view = parts.overview();
            pages::overview(&view, &points)
        }
        "/devices" => {
            let version = console.values.version();
            let body = pages::devices(&parts.devices(Some(&console.values)));
            format!("<div id=\"since\" data-since=\"{version}\"></div>{body}")
        }
        "/commands" => pages::commands(&parts.commands(events::COMMAND_ROWS).await),
        "/log" => {
            let lines = log::lines_after(0);
            let last = lines.last().map_or(0, |l| l.seq);
            format!(
                "<div id=\"since\" data-since=\"{last}\"></div>{}",
                pages::log(&lines)
            )
        }
        _ => return http::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Body::full(pages::page(path, &parts.gateway_id, &main)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(text));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The pages name assets with the version (`?v=`): an upgrade loads the new ones.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=86400"));
    response
}

/// `/events?page=devices&since=17`.
fn stream(console: &Arc<Console>, query: &str) -> Response<Body> {
    let mut topic = None;
    let mut since = 0;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("page", page)) => topic = events::Topic::parse(page),
            Some(("since", value)) => since = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let Some(topic) = topic else {
        return http::text(StatusCode::BAD_REQUEST, "page= must name a console page\n");
    };
    let Ok(permit) = console.streams.clone().try_acquire_owned() else {
        return http::text_with(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open\n",
            RETRY_AFTER,
            HeaderValue::from_static("5"),
        );
    };
    let body = events::open(
        console.clone(),
        topic,
        since,
        permit,
        console.cancel.clone(),
    );
    let mut response = Response::new(Body::stream(Box::pin(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a browser loads besides the generated HTML fits the budget of a slow link.
    #[test]
    fn the_embedded_assets_are_small() {
        let total = SCRIPT.len() + STYLE.len();
        assert!(total < 150 * 1024, "{total} bytes");
        // The only URL is the SVG namespace, a name that is never fetched.
        let script = SCRIPT.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !script.contains("://") && !STYLE.contains("://"),
            "no CDN, no remote URL"
        );
    }

    #[test]
    fn claims_only_its_paths() {
        for path in PATHS {
            assert!(path == "/" || path.starts_with('/'));
        }
        assert!(!PATHS.contains(&"/metrics"));
    }
}
