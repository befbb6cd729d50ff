//! Live updates: one server-sent-event stream per open page (`GET /events?page=…&since=…`).
//!
//! Each stream is a task that wakes every [`TICK`], reads what changed (values since the
//! version it sent last; fragments whose HTML differs from what it sent) and hands one chunk to
//! the connection through a channel of one. Nothing pushes into it: a bus owner never waits for
//! a browser. A slow browser makes its own task wait on that channel, and when it takes the
//! chunk the next one carries the newest values, the older ones coalesced — dropped updates,
//! never backpressure. A browser that stops reading altogether is cut off by the server's write
//! timeout. At most [`MAX_STREAMS`] streams at once (`503` beyond: the browser retries).
//!
//! Events: `html` (`{"element id": "inner html"}`, fragments from [`super::pages`]), `values`
//! (`[[device, point, text, ts_ms, number|null], …]`), `log` (`{"html": items, "last": seq}`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{history, log, pages, Console};

/// How often a stream looks for changes: a sample reaches the page within about this.
pub const TICK: Duration = Duration::from_millis(250);
/// Fragments (device health, overview figures) are compared every this many ticks (1 s).
const SLOW_TICKS: u64 = 4;
/// The commands table is re-read from the queue file every this many ticks (2 s).
const COMMAND_TICKS: u64 = 8;
/// A comment when nothing else was sent for this long, so proxies and dead peers show up.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Streams at once, all pages of all browsers together.
pub const MAX_STREAMS: usize = 8;
/// Rows of the commands page.
pub const COMMAND_ROWS: usize = 50;

/// Which page a stream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Overview,
    Devices,
    Commands,
    Log,
}

impl Topic {
    /// From the query string's `page=`.
    pub fn parse(page: &str) -> Option<Topic> {
        match page {
            "overview" => Some(Topic::Overview),
            "devices" => Some(Topic::Devices),
            "commands" => Some(Topic::Commands),
            "log" => Some(Topic::Log),
            _ => None,
        }
    }
}

/// The chunks of one stream, as a response body.
pub struct Stream {
    rx: mpsc::Receiver<Bytes>,
    /// Held while the browser holds the stream.
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Starts a stream of `topic` for a page that has what was current at `since` (a value
/// version, or a log line's seq).
pub fn open(
    console: Arc<Console>,
    topic: Topic,
    since: u64,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
) -> Stream {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        tokio::select! {
            () = produce(&console, topic, since, &tx) => {}
            () = cancel.cancelled() => {}
            () = tx.closed() => {}
        }
    });
    Stream {
        rx,
        _permit: permit,
    }
}

/// What a stream sent last.
#[derive(Default)]
struct Sent {
    version: u64,
    log_seq: u64,
    fragments: HashMap<String, String>,
    chart: Option<i64>,
}

async fn produce(console: &Console, topic: Topic, since: u64, tx: &mpsc::Sender<Bytes>) {
    let mut sent = Sent {
        version: since,
        log_seq: since,
        ..Sent::default()
    };
    if tx
        .send(Bytes::from_static(b"retry: 2000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut quiet = tokio::time::Instant::now();
    for n in 0u64.. {
        tick.tick().await;
        let mut chunk = String::new();
        let mut fragments = HashMap::new();
        let slow = n % SLOW_TICKS == 0;
        match topic {
            Topic::Overview if slow => {
                let view = console.parts.overview();
                fragments.insert("overview-cards".to_owned(), pages::overview_cards(&view));
                let newest = history::read(&console.history, |h| h.newest());
                if newest != sent.chart {
                    sent.chart = newest;
                    let points = history::read(&console.history, |h| h.points());
                    fragments.insert("chart".to_owned(), pages::chart(&points, view.now_ms));
                }
            }
            Topic::Devices => {
                let (version, updates) = console.values.changed_since(sent.version);
                sent.version = version;
                if !updates.is_empty() {
                    let rows: Vec<_> = updates
                        .iter()
                        .map(|u| {
                            json!([
                                &*u.device,
                                &*u.point,
                                pages::value_text(&u.value),
                                u.ts_ms,
                                u.value.as_f64()
                            ])
                        })
                        .collect();
                    event(&mut chunk, "values", &serde_json::Value::Array(rows));
                }
                if slow {
                    for (index, device) in console.parts.devices(None).iter().enumerate() {
                        fragments.insert(format!("health-{index}"), pages::device_health(device));
                    }
                }
            }
            Topic::Commands if n % COMMAND_TICKS == 0 => {
                let rows = console.parts.commands(COMMAND_ROWS).await;
                fragments.insert("commands-rows".to_owned(), pages::command_rows(&rows));
            }
            Topic::Log if n % 2 == 0 => {
                let lines = log::lines_after(sent.log_seq);
                if let Some(last) = lines.last() {
                    sent.log_seq = last.seq;
                    let html = pages::log_lines(&lines);
                    event(
                        &mut chunk,
                        "log",
                        &json!({"html": html, "last": sent.log_seq}),
                    );
                }
            }
            _ => {}
        }
        fragments.retain(|id, html| sent.fragments.get(id) != Some(html));
        if !fragments.is_empty() {
            event(&mut chunk, "html", &json!(fragments));
            sent.fragments.extend(fragments);
        }
        if chunk.is_empty() && quiet.elapsed() >= KEEPALIVE {
            chunk.push_str(": keepalive\n\n");
        }
        if !chunk.is_empty() {
            quiet = tokio::time::Instant::now();
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    }
}

/// Appends one event: its name and its data on one line (JSON has no raw newlines).
fn event(chunk: &mut String, name: &str, data: &serde_json::Value) {
    chunk.push_str("event: ");
    chunk.push_str(name);
    chunk.push_str("\ndata: ");
    chunk.push_str(&data.to_string());
    chunk.push_str("\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_events() {
        assert_eq!(Topic::parse("devices"), Some(Topic::Devices));
        assert_eq!(Topic::parse("x"), None);
        let mut chunk = String::new();
        event(&mut chunk, "html", &json!({"a": "<b>\n</b>"}));
        assert_eq!(chunk, "event: html\ndata: {\"a\":\"<b>\\n</b>\"}\n\n");
    }
}
