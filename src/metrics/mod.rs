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
//! - **Tiny HTTP.** [`http`] is a bounded, hand-written HTTP/1.x responder (see its header for
//!   the limits): a scrape endpoint needs one request line, and an HTTP stack would dominate the
//!   binary's size on a gateway that should stay a few MB.
//!
//! # Failure behaviour
//! - The address cannot be bound (in use, not an address of this host): logged at error level
//!   and retried with backoff ([`BIND_RETRY_INITIAL`] doubling to [`BIND_RETRY_MAX`]); the
//!   gateway keeps polling and forwarding. Metrics are not worth losing data for.
//! - A collector fails to encode (cannot happen when writing to a `String`): `500` for that
//!   scrape.
//! - Shutdown: the listener and every open connection stop when the cancellation token fires.

pub mod commands;
pub mod devices;
mod encode;
pub mod http;
pub mod process;
pub mod queue;
pub mod reload;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::backoff::Backoff;

pub use commands::CommandCollector;
pub use devices::DeviceCollector;
pub use process::ProcessCollector;
pub use queue::QueueCollector;
pub use reload::ReloadCollector;
pub use uplink::UplinkCollector;

/// First retry after a failed bind; doubles with jitter.
pub const BIND_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Slowest retry: a port freed by another program is taken within a minute.
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(60);

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

/// Serves `metrics` on `listen` until `cancel` fires. Binding is retried until it works (see
/// the module's failure behaviour); the function returns only on cancellation.
pub async fn serve(listen: SocketAddr, metrics: Metrics, cancel: CancellationToken) {
    let mut backoff = Backoff::new(BIND_RETRY_INITIAL, BIND_RETRY_MAX);
    let listener = loop {
        let bound = tokio::select! {
            () = cancel.cancelled() => return,
            bound = TcpListener::bind(listen) => bound,
        };
        match bound {
            Ok(listener) => break listener,
            Err(bind_error) => {
                let first = backoff.failures() == 0;
                let delay = backoff.next_delay_with(0.5 + 0.5 * fastrand::f64());
                if first {
                    error!(%listen, error = %bind_error, ?delay, "cannot serve metrics; retrying (the gateway keeps running)");
                } else {
                    debug!(%listen, error = %bind_error, ?delay, "still cannot serve metrics");
                }
                http::pause(delay, &cancel).await;
            }
        }
    };
    match listener.local_addr() {
        Ok(address) => info!(%address, "serving metrics on /metrics"),
        Err(_) => info!(%listen, "serving metrics on /metrics"),
    }
    let metrics = Arc::new(metrics);
    http::serve(listener, move || metrics.render(), cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
