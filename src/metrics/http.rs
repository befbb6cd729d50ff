//! The smallest HTTP/1.x server that Prometheus needs: `GET /metrics`, one request per
//! connection.
//!
//! Why hand-written: a scrape endpoint needs a request line and nothing else; an HTTP crate
//! (hyper and its stack) would be most of the binary's growth for it. What it must still do
//! right, because the port may be reachable by anything on the plant network:
//!
//! - **Bounded.** The request head may be at most [`MAX_HEAD`] bytes (then `431`), must arrive
//!   within [`HEAD_TIMEOUT`] (then `408`), and the response must be taken within
//!   [`WRITE_TIMEOUT`]. At most [`MAX_CONNECTIONS`] are served at once; further ones are closed
//!   at once. A scanner or a stuck scraper costs a few kilobytes and a task, never the gateway.
//! - **Never panics on input.** [`parse_head`] is pure, total over every byte string
//!   (property-tested and fuzzed: `fuzz/fuzz_targets/http_request.rs`), and anything it does
//!   not understand is a `400`.
//! - **Answers.** `GET`/`HEAD /metrics` (a query string is ignored) → `200`; any other path →
//!   `404`; any other method → `405`; an HTTP version other than 1.0/1.1 → `505`. Every
//!   response carries `Content-Length` and `Connection: close`; request bodies are not read.
//! - **Stops** with the cancellation token: the listener and every open connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Largest request head accepted. Prometheus sends about 300 bytes; browsers about 1 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// The whole request head must arrive within this (slow-loris defence).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The response must be taken within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; Prometheus uses one per scrape, so a few cover several servers
/// and a person with curl.
pub const MAX_CONNECTIONS: usize = 8;
/// Pause after a failed `accept` (out of file descriptors): retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    /// Like `Get` without the body.
    Head,
    /// Anything else (`POST`, `PUT`, ...): answered `405`.
    Other,
}

/// What the server needs of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The target's path, without the query string.
    pub path: String,
}

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request line")]
    Malformed,
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("unsupported http version")]
    Version,
}

/// Parses the request head at the start of `buf` (pure). `Ok(None)`: the head is not complete
/// yet (no empty line), read more.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let Some(end) = head_end(buf) else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let head = &buf[..end];
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(HeadError::Malformed)?;
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let line = std::str::from_utf8(line).map_err(|_| HeadError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(HeadError::Malformed);
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::Malformed);
    }
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed),
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split('?').next().unwrap_or(target).to_owned();
    Ok(Some(RequestHead { method, path }))
}

/// Index just past the empty line ending the head (`\r\n\r\n`, or bare `\n\n`, which RFC 9112
/// lets a server accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut previous_newline = None;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            if let Some(previous) = previous_newline {
                let between = &buf[previous + 1..i];
                if between.is_empty() || between == b"\r" {
                    return Some(i + 1);
                }
            }
            previous_newline = Some(i);
        }
    }
    None
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A complete response: status line, headers and (unless `HEAD`) the body.
pub fn response(
    status: &str,
    extra_headers: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn plain(status: &str, extra_headers: &str, body: &str, head_only: bool) -> Vec<u8> {
    response(
        status,
        extra_headers,
        "text/plain; charset=utf-8",
        body,
        head_only,
    )
}

/// The response to a parsed request; `render` produces the metrics text (called only for
/// `/metrics`).
pub fn respond(request: &RequestHead, render: impl FnOnce() -> Option<String>) -> Vec<u8> {
    let head_only = request.method == Method::Head;
    match (request.method, request.path.as_str()) {
        (Method::Other, _) => plain(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET and HEAD are served\n",
            false,
        ),
        (_, "/metrics") => match render() {
            Some(text) => response("200 OK", "", CONTENT_TYPE, &text, head_only),
            None => plain(
                "500 Internal Server Error",
                "",
                "cannot encode the metrics\n",
                head_only,
            ),
        },
        _ => plain(
            "404 Not Found",
            "",
            "not found; the metrics are at /metrics\n",
            head_only,
        ),
    }
}

fn refusal(error: &HeadError) -> Vec<u8> {
    match error {
        HeadError::Malformed => plain("400 Bad Request", "", "bad request\n", false),
        HeadError::TooLarge => plain(
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n",
            false,
        ),
        HeadError::Version => plain(
            "505 HTTP Version Not Supported",
            "",
            "only HTTP/1.0 and HTTP/1.1 are served\n",
            false,
        ),
    }
}

/// Serves one request on `stream` and closes it. Every wait is bounded; nothing here fails
/// the caller.
pub async fn serve_connection<S>(mut stream: S, render: impl FnOnce() -> Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let answer = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(request)) => respond(&request, render),
        Ok(Err(Some(error))) => {
            debug!(%error, "refused a metrics request");
            refusal(&error)
        }
        // The peer closed or the read failed: nobody to answer.
        Ok(Err(None)) => return,
        Err(_) => {
            debug!("metrics request head did not arrive in time");
            plain("408 Request Timeout", "", "request timeout\n", false)
        }
    };
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    if let Err(error) = tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        debug!(%error, "cannot send the metrics response");
    }
}

/// Reads until a complete head; `Err(None)` when the peer closed or the read failed.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<RequestHead, Option<HeadError>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        // Never hold more than MAX_HEAD + one chunk.
        buf.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse_head(&buf).map_err(Some)? {
            return Ok(request);
        }
    }
}

/// Accepts connections on `listener` until `cancel` fires, then waits for the open ones (which
/// stop on `cancel` too). `render` is called once per `/metrics` request.
pub async fn serve<R>(listener: TcpListener, render: R, cancel: CancellationToken)
where
    R: Fn() -> Option<String> + Clone + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
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
                    debug!(%peer, "too many metrics connections; closing this one");
                    continue;
                };
                let render = render.clone();
                let cancel = cancel.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = serve_connection(stream, render) => {}
                        () = cancel.cancelled() => {}
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                if accept_failures == 0 {
                    warn!(%error, "metrics endpoint cannot accept connections");
                }
                accept_failures += 1;
                pause(ACCEPT_PAUSE, &cancel).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
}

/// Sleeps for `duration` unless `cancel` fires first.
pub(crate) async fn pause(duration: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(text.as_bytes())
    }

    fn get(path: &str) -> RequestHead {
        RequestHead {
            method: Method::Get,
            path: path.to_owned(),
        }
    }

    #[test]
    fn parses_what_prometheus_sends() {
        let scrape = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9898\r\nUser-Agent: Prometheus/2.53.0\r\n\
                      Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n\
                      Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
        assert_eq!(parsed(scrape), Ok(Some(get("/metrics"))));
        assert_eq!(
            parsed("HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Ok(Some(RequestHead {
                method: Method::Head,
                path: "/metrics".into()
            }))
        );
        assert_eq!(
            parsed("DELETE / HTTP/1.1\r\n\r\n").map(|r| r.map(|r| r.method)),
            Ok(Some(Method::Other))
        );
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert_eq!(parsed(""), Ok(None));
        assert_eq!(parsed("GET /metrics HTTP/1.1\r\n"), Ok(None));
        assert_eq!(parsed("GET /metrics HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn refuses_garbage_and_oversized_heads() {
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /met rics HTTP/1.1\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
            "GET /metrics FTP/1.1\r\n\r\n",
            "GET /m\u{e9}trics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parsed(bad), Err(HeadError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parsed("GET /metrics HTTP/2.0\r\n\r\n"),
            Err(HeadError::Version)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parsed(&long), Err(HeadError::TooLarge));
        let complete_but_long = format!("{long}\r\n");
        assert_eq!(parsed(&complete_but_long), Err(HeadError::TooLarge));
    }

    #[test]
    fn responses_by_path_and_method() {
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        let ok = text(respond(&get("/metrics"), || Some("a 1\n".into())));
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let head = RequestHead {
            method: Method::Head,
            path: "/metrics".into(),
        };
        let head = text(respond(&head, || Some("a 1\n".into())));
        assert!(
            head.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        let missing = text(respond(&get("/"), || panic!("rendered for /")));
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = RequestHead {
            method: Method::Other,
            path: "/metrics".into(),
        };
        let post = text(respond(&post, || panic!("rendered for POST")));
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"));
        let failed = text(respond(&get("/metrics"), || None));
        assert!(failed.starts_with("HTTP/1.1 500 "));
    }

    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_connection(server, || Some("m 1\n".to_owned())));
        client.write_all(request).await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        served.await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_connection_gets_one_answer_and_is_closed() {
        let answer = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nm 1\n"), "{answer}");
        let answer = exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let flood = vec![b'a'; MAX_HEAD * 2];
        let answer = exchange(&flood).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    /// A client that sends half a request and then nothing is answered 408 and dropped after
    /// [`HEAD_TIMEOUT`] (paused time: the runtime jumps to the deadline).
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(serve_connection(server, || Some(String::new())));
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        served.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert_eq!(started.elapsed(), HEAD_TIMEOUT);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn a_valid_request_line_parses_whatever_headers_follow(
            path in "/[a-zA-Z0-9/_.-]{0,40}",
            query in proptest::option::of("[a-z=&0-9]{0,20}"),
            headers in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,40}", 0..8),
        ) {
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let mut text = format!("GET {target} HTTP/1.1\r\n");
            for header in &headers {
                text.push_str(header);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            prop_assert_eq!(parse_head(text.as_bytes()), Ok(Some(get(&path))));
            // Every proper prefix is incomplete, never an error.
            for cut in 0..text.len() {
                prop_assert_eq!(parse_head(&text.as_bytes()[..cut]), Ok(None));
            }
        }
    }
}
