//! Any bytes a client sends to the HTTP server (hyper under our limits, serving `/metrics`)
//! get an answer or a closed connection, never a panic or a hang; and any bytes as an
//! `Authorization` value parse to credentials or nothing.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use fieldrelay::console::auth::parse_basic;
use fieldrelay::http::{serve_connection, Connections, Route};
use fieldrelay::metrics::{Endpoint, Metrics};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let _ = parse_basic(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let routes: Arc<[Arc<dyn Route>]> = Arc::from(vec![
            Arc::new(Endpoint::new(Metrics::new())) as Arc<dyn Route>
        ]);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let served = tokio::spawn(serve_connection(server, peer, routes, Connections::Browsers));
        let _ = client.write_all(data).await;
        // End of input: the server answers what it has and closes; no timeout is waited for.
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1."), "{answer:?}");
        served.await.expect("the connection task never panics");
    });
});
