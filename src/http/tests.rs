//! The server against clients good and bad, over in-memory pipes (paused time for the timeouts)
//! and real loopback sockets (the connection limit).

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Claims `/hello`, answers `hi`.
struct Hello(Connections);

impl Route for Hello {
    fn claims(&self, path: &str) -> bool {
        path == "/hello"
    }
    fn respond(&self, _request: Request<Incoming>, _peer: SocketAddr) -> Responding {
        Box::pin(async { text(StatusCode::OK, "hi\n") })
    }
    fn connections(&self) -> Connections {
        self.0
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn routes(connections: Connections) -> Arc<[Arc<dyn Route>]> {
    Arc::from(vec![Arc::new(Hello(connections)) as Arc<dyn Route>])
}

/// Writes `request` and reads until the server closes.
async fn exchange(connections: Connections, request: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve_connection(
        server,
        peer(),
        routes(connections),
        connections,
    ));
    client.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    served.await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn answers_by_method_and_path_one_request_per_connection() {
    let scrape = Connections::OnePerRequest;
    let ok = exchange(scrape, b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\r\ncontent-length: 3\r\n"), "{ok}");
    assert!(ok.contains("\r\nconnection: close\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nhi\n"), "{ok}");
    let head = exchange(scrape, b"HEAD /hello HTTP/1.0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
    let post = exchange(
        scrape,
        b"POST /hello HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("\r\nallow: GET, HEAD\r\n"), "{post}");
    let missing = exchange(scrape, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
}

#[tokio::test]
async fn garbage_and_oversized_heads_are_refused() {
    let scrape = Connections::OnePerRequest;
    let tls_hello = exchange(scrape, b"\x16\x03\x01\x00\xff\r\n\r\n").await;
    assert!(tls_hello.starts_with("HTTP/1.1 400 "), "{tls_hello}");
    let mut flood = b"GET /hello HTTP/1.1\r\nX: ".to_vec();
    flood.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
    let flood = exchange(scrape, &flood).await;
    assert!(flood.starts_with("HTTP/1.1 431 "), "{flood}");
}

#[tokio::test]
async fn browsers_keep_their_connection() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let browsers = Connections::Browsers;
    tokio::spawn(serve_connection(server, peer(), routes(browsers), browsers));
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        client
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = client.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
    }
}

/// Half a request head, then nothing: closed after [`HEAD_TIMEOUT`] (paused time); the same
/// for a kept-alive connection that goes idle.
#[tokio::test(start_paused = true)]
async fn silent_clients_are_cut_off() {
    for connections in [Connections::OnePerRequest, Connections::Browsers] {
        let (mut client, server) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let served = tokio::spawn(serve_connection(
            server,
            peer(),
            routes(connections),
            connections,
        ));
        client.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        served.await.unwrap();
        assert_eq!(started.elapsed(), HEAD_TIMEOUT, "{connections:?}");
    }
}

/// At most [`Connections::limit`] connections at once: the next is closed unanswered, and a
/// slot freed is taken again.
#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    use tokio::net::TcpStream;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(
        address,
        routes(Connections::OnePerRequest),
        cancel.clone(),
    ));
    let mut held = Vec::new();
    for _ in 0..Connections::OnePerRequest.limit() {
        let stream = loop {
            match TcpStream::connect(address).await {
                Ok(stream) => break stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        held.push(stream);
    }
    // The server accepts in order: once the first is answered, all of them were accepted.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /hello HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // One slot is free again (the answered connection closed): take it, then one more.
    held.push(TcpStream::connect(address).await.unwrap());
    let mut extra = TcpStream::connect(address).await.unwrap();
    let mut buf = [0u8; 64];
    let _ = extra.write_all(b"GET /hello HTTP/1.1\r\n\r\n").await;
    let n = extra.read(&mut buf).await.unwrap_or(0);
    assert_eq!(
        n,
        0,
        "closed unanswered: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    cancel.cancel();
    server.await.unwrap();
}

mod any_bytes {
    use super::*;
    use proptest::prelude::*;

    /// What the fuzz target checks, on fewer inputs: whatever a client sends, the connection
    /// ends with an answer or a close, never a panic (the input's end is the client's EOF, so no
    /// timeout is waited for).
    fn answered(data: Vec<u8>) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let browsers = Connections::Browsers;
            let served = tokio::spawn(serve_connection(server, peer(), routes(browsers), browsers));
            let _ = client.write_all(&data).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            served.await.unwrap();
            answer
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn garbage_gets_an_answer_or_a_close(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let answer = answered(data);
            prop_assert!(answer.is_empty() || answer.starts_with(b"HTTP/1."), "{:?}", answer);
        }

        #[test]
        fn requests_with_any_headers_are_answered(
            path in "/[a-z]{0,8}",
            headers in proptest::collection::vec("[A-Za-z-]{1,20}: [ -~]{0,40}", 0..8),
        ) {
            let mut text = format!("GET {path} HTTP/1.1\r\n");
            for header in &headers {
                text.push_str(header);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            let answer = String::from_utf8_lossy(&answered(text.into_bytes())).into_owned();
            let expected = if path == "/hello" { "HTTP/1.1 200 " } else { "HTTP/1.1 404 " };
            // A header hyper refuses (a bad Content-Length, Transfer-Encoding) gets a 400.
            prop_assert!(answer.starts_with(expected) || answer.starts_with("HTTP/1.1 400 "), "{}", answer);
        }
    }
}
