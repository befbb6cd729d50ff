//! Fault tests of the durable uplink session with real parts: the `fieldrelay` binary, a
//! simulated Modbus device streaming two counters (QoS 1 and QoS 2, every poll), a real
//! mosquitto with persistence, and two `mosquitto_sub` consumers (libmosquitto, a client we did
//! not write): one subscribed at QoS 2, one at QoS 1.
//!
//! The oracle: `seq` is AUTOINCREMENT and a rolled-back (or killed) transaction consumes none,
//! so every `seq` in `1..=last_seq` of the queue file was a committed sample. After the stream
//! stops and the queue drains, every one of them must have reached a consumer (zero loss), and
//! each QoS 2 one the QoS 2 consumer at most once where the broker kept the session (the QoS 2
//! leg cannot create duplicates, so one there came from the gateway). Two consumers because a
//! broker restart can itself lose a message in flight on its QoS 2 leg to a subscriber
//! (mosquitto 2.0.11 and libmosquitto keep part of that handshake in memory); the QoS 1 leg is
//! resent by the broker from its persistence, so a sample no consumer saw was lost before the
//! broker took it.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::disk::{DiskFull, Tmpfs};
use common::pki::TestPki;
use common::{free_port, wait_until, Gateway, Mosquitto, Subscriber};
use fieldrelay::simulator::{Registers, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "fieldrelay/test-gw/boiler";

/// `mosquitto_sub -q 2 -c` (a persistent QoS 2 subscriber printing `topic payload` lines) and
/// its QoS 1 twin in `backup`.
struct Consumers {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The QoS 1 consumer beside it (see the module doc).
    backup: Option<Box<Consumers>>,
}

impl Consumers {
    fn start(port: u16, id: &str, auth: &[&str]) -> Consumers {
        let mut sub = Consumers::start_qos(port, id, auth, "2");
        sub.backup = Some(Box::new(Consumers::start_qos(
            port,
            &format!("{id}-q1"),
            auth,
            "1",
        )));
        sub
    }

    fn start_qos(port: u16, id: &str, auth: &[&str], qos: &str) -> Consumers {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id, "-c"])
            .args(["-q", qos, "-v", "-t", &format!("{PREFIX}/#")])
            .args(auth)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub (mosquitto-clients)");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let sub = Consumers {
            child,
            lines,
            backup: None,
        };
        sub.wait_subscribed(port, auth);
        sub
    }

    /// Seqs either consumer saw.
    fn seen_by_any(&self) -> BTreeMap<u64, (String, usize)> {
        let mut seen = self.seen();
        if let Some(backup) = &self.backup {
            for (seq, entry) in backup.seen() {
                seen.entry(seq).or_insert(entry);
            }
        }
        seen
    }

    /// Publishes probes until one comes back: the subscription is then live.
    fn wait_subscribed(&self, port: u16, auth: &[&str]) {
        let probe = format!("{PREFIX}/probe");
        wait_until("the subscription", Duration::from_secs(20), || {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", &probe, "-m", "{}"])
                .args(auth)
                .status();
            std::thread::sleep(Duration::from_millis(100));
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(&probe))
        });
    }

    /// `seq` → (point, how often it arrived).
    fn seen(&self) -> BTreeMap<u64, (String, usize)> {
        let mut seen: BTreeMap<u64, (String, usize)> = BTreeMap::new();
        for line in self.lines.lock().unwrap().iter() {
            let Some((topic, payload)) = line.split_once(' ') else {
                continue;
            };
            let Some(point) = topic.strip_prefix(&format!("{PREFIX}/")) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(payload) else {
                continue;
            };
            if let Some(seq) = json["seq"].as_u64() {
                seen.entry(seq).or_insert_with(|| (point.to_owned(), 0)).1 += 1;
            }
        }
        seen
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POINTS: &str = "      - name: c1
        table: holding
        address: 0
        type: u16
        qos: 1
        publish: every_poll
      - name: c2
        table: holding
        address: 1
        type: u16
        qos: 2
        publish: every_poll
";

/// `uplink.keep_alive`: long, so that only the response timeout explains a prompt detection of
/// a half-open link (the keep-alive path would take a PINGREQ at half of it, or the broker
/// 1.5 × it).
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// `uplink.response_timeout`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

fn config(dir: &Path, url: &str, device_port: u16, uplink_extra: &str) -> std::path::PathBuf {
    config_with_points(dir, url, device_port, uplink_extra, POINTS)
}

/// [`config`] with other points.
fn config_with_points(
    dir: &Path,
    url: &str,
    device_port: u16,
    uplink_extra: &str,
    points: &str,
) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let text = format!(
        "gateway:\n  id: test-gw\n  data_dir: {data}\nuplink:\n  url: {url}\n  keep_alive: {keep_alive}s\n  \
         response_timeout: {timeout}ms\n  reconnect_initial: 100ms\n  reconnect_max: 500ms\n{uplink_extra}\
         buses:\n  - name: plc1\n    type: tcp\n    host: 127.0.0.1\n    port: {device_port}\n    \
         timeout: 500ms\ndevices:\n  - name: boiler\n    bus: plc1\n    poll_interval: 25ms\n    \
         points:\n{points}",
        data = dir.join("data").display(),
        keep_alive = KEEP_ALIVE.as_secs(),
        timeout = RESPONSE_TIMEOUT.as_millis(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A simulated device whose registers the gateway polls; cancel it to stop the stream.
async fn device() -> (u16, CancellationToken) {
    let (regs, port, cancel) = common::start_simulator().await;
    regs.set_holding(1, 0, &[1, 2]);
    (port, cancel)
}

fn queue_progress(dir: &Path) -> Option<fieldrelay::queue::QueueProgress> {
    fieldrelay::queue::QueueReader::open(&dir.join("data"))
        .ok()?
        .progress()
        .ok()
}

/// Stops the stream, waits until the queue drained, then checks the oracle. `exactly_once`:
/// QoS 2 samples must have arrived once.
async fn stop_drain_and_check(
    dir: &Path,
    stream: CancellationToken,
    sub: &Consumers,
    exactly_once: bool,
) {
    stream.cancel();
    let dir = dir.to_path_buf();
    let last_seq = tokio::task::spawn_blocking(move || {
        wait_until("the queue to drain", Duration::from_secs(90), || {
            queue_progress(&dir).is_some_and(|p| p.depth == 0 && p.last_seq > 0)
        });
        queue_progress(&dir).map(|p| p.last_seq).unwrap_or(0)
    })
    .await
    .unwrap();
    assert!(
        last_seq > 100,
        "too few samples ({last_seq}) to mean anything"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = sub.seen_by_any();
    while seen.len() < last_seq as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = sub.seen_by_any();
    }
    let missing: Vec<u64> = (1..=last_seq).filter(|s| !seen.contains_key(s)).collect();
    let around: Vec<_> = missing
        .iter()
        .take(3)
        .flat_map(|m| (m.saturating_sub(2)..=m + 2).map(|s| (s, seen.get(&s).cloned())))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {last_seq} committed samples lost: {:?}; around them: {around:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if exactly_once {
        let seen = sub.seen();
        let dups: Vec<(&u64, &(String, usize))> = seen
            .iter()
            .filter(|(_, (point, n))| point == "c2" && *n > 1)
            .collect();
        assert!(dups.is_empty(), "QoS 2 samples delivered twice: {dups:?}");
    }
    let qos2 = seen.values().filter(|(p, _)| p == "c2").count();
    assert!(qos2 > 20, "too few QoS 2 samples ({qos2})");
}

/// Waits until the subscriber has seen at least `n` samples.
async fn until_seen(sub: &Consumers, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sub.seen().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} samples arrived",
            sub.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_20_random_moments_loses_nothing_and_duplicates_no_qos2() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Consumers::start(broker.port, "faults-kill", &[]);
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let cfg = config(dir.path(), &url, device, "");
    let mut gateway = Gateway::start(&cfg);
    until_seen(&sub, 20).await;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(rng.u64(150..700))).await;
        gateway.restart_after_kill9();
    }
    until_seen(&sub, sub.seen().len() + 20).await;
    stop_drain_and_check(dir.path(), stream, &sub, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_with_persistence_loses_nothing_and_duplicates_no_qos2() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let sub = Consumers::start(broker.port, "faults-restart", &[]);
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let _gateway = Gateway::start(&config(dir.path(), &url, device, ""));
    for _ in 0..2 {
        until_seen(&sub, sub.seen().len() + 40).await;
        let b = &mut broker;
        tokio::task::block_in_place(|| b.restart());
    }
    until_seen(&sub, sub.seen().len() + 40).await;
    stop_drain_and_check(dir.path(), stream, &sub, true).await;
}

/// A TCP proxy between gateway and broker. `Cut` makes every connection open at that moment
/// silently stop forwarding (no FIN, no RST: a half-open link) while new ones work; `Refuse`
/// closes existing and new connections.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    /// Bumped by `cut`: connections of an older generation forward nothing.
    generation: Arc<AtomicU64>,
    pub accepted: Arc<AtomicU64>,
}

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
/// Accepts, then waits [`SLOW_CONNECT`] before forwarding: a broker slow to answer CONNECT.
const SLOW: u8 = 2;
const SLOW_CONNECT: Duration = Duration::from_millis(600);

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let generation = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (m, g, a) = (mode.clone(), generation.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if m.load(Ordering::SeqCst) == REFUSE {
                    continue; // dropped: closed at once
                }
                a.fetch_add(1, Ordering::SeqCst);
                if m.load(Ordering::SeqCst) == SLOW {
                    tokio::time::sleep(SLOW_CONNECT).await;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let mine = g.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, g.clone(), m.clone(), mine));
                tokio::spawn(pump(sr, cw, g.clone(), m.clone(), mine));
            }
        });
        Proxy {
            port,
            mode,
            generation,
            accepted,
        }
    }

    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: Arc<AtomicU64>,
    mode: Arc<AtomicU8>,
    mine: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if mode.load(Ordering::SeqCst) == REFUSE {
            return; // both halves dropped: the connection closes
        }
        if generation.load(Ordering::SeqCst) != mine {
            // Half-open: swallow everything, keep both sockets open, answer nothing.
            let _keep = &to;
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits until the gateway logged a line containing `needle` after `mark`; returns that line.
async fn logged_after(gateway: &Gateway, mark: u64, needle: &str, deadline: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(line) = gateway.log_since(mark).lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            start.elapsed() < deadline,
            "no `{needle}` logged within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the proxy close the link and refuse redials; returns once the gateway lost it.
async fn refuse_until_lost(gateway: &Gateway, proxy: &Proxy) {
    let mark = gateway.log_mark();
    proxy.mode.store(REFUSE, Ordering::SeqCst);
    logged_after(
        gateway,
        mark,
        "uplink connection lost",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_detected_within_response_timeout_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Consumers::start(broker.port, "faults-half-open", &[]);
    let proxy = Proxy::start(broker.port).await;
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let gateway = Gateway::start(&config(dir.path(), &url, device, ""));
    // The gateway publishes a sample every poll (25 ms), so a PUBACK is due within a poll of the
    // cut and missing one response timeout later. The margin covers a busy machine; the
    // keep-alive path would take at least KEEP_ALIVE / 2 (its next PINGREQ) plus the timeout.
    let bound = RESPONSE_TIMEOUT + Duration::from_secs(3);
    assert!(
        bound < KEEP_ALIVE / 2,
        "the bound must rule out the keep-alive path"
    );
    for _ in 0..2 {
        until_seen(&sub, sub.seen().len() + 40).await;
        let before = proxy.accepted.load(Ordering::SeqCst);
        let mark = gateway.log_mark();
        let cut = Instant::now();
        proxy.cut();
        let lost = logged_after(
            &gateway,
            mark,
            "uplink connection lost",
            Duration::from_secs(30),
        )
        .await;
        let detected = cut.elapsed();
        assert!(
            lost.contains("timed out waiting for"),
            "the link was lost for another reason: {lost}"
        );
        assert!(
            detected <= bound,
            "half-open link detected after {detected:?} (response timeout {RESPONSE_TIMEOUT:?})"
        );
        // And it redials.
        let accepted = proxy.accepted.clone();
        tokio::task::spawn_blocking(move || {
            wait_until("the redial", Duration::from_secs(30), || {
                accepted.load(Ordering::SeqCst) > before
            })
        })
        .await
        .unwrap();
    }
    until_seen(&sub, sub.seen().len() + 40).await;
    stop_drain_and_check(dir.path(), stream, &sub, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_without_the_session_gets_everything_resent_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let mut sub = Consumers::start(broker.port, "faults-sp0", &[]);
    let proxy = Proxy::start(broker.port).await;
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let gateway = Gateway::start(&config(dir.path(), &url, device, ""));
    until_seen(&sub, 60).await;
    // The gateway loses the broker, which comes back without any session (persistence wiped).
    // The proxy closes the link at the next packet (a sample every 25 ms) and refuses redials.
    refuse_until_lost(&gateway, &proxy).await;
    let lost = gateway.log_mark();
    let port = broker.port;
    tokio::task::block_in_place(|| broker.restart_forgetting_sessions());
    // The subscriber's session went too: a fresh one (keeping what it saw) before the gateway
    // may reconnect.
    let seen_lines = sub.lines.lock().unwrap().clone();
    let backup_lines = sub.backup.as_ref().map(|b| b.lines.lock().unwrap().clone());
    drop(sub);
    sub = Consumers::start(port, "faults-sp0", &[]);
    sub.lines.lock().unwrap().splice(0..0, seen_lines);
    if let (Some(backup), Some(lines)) = (&sub.backup, backup_lines) {
        backup.lines.lock().unwrap().splice(0..0, lines);
    }
    proxy.mode.store(FORWARD, Ordering::SeqCst);
    // The first connection after the loss is the one to the broker that forgot the session (the
    // proxy refused every dial in between). A fresh queue's own first connection also logs
    // session_present=false, hence the mark: only this reconnect counts.
    let reconnect = logged_after(&gateway, lost, "uplink connected", Duration::from_secs(30)).await;
    assert!(
        reconnect.contains("session_present=false"),
        "the reconnect after the broker lost the session: {reconnect}"
    );
    until_seen(&sub, sub.seen().len() + 40).await;
    // Duplicates are allowed here (the broker lost its QoS 2 state), loss is not.
    stop_drain_and_check(dir.path(), stream, &sub, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_password_against_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let tls_port = free_port();
    let passwords = dir.path().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["gw", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success());
    std::fs::set_permissions(
        &passwords,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let extra = format!(
        "allow_anonymous false\npassword_file {pw}\nlistener {tls_port} 127.0.0.1\ncafile {ca}\n\
         certfile {cert}\nkeyfile {key}\nrequire_certificate true\n",
        pw = passwords.display(),
        ca = pki.ca.display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    );
    let broker = Mosquitto::start_with(dir.path(), &extra);
    wait_until("the tls listener", Duration::from_secs(10), || {
        common::port_accepts(tls_port)
    });
    let auth = ["-u", "gw", "-P", "s3cret"];
    let sub = Consumers::start(broker.port, "faults-tls", &auth);
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let uplink = format!(
        "  username: gw\n  password_file: {pw}\n  tls:\n    ca_file: {ca}\n    cert_file: {cert}\n    key_file: {key}\n",
        pw = dir.path().join("password").display(),
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
    );
    let (device, stream) = device().await;
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let _gateway = Gateway::start(&config(dir.path(), &url, device, &uplink));
    until_seen(&sub, 150).await;

    // The same listener refuses a client without a certificate, and the client refuses a
    // server its CA did not sign.
    use fieldrelay::config::TlsConfig;
    use fieldrelay::uplink::connection::{self, ConnectOptions};
    use fieldrelay::uplink::Dialer;
    let options = || ConnectOptions {
        client_id: "intruder",
        keep_alive: Duration::from_secs(5),
        clean_session: true,
        will_topic: "x".into(),
        will_payload: bytes::Bytes::new(),
        will_retain: true,
        mqtt5: None,
    };
    let no_cert = TlsConfig {
        ca_file: pki.ca.clone(),
        client_auth: None,
    };
    let dialer = Dialer::new("127.0.0.1", tls_port, Some(&no_cert), None, None).unwrap();
    assert!(
        connection::connect(&dialer, options(), Duration::from_secs(10))
            .await
            .is_err()
    );
    let other = TestPki::generate(&dir.path().join("other"));
    let wrong_ca = TlsConfig {
        ca_file: other.ca.clone(),
        client_auth: Some((pki.client_cert.clone(), pki.client_key.clone())),
    };
    let dialer = Dialer::new("127.0.0.1", tls_port, Some(&wrong_ca), None, None).unwrap();
    assert!(dialer.dial().await.is_err(), "untrusted server accepted");
    stop_drain_and_check(dir.path(), stream, &sub, true).await;
}

/// A backlog written by a contract v1 build (schema v1) is migrated in place at start and every
/// row of it is delivered with its original `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_backlog_survives_the_upgrade_and_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let c = rusqlite::Connection::open(data.join("queue.db")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE samples (
                 seq    INTEGER PRIMARY KEY AUTOINCREMENT,
                 device TEXT    NOT NULL,
                 point  TEXT    NOT NULL,
                 value  TEXT    NOT NULL,
                 ts_ms  INTEGER NOT NULL,
                 qos    INTEGER NOT NULL,
                 retain INTEGER NOT NULL
             );
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for i in 1..=300 {
            c.execute(
                "INSERT INTO samples (device, point, value, ts_ms, qos, retain) \
                 VALUES ('boiler', 'old', ?1, 1700000000000, ?2, 0)",
                rusqlite::params![i, 1 + i % 2],
            )
            .unwrap();
        }
        // A v1 build had already delivered the first 100.
        c.execute("DELETE FROM samples WHERE seq <= 100", [])
            .unwrap();
    }
    let broker = Mosquitto::start(dir.path());
    let sub = Consumers::start(broker.port, "faults-v1", &[]);
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let _gateway = Gateway::start(&config(dir.path(), &url, device, ""));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = sub.seen_by_any();
        if (101..=300).all(|s| seen.get(&s).is_some_and(|(p, _)| p == "old")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v1 rows missing: {:?}",
            (101..=300)
                .filter(|s| !seen.contains_key(s))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sub.seen().keys().all(|s| *s > 100), "acked v1 rows resent");
    // New samples continue above the old seqs.
    until_seen(&sub, 250).await;
    assert!(sub.seen().keys().any(|s| *s > 300));
    stream.cancel();
}

/// The seam for commands (issue 5) against a real broker: an incoming QoS 1 PUBLISH that the
/// handler has not acknowledged is redelivered after a restart of the uplink (persistent
/// session); once acknowledged it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_command_is_redelivered_and_an_acknowledged_one_is_not() {
    use fieldrelay::config::UplinkConfig;
    use fieldrelay::queue::{Queue, QueueOptions};
    use fieldrelay::uplink::{Inbound, Incoming};

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let config = UplinkConfig {
        keep_alive: Duration::from_secs(30),
        topic_prefix: "fieldrelay/test-gw".into(),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        response_timeout: Duration::from_secs(5),
        max_inflight: 8,
        ..UplinkConfig::plain("127.0.0.1", broker.port, "test-gw-cmd")
    };
    let (queue, _live, writer) =
        Queue::open(&dir.path().join("data"), QueueOptions::default()).expect("open the queue");
    let start = |tx: tokio::sync::mpsc::Sender<Vec<Incoming>>| {
        let cancel = CancellationToken::new();
        let (_unused, live) = tokio::sync::mpsc::channel(1);
        let uplink = fieldrelay::uplink::Uplink {
            config: config.clone(),
            dialer: fieldrelay::uplink::dialer(&config).unwrap(),
            queue: queue.clone(),
            live: fieldrelay::queue::LiveReceiver { rx: live },
            inbound: Some(Inbound {
                filters: vec!["fieldrelay/test-gw/+/+/set".into()],
                tx,
                max_packet: fieldrelay::uplink::inbound::MAX_INCOMING_PACKET,
            }),
            presence: fieldrelay::uplink::Presence::fixed(fieldrelay::sample::now_ms()),
            state: tokio::sync::watch::channel(fieldrelay::uplink::LinkState::default()).0,
            stats: Default::default(),
        };
        let task = tokio::spawn(uplink.run(cancel.clone()));
        (cancel, task)
    };
    let publish = |point: &str, body: &str| {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
            .args([
                "-t",
                &format!("fieldrelay/test-gw/boiler/{point}/set"),
                "-m",
                body,
            ])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // 1. A command arrives; the handler does not acknowledge it; the uplink restarts.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (cancel, task) = start(tx);
    // Probes until the subscription is live; each has its own id.
    let mut published = Vec::new();
    let first = loop {
        let id = format!("a{}", published.len());
        publish("setpoint", &format!(r#"{{"id":"{id}","value":1}}"#));
        published.push(id);
        if let Ok(Some(mut batch)) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
        {
            break batch.remove(0);
        }
    };
    assert_eq!(first.topic, "fieldrelay/test-gw/boiler/setpoint/set");
    assert!(first.ack.is_some(), "QoS 1: manual ack");
    let first_id = serde_json::from_slice::<serde_json::Value>(&first.payload).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(first); // not acknowledged (nor are the probes after it)
    cancel.cancel();
    task.await.unwrap();

    // 2. After the restart the broker redelivers the probes that reached the subscription; this
    //    time each is acknowledged. Probes published before the subscription was live went
    //    nowhere; the one received above and every later one come back, in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (cancel, task) = start(tx);
    let mut redelivered = std::collections::BTreeSet::new();
    while !redelivered.contains(published.last().unwrap()) {
        let batch = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the unacknowledged command again within 30 s")
            .expect("the uplink is running");
        for m in batch {
            let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let id = json["id"].as_str().unwrap().to_owned();
            if id == first_id {
                assert!(m.dup, "a redelivery carries DUP");
            }
            redelivered.insert(id);
            m.ack.expect("QoS 1").ack();
        }
    }
    assert!(
        redelivered.contains(&first_id),
        "the unacknowledged command was not redelivered: {redelivered:?}"
    );
    cancel.cancel();
    task.await.unwrap();

    // 3. After another restart only a new command arrives: the acknowledged ones are gone.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (cancel, task) = start(tx);
    let fresh = loop {
        publish("other", r#"{"id":"b","value":2}"#);
        if let Ok(Some(mut batch)) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
        {
            break batch.remove(0);
        }
    };
    assert_eq!(
        fresh.topic, "fieldrelay/test-gw/boiler/other/set",
        "an acknowledged command came back"
    );
    cancel.cancel();
    task.await.unwrap();
    writer.close().await.unwrap();
}

/// Every failed reconnect is logged after a lost connection, with its reason and when the next
/// attempt comes, for the cloud uplink and the on-site client alike; while the broker stays
/// down, lines come at most every 10 s and say how many attempts they stand for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reconnects_are_logged_with_reason_and_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud_dir, local_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cloud = Mosquitto::start(cloud_dir.path());
    let mut local = Mosquitto::start(local_dir.path());
    let (device, _stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", cloud.port);
    let local_section = format!("local:\n  url: mqtt://127.0.0.1:{}\n", local.port);
    let gateway = Gateway::start(&config(dir.path(), &url, device, &local_section));
    logged_after(&gateway, 0, "uplink connected", Duration::from_secs(30)).await;
    logged_after(
        &gateway,
        0,
        "local broker connected",
        Duration::from_secs(30),
    )
    .await;

    let mark = gateway.log_mark();
    cloud.stop();
    local.stop();
    let deadline = Duration::from_secs(30);
    logged_after(&gateway, mark, "uplink connection lost", deadline).await;
    logged_after(&gateway, mark, "local broker connection lost", deadline).await;
    for needle in [
        "uplink cannot connect",
        "cannot connect to the local broker",
    ] {
        let line = logged_after(&gateway, mark, needle, deadline).await;
        assert!(line.contains("Connection refused"), "no reason: {line}");
        assert!(line.contains("next attempt in "), "no next attempt: {line}");
    }
    // Attempts every 0.5 s at most: the next uplink line stands for the ones in between.
    let mark = gateway.log_mark();
    let line = logged_after(
        &gateway,
        mark,
        "since the last report",
        Duration::from_secs(30),
    )
    .await;
    assert!(line.contains("more failed attempts"), "{line}");
    let lines = gateway.log_since(mark);
    let uplink_lines = lines
        .lines()
        .filter(|l| l.contains("uplink cannot connect"))
        .count();
    assert!(uplink_lines <= 2, "not rate limited:\n{lines}");
}

/// The first polls' QoS 0 samples, taken while the first connect is under way, are sent when it
/// succeeds: nothing is "dropped" at start, and an `on_change` QoS 0 point whose value never
/// changes still reaches the broker once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_samples_of_the_first_polls_are_sent_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut sub = Subscriber::connect(broker.port, "faults-first-qos0", &["fieldrelay/#"]).await;
    let proxy = Proxy::start(broker.port).await;
    proxy.mode.store(SLOW, Ordering::SeqCst);
    let regs = Registers::default();
    regs.set_holding(1, 0, &[1, 2]);
    regs.set_input(1, 0, &[42]);
    let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs)
        .await
        .expect("bind simulator");
    let device = sim.local_addr().port();
    let stop = CancellationToken::new();
    tokio::spawn(sim.run(stop.clone()));
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let config = config(dir.path(), &url, device, "");
    // A constant QoS 0 point published on change only: its one sample is the first poll's.
    let text = std::fs::read_to_string(&config).unwrap()
        + "      - {name: level, table: input, address: 0, type: u16, qos: 0}\n";
    std::fs::write(&config, text).unwrap();
    let gateway = Gateway::start(&config);
    let topic = "fieldrelay/test-gw/boiler/level";
    sub.until(
        "the constant QoS 0 value",
        Duration::from_secs(30),
        |seen| seen.iter().any(|m| m.topic == topic),
    )
    .await;
    assert_eq!(sub.on(topic)[0].payload["value"], 42);
    let log = gateway.log();
    assert!(!log.contains("dropped QoS 0 samples"), "{log}");
    stop.cancel();
}

/// The gateway's queue on an 8 MiB tmpfs, with a backlog built while the proxy refuses the
/// link; then the disk fills ([`DiskFull`]: every commit fails) and the link is let through.
/// Returns what the test needs to go on; `None` where no tmpfs can be mounted.
/// Fields drop in order: the processes go before the file systems and directories they use.
struct FullDisk {
    gateway: Gateway,
    sub: Consumers,
    broker: Mosquitto,
    proxy: Proxy,
    stream: CancellationToken,
    full: Option<DiskFull>,
    /// Log mark taken just before the disk filled.
    mark: u64,
    _fs: Tmpfs,
    dir: tempfile::TempDir,
}

impl FullDisk {
    async fn start(name: &str, points: &str) -> Option<FullDisk> {
        let dir = tempfile::tempdir().unwrap();
        let fs = Tmpfs::mount_at(&dir.path().join("data"), "8m")?;
        let broker = Mosquitto::start(dir.path());
        let sub = Consumers::start(broker.port, name, &[]);
        let proxy = Proxy::start(broker.port).await;
        let (device, stream) = device().await;
        let url = format!("mqtt://127.0.0.1:{}", proxy.port);
        // `reject_new`: a full disk refuses new samples, so every committed seq must arrive
        // (with `drop_oldest` it would evict never-sent rows for them, counted, by design).
        let store = "store:\n  on_full: reject_new\n";
        let cfg = config_with_points(dir.path(), &url, device, store, points);
        let gateway = Gateway::start(&cfg);
        until_seen(&sub, 40).await;
        // A backlog: the link is refused for a while.
        refuse_until_lost(&gateway, &proxy).await;
        let data = dir.path().join("data");
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            wait_until("a backlog", Duration::from_secs(30), || {
                queue_progress(&path).is_some_and(|p| p.depth >= 100)
            })
        })
        .await
        .unwrap();
        let mark = gateway.log_mark();
        let full = tokio::task::spawn_blocking(move || DiskFull::start(&data, true))
            .await
            .unwrap();
        proxy.mode.store(FORWARD, Ordering::SeqCst);
        Some(FullDisk {
            dir,
            _fs: fs,
            broker,
            sub,
            proxy,
            stream,
            gateway,
            full: Some(full),
            mark,
        })
    }

    /// Rows in the queue file, acknowledged or not.
    fn rows_in_file(&self) -> u64 {
        fieldrelay::queue::QueueReader::open(&self.dir.path().join("data"))
            .and_then(|r| r.count())
            .unwrap_or(0)
    }

    /// Asserts what a full disk must not cause since it filled: a reconnect, or more than a
    /// handful of warnings and errors.
    fn assert_calm(&self) {
        let log = self.gateway.log_since(self.mark);
        let connects = log.matches("uplink connected").count();
        assert_eq!(connects, 1, "one connection while the disk is full:\n{log}");
        assert!(!log.contains("uplink connection lost"), "{log}");
        let loud: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(
            (1..=5).contains(&loud.len()),
            "a handful of lines for the whole outage: {loud:#?}"
        );
        assert!(
            loud.iter().any(|l| l.contains("queue commits fail")),
            "{loud:#?}"
        );
    }

    /// Returns once the link is up again on the full disk.
    async fn connected(&self) {
        logged_after(
            &self.gateway,
            self.mark,
            "uplink connected",
            Duration::from_secs(30),
        )
        .await;
    }

    /// [`FullDisk::assert_calm`] after twice the response timeout: a link that gave up would
    /// have reconnected (and failed again) several times by then.
    async fn assert_calm_for_a_while(&self) {
        let started = Instant::now();
        while started.elapsed() < RESPONSE_TIMEOUT * 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.assert_calm();
    }

    fn free(&mut self) {
        if let Some(full) = self.full.take() {
            full.free();
        }
    }
}

/// The issue's QoS 1 case: the cloud comes back while the disk is full. The backlog is
/// delivered; the acknowledgements are kept and written once space returns, so the depth is
/// then the rows not acknowledged (none), and a graceful restart resends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_drains_qos1_and_a_restart_resends_nothing_acknowledged() {
    let points =
        "      - name: c1\n        table: holding\n        address: 0\n        type: u16\n        \
                  qos: 1\n        publish: every_poll\n";
    let Some(mut t) = FullDisk::start("faults-full-q1", points).await else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    // The backlog drains while the disk is full: its rows arrive, their deletes cannot commit.
    let backlog = queue_progress(t.dir.path()).unwrap().last_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=backlog).all(|s| t.sub.seen_by_any().contains_key(&s)) {
        assert!(Instant::now() < deadline, "the backlog was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.rows_in_file() >= 100,
        "delivered rows wait in the file for a commit"
    );
    t.assert_calm();

    t.free();
    t.stream.cancel();
    let data = t.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        wait_until(
            "every acknowledged row deleted",
            Duration::from_secs(30),
            || queue_progress(&data).is_some_and(|p| p.depth == 0),
        )
    })
    .await
    .unwrap();
    let last_seq = queue_progress(t.dir.path()).unwrap().last_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..=last_seq).all(|s| t.sub.seen().contains_key(&s)) {
        assert!(Instant::now() < deadline, "committed samples lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = t.sub.seen();

    // A graceful restart: nothing acknowledged comes again. A new sample shows the link is up
    // and past any resend (resends go first).
    let status = t.gateway.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let (device, stream) = device().await;
    let url = format!("mqtt://127.0.0.1:{}", t.proxy.port);
    let store = "store:\n  on_full: reject_new\n";
    let cfg = config_with_points(t.dir.path(), &url, device, store, points);
    t.gateway = Gateway::start(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.sub.seen().keys().any(|s| *s > last_seq) {
        assert!(Instant::now() < deadline, "no new sample after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.cancel();
    let after = t.sub.seen();
    let resent: Vec<u64> = (1..=last_seq)
        .filter(|s| after.get(s).map(|e| e.1) != before.get(s).map(|e| e.1))
        .collect();
    assert!(resent.is_empty(), "acknowledged rows resent: {resent:?}");
    drop(t.broker);
}

/// The issue's QoS 2 case: with a QoS 2 point and the disk full, the link stays up (no
/// reconnect loop), pauses without losing what the broker holds, and delivers every QoS 2
/// sample once when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_with_a_qos2_point_pauses_the_link_without_reconnecting() {
    let Some(mut t) = FullDisk::start("faults-full-q2", POINTS).await else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    t.connected().await;
    // Every session write fails meanwhile.
    t.assert_calm_for_a_while().await;
    let log = t.gateway.log_since(t.mark);
    assert_eq!(log.matches("uplink paused").count(), 1, "{log}");

    t.free();
    until_seen(&t.sub, t.sub.seen().len() + 40).await;
    let dir = t.dir.path().to_path_buf();
    stop_drain_and_check(&dir, t.stream.clone(), &t.sub, true).await;
}

/// A command that arrives while the disk is full is held, not a reason to reconnect: its
/// commit to the command inbox fails, its PUBACK waits while the link stays up, and once space
/// returns it is stored, written to the device and answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_holds_an_incoming_command_without_reconnecting() {
    let points = "      - name: c1\n        table: holding\n        address: 0\n        type: u16\n        \
                  qos: 1\n        publish: every_poll\n      - name: sp\n        table: holding\n        \
                  address: 5\n        type: u16\n        writable: true\n";
    let Some(mut t) = FullDisk::start("faults-full-cmd", points).await else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); disk-full not exercised");
        return;
    };
    t.connected().await;
    let topic = format!("{PREFIX}/sp/set");
    let sent = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.broker.port.to_string(),
            "-q",
            "1",
        ])
        .args(["-t", &topic, "-m", r#"{"id":"held-1","value":7}"#])
        .status()
        .expect("run mosquitto_pub");
    assert!(sent.success());
    logged_after(
        &t.gateway,
        t.mark,
        "cannot store incoming commands",
        Duration::from_secs(30),
    )
    .await;
    // The command stays unacknowledged meanwhile.
    t.assert_calm_for_a_while().await;
    let result = format!("{topic}/result ");
    let results = |sub: &Consumers| {
        sub.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&result) && l.contains(r#""id":"held-1""#))
            .cloned()
            .collect::<Vec<String>>()
    };
    assert!(results(&t.sub).is_empty(), "answered before it was stored");

    t.free();
    logged_after(
        &t.gateway,
        t.mark,
        "incoming commands stored again after a pause",
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while results(&t.sub).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the held command was never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered = results(&t.sub);
    assert!(answered[0].contains(r#""ok":true"#), "{answered:?}");
    let log = t.gateway.log_since(t.mark);
    assert_eq!(
        log.matches("command done").count(),
        1,
        "written once:\n{log}"
    );
    assert_eq!(log.matches("uplink connected").count(), 1, "{log}");
    t.stream.cancel();
}
