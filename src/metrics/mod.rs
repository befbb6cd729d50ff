//! The Prometheus endpoint: with `metrics: {listen: ADDR}` in the config, `GET /metrics` on ADDR
//! serves the text exposition format 0.0.4 (every metric is listed in docs/operations.md).
//!
//! # Design
//! - **Read at scrape time, from what the parts keep anyway.** The bus owners count in atomics
//!   ([`crate::modbus::DeviceCounters`]), the queue publishes a progress watch and drop counters;
//!   a [`Collector`] per part turns those into metrics when Prometheus asks. The hot paths never
//!   touch the registry, and no part depends on the metrics library.
//! - **[`Metrics`] is the seam.** `app` builds one, and every part with something to show adds a
//!   collector ([`Metrics::add`]) — or, for a part that prefers live metric objects, registers
//!   `prometheus-client` counters/gauges/families in [`Metrics::registry_mut`] and updates them
//!   itself. Adding e.g. the uplink's publish and reconnect counters is one collector reading
//!   the uplink's stats plus one `metrics.add(...)` line in `app`.
//! - **Served by [`crate::http`]** as one [`Endpoint`] route: hyper under the server's limits
//!   (see its header), on its own address or beside the console on the same one. The response
//!   is what the hand-written responder before it sent: `text/plain; version=0.0.4`,
//!   `Content-Length` and `Connection: close`, whatever else the address serves.
//!
//! # Failure behaviour
//! - The address cannot be bound (in use, not an address of this host): logged at error level
//!   and retried with backoff ([`crate::http::BIND_RETRY_INITIAL`] doubling); the gateway keeps
//!   polling and forwarding. Metrics are not worth losing data for.
//! - A collector fails to encode (cannot happen when writing to a `String`): `500` for that
//!   scrape.
//! - Shutdown: the listener and every open connection stop when the cancellation token fires.

pub mod commands;
pub mod devices;
mod encode;
pub mod process;
pub mod queue;
pub mod reload;
pub mod remote_config;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::http::{Body, Connections, Responding, Route};

pub use commands::CommandCollector;
pub use devices::DeviceCollector;
pub use process::ProcessCollector;
pub use queue::QueueCollector;
pub use reload::ReloadCollector;
pub use remote_config::PushCollector;
pub use uplink::UplinkCollector;

/// The content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics of the running gateway: a registry the parts register into.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry holding `fieldrelay_build_info` and the process metrics.
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
        };
        metrics.add(BuildInfo);
        metrics.add(ProcessCollector::new());
        metrics
    }

    /// Adds a part's collector; it is asked for its metrics at every scrape.
    pub fn add(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// For parts that keep live `prometheus-client` metrics (`Counter`, `Family`, ...).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every metric in the Prometheus text format; `None` if encoding failed.
    pub fn render(&self) -> Option<String> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).ok()?;
        Some(text)
    }
}

/// `fieldrelay_build_info{version="…"} 1`: which release runs, for dashboards and alerts.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(1i64);
        let mut metric = encoder.encode_descriptor(
            "fieldrelay_build_info",
            "Always 1; the version label names the running release",
            None,
            gauge.metric_type(),
        )?;
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        gauge.encode(metric.encode_family(&labels)?)
    }
}

/// `/metrics` as a route of the HTTP server.
pub struct Endpoint(Arc<Metrics>);

impl Endpoint {
    pub fn new(metrics: Metrics) -> Endpoint {
        Endpoint(Arc::new(metrics))
    }

    /// The answer to a scrape: the text, or `500` when it cannot be encoded.
    pub fn scrape(&self) -> Response<Body> {
        let mut response = match self.0.render() {
            Some(text) => {
                let mut response = Response::new(Body::full(text));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
                response
            }
            None => crate::http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            ),
        };
        // One scrape per connection, as Prometheus does it, even where browsers keep theirs.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl Route for Endpoint {
    fn claims(&self, path: &str) -> bool {
        path == "/metrics"
    }

    fn respond(&self, _request: Request<hyper::body::Incoming>, _peer: SocketAddr) -> Responding {
        let response = self.scrape();
        Box::pin(async move { response })
    }

    fn connections(&self) -> Connections {
        Connections::OnePerRequest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{serve_connection, Connections};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Through the HTTP server, a scrape is what the responder before it sent: the same body
    /// byte for byte (the process gauges aside, which move between two renderings), the same
    /// content type, `Content-Length`, `Connection: close`.
    #[tokio::test]
    async fn a_scrape_over_http_is_the_rendered_text() {
        let mut metrics = Metrics::new();
        let cloud = Arc::new(crate::commands::CommandStats::new("cloud"));
        cloud.busy.store(3, std::sync::atomic::Ordering::Relaxed);
        metrics.add(CommandCollector::new(vec![cloud]));
        let endpoint = Arc::new(Endpoint::new(metrics));
        let routes: Arc<[Arc<dyn Route>]> = Arc::from(vec![endpoint.clone() as Arc<dyn Route>]);
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let served = tokio::spawn(serve_connection(
            server,
            peer,
            routes,
            Connections::Browsers,
        ));
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        served.await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("\r\ncontent-type: {CONTENT_TYPE_TEXT}\r\n")),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        let steady = |text: &str| -> String {
            text.lines()
                .filter(|line| !line.starts_with("process_"))
                .map(|line| format!("{line}\n"))
                .collect()
        };
        let rendered = endpoint.0.render().unwrap();
        assert_eq!(steady(body), steady(&rendered));
        assert!(body.contains("\nfieldrelay_build_info{version="), "{body}");
        assert!(
            body.contains("\nfieldrelay_commands_busy_total{origin=\"cloud\"} 3\n"),
            "{body}"
        );
    }

    #[test]
    fn build_info_and_process_metrics_are_always_there() {
        let text = Metrics::new().render().unwrap();
        assert!(
            text.contains(&format!(
                "fieldrelay_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        let rss = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no rss in\n{text}"));
        assert!(rss > 100_000.0, "{rss}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
    }
}
