//! The link against a scripted broker on a loopback socket and a real queue file, on paused
//! tokio time. Each test is named after the transition it drives.

use super::*;
use crate::uplink::connection;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, PubAck, PubComp, PubRec, PubRel, Publish, SubAck,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::Qos;
use crate::queue::{Delivery, QueueOptions, QueueReader, QueueWriter};
use crate::sample::{Sample, Value};
use crate::uplink::inbound::{self, Incoming};

/// A scripted broker end of one connection.
struct FakeBroker {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakeBroker {
    /// The next packet, or `None` when the client closed the connection.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("client sent garbage: {e}"),
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Accepts a connection and reads its CONNECT (no CONNACK yet).
    async fn accept(listener: &TcpListener) -> (FakeBroker, Connect) {
        let (stream, _) = listener.accept().await.unwrap();
        // No Nagle delay: on paused time the clock would jump past the response deadline
        // while a delayed segment waits in the kernel.
        stream.set_nodelay(true).unwrap();
        let mut broker = FakeBroker {
            stream,
            buf: BytesMut::new(),
        };
        match broker.next().await {
            Some(Packet::Connect(c)) => (broker, c),
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    async fn connack(&mut self, session_present: bool) {
        self.send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            session_present,
        )))
        .await;
    }

    /// Accepts the persistent connection (after the one-time clean start of a new queue file)
    /// and answers it.
    async fn connected(listener: &TcpListener, session_present: bool) -> FakeBroker {
        let (mut broker, connect) = FakeBroker::accept(listener).await;
        assert!(!connect.clean_session, "a persistent session by default");
        broker.connack(session_present).await;
        broker
    }

    async fn expect_publish(&mut self) -> Publish {
        match self.next().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Answers the SUBSCRIBE to the command filter.
    async fn expect_subscribe(&mut self) {
        match self.next().await {
            Some(Packet::Subscribe(s)) => {
                assert_eq!(s.filters[0].path, "p/+/+/set");
                assert_eq!(s.filters[0].qos, QoS::AtLeastOnce);
                self.send(Packet::SubAck(SubAck::new(
                    s.pkid,
                    vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                )))
                .await;
            }
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    }

    /// Sends a QoS 1 command with packet id `pkid`.
    async fn command(&mut self, pkid: u16, dup: bool) {
        let mut p = Publish::new(format!("p/d/x{pkid}/set"), QoS::AtLeastOnce, "1");
        p.pkid = pkid;
        p.dup = dup;
        self.send(Packet::Publish(p)).await;
    }

    /// Skips the birth certificate.
    async fn expect_birth(&mut self) {
        let p = self.expect_publish().await;
        assert_eq!(p.topic, "p/status");
        assert!(p.retain);
        self.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    }
}

fn config(port: u16) -> UplinkConfig {
    UplinkConfig {
        keep_alive: Duration::from_secs(10),
        topic_prefix: "p".into(),
        reconnect_initial: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        max_inflight: 8,
        ..UplinkConfig::plain("127.0.0.1", port, "t")
    }
}

fn sample(i: i64, qos: Qos) -> Sample {
    Sample {
        device: "d".into(),
        point: "p".into(),
        value: Value::Int(i),
        ts_ms: 1,
        qos,
        retain: false,
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    queue: Queue,
    writer: Option<QueueWriter>,
    listener: TcpListener,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    stats: Arc<UplinkStats>,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (queue, live, writer) = Queue::open(&path, QueueOptions::default()).unwrap();
        drop(live);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Rig {
            _dir: dir,
            path,
            queue,
            writer: Some(writer),
            listener,
            cancel: CancellationToken::new(),
            task: None,
            stats: Arc::default(),
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Pretends an earlier run already owns the broker session (no clean start).
    async fn known_peer(&self) {
        let peer = format!("t@127.0.0.1:{}", self.port());
        self.queue.set_session_peer(peer).await.unwrap();
    }

    async fn push(&self, n: i64, qos: Qos) {
        let before = self.queue.progress().borrow().last_seq;
        for i in 0..n {
            self.queue.push(sample(i, qos)).await.unwrap();
        }
        let want = before + n as u64;
        self.queue
            .progress()
            .wait_for(|p| p.last_seq >= want)
            .await
            .unwrap();
    }

    fn start(&mut self, config: UplinkConfig, inbound: Option<Inbound>) {
        // No live samples in these tests: the sender is dropped, the branch closes.
        let (_, live) = mpsc::channel(1);
        let dialer = super::super::dialer(&config).unwrap();
        let uplink = Uplink {
            config,
            dialer,
            queue: self.queue.clone(),
            live: LiveReceiver { rx: live },
            inbound,
            presence: Presence::fixed(crate::sample::now_ms()),
            state: tokio::sync::watch::channel(crate::uplink::LinkState::default()).0,
            stats: self.stats.clone(),
        };
        self.task = Some(tokio::spawn(uplink.run(self.cancel.clone())));
    }

    /// Waits until the link's counters satisfy `done`: polled synchronously, like the file in
    /// `publish_records_its_packet_id_and_puback_deletes_the_row` (an async wait would let paused
    /// time jump ahead while the writer thread commits).
    async fn stats_until(&self, what: &str, done: impl Fn(&crate::uplink::UplinkSnapshot) -> bool) {
        for _ in 0..5000 {
            if done(&self.stats.snapshot()) {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("{what}: {:?}", self.stats.snapshot());
    }

    /// A rig whose queue holds `n` rows of `qos`, its link connected (a known broker session,
    /// `session_present = 0`) and past the birth certificate.
    async fn connected_with(n: i64, qos: Qos) -> (Rig, FakeBroker) {
        let mut rig = Rig::new().await;
        rig.known_peer().await;
        rig.push(n, qos).await;
        rig.start(config(rig.port()), None);
        let mut broker = FakeBroker::connected(&rig.listener, false).await;
        broker.expect_birth().await;
        (rig, broker)
    }

    fn rows(&self) -> Vec<StoredRow> {
        QueueReader::open(&self.path).unwrap().entries().unwrap()
    }

    /// Waits until every row was acknowledged (deleted), then stops.
    async fn stop_drained(self) {
        self.queue
            .progress()
            .wait_for(|p| p.depth == 0)
            .await
            .unwrap();
        self.stop().await;
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        if let Some(writer) = self.writer.take() {
            writer.close().await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn new_queue_clears_an_unknown_broker_session_then_connects_persistent() {
    let mut rig = Rig::new().await;
    rig.start(config(rig.port()), None);
    let (mut first, connect) = FakeBroker::accept(&rig.listener).await;
    assert!(connect.clean_session, "first connection clears the session");
    assert_eq!(connect.keep_alive, 10);
    let will = connect.last_will.expect("a Last Will");
    assert!(will.retain);
    assert_eq!(will.topic, "p/status");
    first.connack(false).await;
    assert_eq!(first.next().await, Some(Packet::Disconnect));
    let mut second = FakeBroker::connected(&rig.listener, false).await;
    second.expect_birth().await;
    let peer = rig.queue.session_peer().await.unwrap();
    assert_eq!(peer, Some(format!("t@127.0.0.1:{}", rig.port())));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn missing_pingresp_tears_the_link_down_and_redials() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    rig.start(config(rig.port()), None);
    let mut first = FakeBroker::connected(&rig.listener, false).await;
    let connected = Instant::now();
    first.expect_birth().await;
    // The broker goes silent: no PINGRESP.
    assert_eq!(first.next().await, Some(Packet::PingReq));
    assert_eq!(
        connected.elapsed().as_secs(),
        10,
        "PINGREQ at the keep-alive"
    );
    assert_eq!(first.next().await, None, "link torn down");
    assert_eq!(
        connected.elapsed().as_secs(),
        15,
        "response_timeout (5s) after the PINGREQ"
    );
    let mut second = FakeBroker::connected(&rig.listener, true).await;
    assert!(
        connected.elapsed() <= Duration::from_secs(16),
        "redial within the backoff"
    );
    second.expect_birth().await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn missing_puback_tears_the_link_down_within_response_timeout() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    rig.push(1, Qos::AtLeastOnce).await;
    let mut cfg = config(rig.port());
    cfg.keep_alive = Duration::from_secs(3600);
    rig.start(cfg, None);
    let mut broker = FakeBroker::connected(&rig.listener, false).await;
    let sent = Instant::now();
    let mut saw_row = false;
    for _ in 0..2 {
        let p = broker.expect_publish().await;
        if p.topic == "p/status" {
            broker.send(Packet::PubAck(PubAck::new(p.pkid))).await;
        } else {
            saw_row = true;
        }
    }
    assert!(saw_row);
    assert_eq!(broker.next().await, None, "torn down");
    assert_eq!(sent.elapsed().as_secs(), 5, "after response_timeout");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn qos1_ids_are_not_recorded_and_puback_deletes_the_row() {
    let (rig, mut broker) = Rig::connected_with(2, Qos::AtLeastOnce).await;
    let a = broker.expect_publish().await;
    let b = broker.expect_publish().await;
    assert_eq!((a.qos, a.dup), (QoS::AtLeastOnce, false));
    broker.send(Packet::PubAck(PubAck::new(a.pkid))).await;
    rig.stats_until("a's PUBACK handed to the queue", |s| s.acked == 1)
        .await;
    // Poll the file synchronously until a's delete committed (an async wait would let paused
    // time jump to the response deadline while the writer thread commits). Anything recorded
    // for b was sent to the writer before b's PUBLISH was written, so before a's ack.
    let mut rows = rig.rows();
    for _ in 0..5000 {
        if rows.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        rows = rig.rows();
    }
    assert_eq!(rows.len(), 1, "a's PUBACK deleted it");
    assert_eq!(
        rows[0].delivery,
        Delivery::Queued,
        "b is in flight, its id not recorded"
    );
    broker.send(Packet::PubAck(PubAck::new(b.pkid))).await;
    rig.stop_drained().await;
}

#[tokio::test(start_paused = true)]
async fn counters_follow_publishes_acks_a_lost_link_and_the_resend() {
    let (rig, mut broker) = Rig::connected_with(2, Qos::AtLeastOnce).await;
    let a = broker.expect_publish().await;
    let b = broker.expect_publish().await;
    rig.stats_until("two publishes on one connection", |s| {
        (s.connects, s.published) == (1, 2)
    })
    .await;
    broker.send(Packet::PubAck(PubAck::new(a.pkid))).await;
    rig.stats_until("one ack, one row in flight", |s| {
        (s.acked, s.inflight) == (1, 1)
    })
    .await;

    // The broker drops the connection with b unacknowledged; the session survives.
    drop(broker);
    let mut broker = FakeBroker::connected(&rig.listener, true).await;
    broker.expect_birth().await;
    // A QoS 1 row's id is not recorded: the resumed session sends it again as new, same seq.
    let again = broker.expect_publish().await;
    assert!(!again.dup);
    assert_eq!(seq_of(&again), seq_of(&b));
    rig.stats_until("a loss, a reconnect and a resend", |s| {
        (s.disconnects, s.connects, s.resent, s.published) == (1, 2, 1, 3)
    })
    .await;
    broker.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    rig.stats_until("both rows acknowledged", |s| {
        (s.acked, s.inflight) == (2, 0)
    })
    .await;
    assert_eq!(rig.stats.snapshot().connect_failures, 0);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn qos2_publish_and_pubrec_are_committed_before_the_wire_and_pubcomp_deletes() {
    let (rig, mut broker) = Rig::connected_with(1, Qos::ExactlyOnce).await;
    let p = broker.expect_publish().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert_eq!(
        rig.rows()[0].delivery,
        Delivery::Published { pkid: p.pkid },
        "a QoS 2 id is on disk before its PUBLISH is written"
    );
    broker.send(Packet::PubRec(PubRec::new(p.pkid))).await;
    assert_eq!(
        broker.next().await,
        Some(Packet::PubRel(PubRel::new(p.pkid)))
    );
    assert_eq!(
        rig.rows()[0].delivery,
        Delivery::Received { pkid: p.pkid },
        "PUBREC on disk before the PUBREL was written"
    );
    broker.send(Packet::PubComp(PubComp::new(p.pkid))).await;
    rig.stop_drained().await;
}

fn seq_of(p: &Publish) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    v["seq"].as_u64().unwrap()
}

/// Stores rows 1 (QoS 1, PUBLISH sent as id 7, as an older build recorded it), 2 (QoS 2, PUBREC received as id 8) and 3
/// (QoS 2, queued), as a killed gateway leaves them.
async fn killed_mid_session(rig: &Rig) {
    rig.push(1, Qos::AtLeastOnce).await;
    rig.push(2, Qos::ExactlyOnce).await;
    rig.queue
        .mark_published(vec![(1, 7), (2, 8)])
        .await
        .unwrap();
    rig.queue.mark_received(vec![2]).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn session_present_resends_publish_with_dup_and_original_id_and_pubrel() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    killed_mid_session(&rig).await;
    rig.start(config(rig.port()), None);
    let mut broker = FakeBroker::connected(&rig.listener, true).await;
    let again = broker.expect_publish().await;
    assert_eq!(
        (again.pkid, again.dup, again.qos),
        (7, true, QoS::AtLeastOnce)
    );
    assert!(std::str::from_utf8(&again.payload)
        .unwrap()
        .contains(r#""seq":1"#));
    assert_eq!(broker.next().await, Some(Packet::PubRel(PubRel::new(8))));
    broker.expect_birth().await;
    // Then the queued row, as new, with an id the resumed ones do not use.
    let new = broker.expect_publish().await;
    assert!(!new.dup);
    assert!(![7, 8].contains(&new.pkid));
    assert!(std::str::from_utf8(&new.payload)
        .unwrap()
        .contains(r#""seq":3"#));
    broker.send(Packet::PubAck(PubAck::new(7))).await;
    broker.send(Packet::PubComp(PubComp::new(8))).await;
    broker.send(Packet::PubRec(PubRec::new(new.pkid))).await;
    assert_eq!(
        broker.next().await,
        Some(Packet::PubRel(PubRel::new(new.pkid)))
    );
    broker.send(Packet::PubComp(PubComp::new(new.pkid))).await;
    rig.stop_drained().await;
}

#[tokio::test(start_paused = true)]
async fn resumed_qos1_rows_go_out_as_new_under_ids_the_broker_does_not_hold() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    // Row 1: QoS 1, sent before the kill (its id was not recorded); row 2: QoS 2, sent as id 1,
    // the first id a fresh session would hand out.
    rig.push(1, Qos::AtLeastOnce).await;
    rig.push(1, Qos::ExactlyOnce).await;
    rig.queue.mark_published(vec![(2, 1)]).await.unwrap();
    rig.start(config(rig.port()), None);
    let mut broker = FakeBroker::connected(&rig.listener, true).await;
    let qos2 = broker.expect_publish().await;
    assert_eq!((qos2.pkid, qos2.dup, seq_of(&qos2)), (1, true, 2));
    broker.expect_birth().await;
    let qos1 = broker.expect_publish().await;
    assert_eq!(
        (qos1.qos, qos1.dup, seq_of(&qos1)),
        (QoS::AtLeastOnce, false, 1)
    );
    assert_ne!(
        qos1.pkid, 1,
        "never an id the broker holds a PUBREC state for"
    );
    broker.send(Packet::PubAck(PubAck::new(qos1.pkid))).await;
    broker.send(Packet::PubRec(PubRec::new(1))).await;
    assert_eq!(broker.next().await, Some(Packet::PubRel(PubRel::new(1))));
    broker.send(Packet::PubComp(PubComp::new(1))).await;
    rig.stop_drained().await;
}

#[tokio::test(start_paused = true)]
async fn session_not_present_resets_and_resends_everything_as_new() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    killed_mid_session(&rig).await;
    rig.start(config(rig.port()), None);
    let mut broker = FakeBroker::connected(&rig.listener, false).await;
    broker.expect_birth().await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let p = broker.expect_publish().await;
        assert!(!p.dup, "resent as new");
        let text = std::str::from_utf8(&p.payload).unwrap().to_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [1, 2, 3], "oldest first, same seq");
    rig.stop().await;
}

/// Makes the queue's commits of one session stage fail, as a full disk would (`state`: 1 for
/// "PUBLISH sent", 2 for "PUBREC received"); [`disk_returns`] ends it.
fn disk_full_for_state(rig: &Rig, state: u8) {
    let conn = rusqlite::Connection::open(rig.path.join("queue.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER full BEFORE UPDATE ON messages WHEN NEW.state = {state} \
         BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;"
    ))
    .unwrap();
}

fn disk_returns(rig: &Rig) {
    let conn = rusqlite::Connection::open(rig.path.join("queue.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch("DROP TRIGGER full").unwrap();
}

impl FakeBroker {
    /// The next packet that is not a PINGREQ, answering PINGREQs; also returns how many there
    /// were.
    async fn next_answering_pings(&mut self) -> (Option<Packet>, usize) {
        let mut pings = 0;
        loop {
            match self.next().await {
                Some(Packet::PingReq) => {
                    pings += 1;
                    self.send(Packet::PingResp).await;
                }
                other => return (other, pings),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_qos2_id_that_cannot_be_committed_pauses_the_link_instead_of_dropping_it() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    rig.push(2, Qos::ExactlyOnce).await;
    disk_full_for_state(&rig, 1);
    rig.start(config(rig.port()), None);
    let mut broker = FakeBroker::connected(&rig.listener, false).await;
    broker.expect_birth().await;
    // Nothing goes on the wire while the ids cannot be recorded; the keep-alive goes on.
    assert_eq!(broker.next().await, Some(Packet::PingReq));
    broker.send(Packet::PingResp).await;
    assert!(
        rig.rows().iter().all(|r| r.delivery == Delivery::Queued),
        "no id recorded"
    );
    disk_returns(&rig);
    let mut published = Vec::new();
    while published.len() < 2 {
        match broker.next_answering_pings().await.0 {
            Some(Packet::Publish(p)) => published.push(p),
            other => panic!("expected the rows, got {other:?}"),
        }
    }
    let rows = rig.rows();
    for (row, p) in rows.iter().zip(&published) {
        assert_eq!((p.qos, p.dup), (QoS::ExactlyOnce, false));
        assert_eq!(row.delivery, Delivery::Published { pkid: p.pkid });
    }
    let s = rig.stats.snapshot();
    assert_eq!((s.connects, s.disconnects), (1, 0), "no reconnect");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pubrec_that_cannot_be_committed_holds_the_pubrel_without_a_deadline() {
    let (rig, mut broker) = Rig::connected_with(1, Qos::ExactlyOnce).await;
    let p = broker.expect_publish().await;
    disk_full_for_state(&rig, 2);
    broker.send(Packet::PubRec(PubRec::new(p.pkid))).await;
    // Two keep-alive rounds (20 s) pass, well beyond the response timeout (5 s): the held
    // PUBREL is awaited by nobody, so the link stays up, and it is not written early.
    for _ in 0..2 {
        assert_eq!(broker.next().await, Some(Packet::PingReq));
        broker.send(Packet::PingResp).await;
    }
    assert_eq!(rig.rows()[0].delivery, Delivery::Published { pkid: p.pkid });
    disk_returns(&rig);
    let (next, _) = broker.next_answering_pings().await;
    assert_eq!(next, Some(Packet::PubRel(PubRel::new(p.pkid))));
    assert_eq!(rig.rows()[0].delivery, Delivery::Received { pkid: p.pkid });
    broker.send(Packet::PubComp(PubComp::new(p.pkid))).await;
    rig.stats_until("the row acknowledged on the first connection", |s| {
        (s.acked, s.connects, s.disconnects) == (1, 1, 0)
    })
    .await;
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_rate_paces_the_backlog() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    rig.push(6, Qos::AtLeastOnce).await;
    let mut cfg = config(rig.port());
    cfg.max_rate = Some(2);
    cfg.keep_alive = Duration::from_secs(3600);
    rig.start(cfg, None);
    let mut broker = FakeBroker::connected(&rig.listener, false).await;
    broker.expect_birth().await;
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..6 {
        let p = broker.expect_publish().await;
        at.push(start.elapsed().as_millis());
        broker.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    }
    // A burst of 2 (one second's worth), then one every 500 ms.
    assert_eq!(at, [0, 0, 500, 1000, 1500, 2000]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn incoming_publish_is_acked_only_when_the_intake_acks_in_receive_order() {
    let (rig, mut broker, mut intake) = commands_rig().await;
    for pkid in [21, 22] {
        broker.command(pkid, false).await;
    }
    let first = intake.next().await;
    let second = intake.next().await;
    assert_eq!(first.topic, "p/d/x21/set");
    // The second is done first: no PUBACK may leave before the first one's.
    second.ack.unwrap().ack();
    first.ack.unwrap().ack();
    assert_eq!(broker.next().await, Some(Packet::PubAck(PubAck::new(21))));
    assert_eq!(broker.next().await, Some(Packet::PubAck(PubAck::new(22))));
    rig.stop().await;
}

/// The gateway's presence on the link: the birth carries the device map and is published again
/// when it changes, health reports go out at QoS 0 unretained, the connection is counted, and
/// with `offline: clear` the Last Will and the graceful death are empty retained messages.
#[tokio::test(start_paused = true)]
async fn presence_birth_follows_the_device_map_and_clear_mode_empties_the_death() {
    use crate::config::OfflineStatus;
    use crate::status::gateway::{DeviceInfo, GatewayInfo, VERSION};
    use std::sync::Arc;

    /// The next PUBLISH, answering pings on the way (paused time may reach the keep-alive).
    async fn publish(broker: &mut FakeBroker) -> Publish {
        loop {
            match broker.next().await {
                Some(Packet::Publish(p)) => return p,
                Some(Packet::PingReq) => broker.send(Packet::PingResp).await,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
    fn json(p: &Publish) -> serde_json::Value {
        serde_json::from_slice(&p.payload).unwrap()
    }

    let mut rig = Rig::new().await;
    rig.known_peer().await;
    let info = |devices| {
        Arc::new(GatewayInfo {
            version: VERSION,
            started: 7,
            devices,
            config: None,
        })
    };
    let (info_tx, gateway) = tokio::sync::watch::channel(info(Vec::new()));
    let (health_tx, health) = mpsc::channel(1);
    let stats = Arc::new(crate::uplink::UplinkStats::default());
    let cfg = config(rig.port());
    let (_, live) = mpsc::channel(1);
    rig.task = Some(tokio::spawn(
        Uplink {
            dialer: super::super::dialer(&cfg).unwrap(),
            config: cfg,
            queue: rig.queue.clone(),
            live: LiveReceiver { rx: live },
            inbound: None,
            presence: Presence {
                gateway,
                offline: OfflineStatus::Clear,
                health,
            },
            state: tokio::sync::watch::channel(crate::uplink::LinkState::default()).0,
            stats: stats.clone(),
        }
        .run(rig.cancel.clone()),
    ));
    let (mut broker, connect) = FakeBroker::accept(&rig.listener).await;
    let will = connect.last_will.expect("a Last Will");
    assert!(
        will.retain && will.message.is_empty(),
        "clear: an empty will"
    );
    broker.connack(false).await;
    let birth = publish(&mut broker).await;
    assert_eq!((birth.topic.as_str(), birth.retain), ("p/status", true));
    assert_eq!(json(&birth)["started"], 7);
    assert_eq!(json(&birth)["devices"], serde_json::json!([]));
    broker.send(Packet::PubAck(PubAck::new(birth.pkid))).await;
    assert_eq!(stats.snapshot().connects, 1);

    info_tx.send_replace(info(vec![DeviceInfo {
        name: "boiler".into(),
        bus: "plc1".into(),
        points: Vec::new(),
    }]));
    let again = publish(&mut broker).await;
    assert_eq!(again.topic, "p/status");
    assert_eq!(json(&again)["devices"][0]["name"], "boiler");
    broker.send(Packet::PubAck(PubAck::new(again.pkid))).await;

    health_tx
        .send(bytes::Bytes::from_static(br#"{"uptime_s":1}"#))
        .await
        .unwrap();
    let report = publish(&mut broker).await;
    assert_eq!(report.topic, "p/health");
    assert_eq!(report.qos, QoS::AtMostOnce);
    assert!(!report.retain);

    rig.cancel.cancel();
    let death = publish(&mut broker).await;
    assert_eq!(death.topic, "p/status");
    assert!(
        death.retain && death.payload.is_empty(),
        "clear: an empty death"
    );
    broker.send(Packet::PubAck(PubAck::new(death.pkid))).await;
    assert_eq!(broker.next().await, Some(Packet::Disconnect));
    rig.stop().await;
}

/// The intake's end of the seam, one command at a time (the link hands them over in batches).
struct Intake {
    rx: mpsc::Receiver<Vec<Incoming>>,
    pending: std::collections::VecDeque<Incoming>,
}

impl Intake {
    async fn next(&mut self) -> Incoming {
        loop {
            if let Some(incoming) = self.pending.pop_front() {
                return incoming;
            }
            let batch = self.rx.recv().await.expect("the link is running");
            assert!(!batch.is_empty(), "an empty batch was handed over");
            self.pending.extend(batch);
        }
    }
}

/// A link taking commands, connected with a kept session, birth and subscription done.
async fn commands_rig() -> (Rig, FakeBroker, Intake) {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    let (tx, rx) = mpsc::channel(inbound::INTAKE_BACKLOG);
    let inbound = Inbound {
        filters: vec!["p/+/+/set".into()],
        tx,
        max_packet: inbound::MAX_INCOMING_PACKET,
    };
    let mut cfg = config(rig.port());
    cfg.keep_alive = Duration::from_secs(3600);
    rig.start(cfg, Some(inbound));
    let mut broker = FakeBroker::connected(&rig.listener, true).await;
    broker.expect_birth().await;
    broker.expect_subscribe().await;
    let intake = Intake {
        rx,
        pending: Default::default(),
    };
    (rig, broker, intake)
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_command_tears_the_link_down_and_its_redelivery_is_acked() {
    let (rig, mut broker, mut intake) = commands_rig().await;
    broker.command(21, false).await;
    broker.command(22, false).await;
    let first = intake.next().await;
    let second = intake.next().await;
    // The second is stored; the first could not be committed (its token is dropped unacked).
    second.ack.unwrap().ack();
    drop(first);
    let torn = Instant::now();
    assert_eq!(
        broker.next().await,
        None,
        "torn down at once, without a PUBACK for 22 (it must not pass 21)"
    );
    assert_eq!(torn.elapsed(), Duration::ZERO);

    // The broker redelivers both on the next connection; now the intake succeeds.
    let mut broker = FakeBroker::connected(&rig.listener, true).await;
    assert!(
        torn.elapsed() <= Duration::from_secs(1),
        "redialled within the backoff (reconnect_max 1 s)"
    );
    broker.expect_birth().await;
    broker.expect_subscribe().await;
    for pkid in [21, 22] {
        broker.command(pkid, true).await;
        let again = intake.next().await;
        assert_eq!(again.topic, format!("p/d/x{pkid}/set"));
        assert!(again.dup);
        again.ack.unwrap().ack();
        assert_eq!(broker.next().await, Some(Packet::PubAck(PubAck::new(pkid))));
    }
    rig.stats_until("one loss, two connects", |s| {
        (s.disconnects, s.connects) == (1, 2)
    })
    .await;
    rig.stop().await;
}

/// A burst far above any in-flight limit, with an oversized PUBLISH and a retained one in it:
/// everything reaches the intake on the same connection, the oversized one without its payload
/// (read past, not buffered), and the PUBACKs leave in receive order whatever order the intake
/// acks in.
#[tokio::test(start_paused = true)]
async fn a_burst_with_an_oversized_command_stays_on_one_connection() {
    let (rig, mut broker, mut intake) = commands_rig().await;
    for pkid in 1..=300u16 {
        if pkid == 150 {
            let big = vec![b'x'; 3 * connection::MAX_INCOMING_PACKET];
            let mut p = Publish::new("p/d/big/set", QoS::AtLeastOnce, big);
            p.pkid = pkid;
            broker.send(Packet::Publish(p)).await;
        } else {
            broker.command(pkid, false).await;
        }
    }
    let mut retained = Publish::new("p/d/kept/set", QoS::AtLeastOnce, "77");
    retained.pkid = 301;
    retained.retain = true;
    broker.send(Packet::Publish(retained)).await;
    let mut received = Vec::new();
    for _ in 1..=301 {
        received.push(intake.next().await);
    }
    let big = &received[149];
    assert_eq!(big.topic, "p/d/big/set");
    assert_eq!(
        big.oversized,
        Some(3 * connection::MAX_INCOMING_PACKET as u64)
    );
    assert!(big.payload.is_empty());
    assert_eq!(received[150].topic, "p/d/x151/set", "read on after it");
    assert!(received[300].retained && received[300].payload == "77");
    assert!(received[..300].iter().all(|i| !i.retained));
    // Acked newest first: nothing may leave before 1 is acked, then all in receive order.
    let mut tokens: Vec<_> = received.into_iter().map(|i| i.ack.unwrap()).collect();
    let oldest = tokens.remove(0);
    for token in tokens.into_iter().rev() {
        token.ack();
    }
    oldest.ack();
    for pkid in 1..=301 {
        assert_eq!(broker.next().await, Some(Packet::PubAck(PubAck::new(pkid))));
    }
    assert_eq!(rig.stats.snapshot().connects, 1);
    assert_eq!(rig.stats.snapshot().disconnects, 0);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn commands_dropped_by_shutdown_do_not_tear_the_link_down() {
    let (rig, mut broker, mut intake) = commands_rig().await;
    broker.command(21, false).await;
    let under_way = intake.next().await;
    rig.cancel.cancel();
    drop(under_way);
    let death = broker.expect_publish().await;
    assert_eq!(
        death.topic, "p/status",
        "the graceful death, not a teardown"
    );
    broker.send(Packet::PubAck(PubAck::new(death.pkid))).await;
    assert_eq!(
        broker.next().await,
        Some(Packet::Disconnect),
        "no PUBACK for 21"
    );
    assert_eq!(rig.stats.snapshot().disconnects, 0);
    rig.stop().await;
}

/// Under a rate limit one token buys a device's full batch although two devices' polls
/// interleave in the queue: the other device's rows wait in the read-ahead for the next token.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_token_buys_a_devices_full_batch_past_the_other_devices_rows() {
    let mut rig = Rig::new().await;
    rig.known_peer().await;
    // Polls of three rows, devices a and b in turn: seqs 1-3 a, 4-6 b, 7-9 a, 10-12 b.
    for i in 0..12 {
        let device = if i / 3 % 2 == 0 { "a" } else { "b" };
        let row = Sample {
            device: device.into(),
            ..sample(i, Qos::AtLeastOnce)
        };
        rig.queue.push(row).await.unwrap();
    }
    rig.queue
        .progress()
        .wait_for(|p| p.last_seq >= 12)
        .await
        .unwrap();
    let mut cfg = config(rig.port());
    cfg.max_rate = Some(1);
    cfg.keep_alive = Duration::from_secs(3600);
    cfg.batch = crate::config::Batching::PerDeviceCompact { max_packet: 4096 };
    rig.start(cfg, None);
    let mut broker = FakeBroker::connected(&rig.listener, false).await;
    broker.expect_birth().await;
    let start = Instant::now();
    for (device, seqs, at) in [
        ("a", [1, 2, 3, 7, 8, 9], 0),
        ("b", [4, 5, 6, 10, 11, 12], 1000),
    ] {
        let p = broker.expect_publish().await;
        assert_eq!(p.topic, format!("p/{device}"));
        assert_eq!(start.elapsed().as_millis(), at, "one message per token");
        let decoded = crate::uplink::compact::decode(&p.payload).unwrap();
        let got: Vec<u64> = decoded.iter().map(|s| s.seq).collect();
        assert_eq!(got, seqs);
        broker.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    }
    rig.stop().await;
}
