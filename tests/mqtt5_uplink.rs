//! `uplink.protocol: mqtt5` against a real mosquitto 2 (which speaks MQTT 5): an ACL refusal
//! (PUBACK 0x87) sets the point's rows aside as rejected while the rest drains on the same
//! connection; the broker's Receive Maximum and Maximum Packet Size are obeyed (asserted on a
//! recording proxy between the uplink and the broker); data topics travel as topic aliases.
//!
//! The uplink runs in process on a real queue file, as in `drain_order.rs`.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Mosquitto, Subscriber};
use fieldrelay::config::{Batching, Mqtt5Session, Protocol, Qos, SessionMode, UplinkConfig};
use fieldrelay::queue::{Queue, QueueOptions, QueueWriter};
use fieldrelay::sample::{now_ms, Sample, Value};
use fieldrelay::uplink::UplinkStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "fieldrelay/m5";

fn sample(point: &str, value: Value) -> Sample {
    Sample {
        device: Arc::from("boiler"),
        point: Arc::from(point),
        value,
        ts_ms: now_ms(),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

fn mqtt5_config(port: u16) -> UplinkConfig {
    UplinkConfig {
        keep_alive: Duration::from_secs(30),
        topic_prefix: PREFIX.into(),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        protocol: Protocol::Mqtt5(Mqtt5Session {
            session_expiry: Duration::from_secs(3600),
            will_delay: Duration::from_secs(5),
        }),
        ..UplinkConfig::plain("127.0.0.1", port, "m5-gw")
    }
}

/// A queue in `dir` holding `samples`, committed.
async fn queue_with(dir: &std::path::Path, samples: Vec<Sample>) -> (Queue, QueueWriter) {
    let (queue, _live, writer) =
        Queue::open(&dir.join("data"), QueueOptions::default()).expect("open the queue");
    let n = samples.len() as u64;
    for s in samples {
        queue.push(s).await.unwrap();
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq >= n)
        .await
        .unwrap();
    (queue, writer)
}

/// Runs the uplink on `queue` until the queue is empty; returns its counters.
async fn drain(config: UplinkConfig, queue: &Queue) -> Arc<UplinkStats> {
    let stats = Arc::new(UplinkStats::default());
    let uplink = common::in_process_uplink(&config, queue, stats.clone());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(uplink.run(cancel.clone()));
    let drained = queue.progress().wait_for(|p| p.depth == 0).await.is_ok();
    cancel.cancel();
    task.await.unwrap();
    assert!(drained, "the queue drained");
    stats
}

async fn subscriber(broker: &Mosquitto, id: &str) -> Subscriber {
    let mut sub = Subscriber::connect(broker.port, id, &[&format!("{PREFIX}/#")]).await;
    common::subscribed(&mut sub, broker.port, &format!("{PREFIX}/probe")).await;
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_denied_point_is_rejected_with_0x87_and_the_rest_drains_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Anonymous clients may read everything and write everything but the `secret` point.
    std::fs::write(
        &acl,
        format!("topic read #\ntopic write {PREFIX}/status\ntopic write {PREFIX}/probe\ntopic write {PREFIX}/boiler/ok\n"),
    )
    .unwrap();
    std::fs::set_permissions(&acl, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let broker = Mosquitto::start_with(dir.path(), &format!("acl_file {}\n", acl.display()));
    let mut sub = subscriber(&broker, "m5-acl-sub").await;
    let samples = (0..200)
        .map(|i| sample(if i % 2 == 0 { "ok" } else { "secret" }, Value::Int(i)))
        .collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;

    let stats = drain(mqtt5_config(broker.port), &queue).await;

    let ok_topic = format!("{PREFIX}/boiler/ok");
    sub.until("every allowed row", Duration::from_secs(20), |seen| {
        seen.iter().filter(|m| m.topic == ok_topic).count() >= 100
    })
    .await;
    let rejected = queue.rejected();
    assert_eq!(rejected.held.get(&0x87), Some(&100), "{rejected:?}");
    assert_eq!(stats.refused().get(&0x87), Some(&100));
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.connects, snapshot.disconnects), (1, 0));
    assert!(sub.on(&format!("{PREFIX}/boiler/secret")).is_empty());
    writer.close().await.unwrap();
}

/// What the recording proxy saw from the client: the most QoS 1/2 PUBLISHes awaiting their
/// PUBACK/PUBREC at once, and the largest packet.
#[derive(Debug, Default)]
struct Recorded {
    outstanding: HashSet<u16>,
    max_outstanding: usize,
    max_packet: usize,
    publishes: usize,
    /// The Message Expiry Interval of each QoS 1/2 PUBLISH that carried one.
    expiries: Vec<u32>,
}

/// A TCP proxy to `broker` that parses MQTT frames both ways and records into the result.
async fn recording_proxy(broker: u16) -> (u16, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let shared = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", broker)).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::spawn(pump(cr, uw, shared.clone(), true));
            tokio::spawn(pump(ur, cw, shared.clone(), false));
        }
    });
    (port, recorded)
}

/// Copies `from` to `to`, recording each whole frame (`outgoing`: from the client).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    recorded: Arc<Mutex<Recorded>>,
    outgoing: bool,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some((frame_len, header_len)) = frame(&buf) {
            let frame: Vec<u8> = buf.drain(..frame_len).collect();
            record(&frame, header_len, outgoing, &recorded);
            // Forwarded frame by frame, after recording: an answer cannot overtake its count.
            if to.write_all(&frame).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the whole frame at the start of `buf` and of its fixed header, once complete.
fn frame(buf: &[u8]) -> Option<(usize, usize)> {
    let mut remaining = 0usize;
    for i in 1..5 {
        let byte = *buf.get(i)?;
        remaining |= usize::from(byte & 0x7F) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let len = 1 + i + remaining;
            return (buf.len() >= len).then_some((len, 1 + i));
        }
    }
    None
}

fn record(frame: &[u8], header: usize, outgoing: bool, recorded: &Mutex<Recorded>) {
    let mut r = recorded.lock().unwrap();
    let kind = frame[0] >> 4;
    if outgoing {
        r.max_packet = r.max_packet.max(frame.len());
        if kind == 3 && (frame[0] >> 1) & 3 > 0 {
            let topic_len = usize::from(u16::from_be_bytes([frame[header], frame[header + 1]]));
            let at = header + 2 + topic_len;
            let pkid = u16::from_be_bytes([frame[at], frame[at + 1]]);
            if let Some(expiry) = message_expiry(&frame[at + 2..]) {
                r.expiries.push(expiry);
            }
            r.outstanding.insert(pkid);
            r.publishes += 1;
            r.max_outstanding = r.max_outstanding.max(r.outstanding.len());
        }
    } else if kind == 4 || kind == 5 {
        let pkid = u16::from_be_bytes([frame[header], frame[header + 1]]);
        r.outstanding.remove(&pkid);
    }
}

/// The Message Expiry Interval (property 0x02) among the properties at the start of `props`
/// (length, then the properties; the uplink sends only 0x02 and 0x23 topic alias).
fn message_expiry(props: &[u8]) -> Option<u32> {
    let len = usize::from(*props.first()?);
    let mut at = 1;
    while at < 1 + len {
        match props[at] {
            0x02 => return Some(u32::from_be_bytes(props[at + 1..at + 5].try_into().ok()?)),
            0x23 => at += 3,
            _ => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_receive_maximum_caps_unacknowledged_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with(dir.path(), "max_inflight_messages 3\n");
    let (proxy, recorded) = recording_proxy(broker.port).await;
    let samples = (0..300).map(|i| sample("temp", Value::Int(i))).collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;

    let stats = drain(mqtt5_config(proxy), &queue).await;

    let r = std::mem::take(&mut *recorded.lock().unwrap());
    assert!(
        r.publishes > 300,
        "every row and the birth went through the proxy: {r:?}"
    );
    assert!(r.max_outstanding <= 3, "Receive Maximum 3 exceeded: {r:?}");
    assert_eq!(stats.snapshot().disconnects, 0);
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_packet_size_caps_batches_and_rejects_a_row_too_large_locally_with_0x95() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with(dir.path(), "max_packet_size 2048\n");
    let (proxy, recorded) = recording_proxy(broker.port).await;
    let mut sub = subscriber(&broker, "m5-size-sub").await;
    let mut samples: Vec<Sample> = (0..400).map(|i| sample("temp", Value::Int(i))).collect();
    samples.insert(200, sample("text", Value::Str(Arc::from("x".repeat(4000)))));
    let (queue, writer) = queue_with(dir.path(), samples).await;
    let config = UplinkConfig {
        batch: Batching::PerDevice {
            max_packet: 64 * 1024,
        },
        ..mqtt5_config(proxy)
    };

    let stats = drain(config, &queue).await;

    let batch_topic = format!("{PREFIX}/boiler");
    let count = |seen: &[common::Message]| -> usize {
        seen.iter()
            .filter(|m| m.topic == batch_topic)
            .filter_map(|m| m.payload["samples"].as_array())
            .map(|samples| samples.len())
            .sum()
    };
    sub.until(
        "every small row in batches",
        Duration::from_secs(20),
        |seen| count(seen) >= 400,
    )
    .await;
    let batches = sub.on(&batch_topic).len();
    assert!(
        batches >= 10,
        "400 samples in 2 KiB batches need many: {batches}"
    );
    assert_eq!(queue.rejected().held.get(&0x95), Some(&1));
    assert_eq!(stats.refused().get(&0x95), Some(&1));
    let r = std::mem::take(&mut *recorded.lock().unwrap());
    assert!(
        r.max_packet <= 2048,
        "a packet over the broker's maximum: {r:?}"
    );
    assert_eq!(stats.snapshot().disconnects, 0);
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_topics_travel_as_aliases_and_subscribers_see_the_right_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with(dir.path(), "max_topic_alias 10\n");
    let mut sub = subscriber(&broker, "m5-alias-sub").await;
    let points = ["temp", "flow", "level"];
    let samples = (0..90)
        .map(|i| sample(points[i % 3], Value::Int(i as i64)))
        .collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;

    let stats = drain(mqtt5_config(broker.port), &queue).await;

    sub.until("every row", Duration::from_secs(20), |seen| {
        points.iter().all(|p| {
            let topic = format!("{PREFIX}/boiler/{p}");
            seen.iter().filter(|m| m.topic == topic).count() >= 30
        })
    })
    .await;
    for p in points {
        let values: Vec<i64> = sub
            .on(&format!("{PREFIX}/boiler/{p}"))
            .iter()
            .filter_map(|m| m.payload["value"].as_i64())
            .collect();
        let index = points.iter().position(|q| *q == p).unwrap() as i64;
        assert!(values.iter().all(|v| v % 3 == index), "{p}: {values:?}");
    }
    // 87 sends by alias (the first of each topic names it), each saving the topic less 3 bytes.
    let topic_len = format!("{PREFIX}/boiler/temp").len() as u64;
    let saved = stats.snapshot().alias_bytes_saved;
    assert!(saved >= 80 * (topic_len - 3), "{saved}");
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_rows_complete_and_every_row_carries_its_remaining_max_age_as_message_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (proxy, recorded) = recording_proxy(broker.port).await;
    let mut sub = subscriber(&broker, "m5-expiry-sub").await;
    let (queue, _live, writer) = Queue::open(
        &dir.path().join("data"),
        QueueOptions {
            max_age: [(("boiler".into(), "temp".into()), Duration::from_secs(3600))].into(),
            ..QueueOptions::default()
        },
    )
    .expect("open the queue");
    for i in 0..100 {
        let mut s = sample(if i % 2 == 0 { "temp" } else { "flow" }, Value::Int(i));
        s.qos = if i % 4 < 2 {
            Qos::ExactlyOnce
        } else {
            Qos::AtLeastOnce
        };
        queue.push(s).await.unwrap();
    }
    queue
        .progress()
        .wait_for(|p| p.last_seq >= 100)
        .await
        .unwrap();

    let stats = drain(mqtt5_config(proxy), &queue).await;

    sub.until("every row", Duration::from_secs(20), |seen| {
        seen.iter()
            .filter(|m| m.topic.starts_with(&format!("{PREFIX}/boiler/")))
            .count()
            >= 100
    })
    .await;
    assert_eq!(stats.snapshot().acked, 100);
    let r = std::mem::take(&mut *recorded.lock().unwrap());
    assert_eq!(
        r.expiries.len(),
        50,
        "only the temp rows have a max_age: {:?}",
        r.expiries
    );
    assert!(
        r.expiries.iter().all(|e| (3500..=3600).contains(e)),
        "{:?}",
        r.expiries
    );
    writer.close().await.unwrap();
}

/// QoS 1 through `mosquitto_pub`, which returns after the broker's PUBACK.
fn command(port: u16, topic: &str, payload: &str) {
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("fieldrelay/test-gw/{topic}"), "-m", payload])
        .status()
        .expect("run mosquitto_pub (mosquitto-clients)");
    assert!(status.success());
}

/// The gateway binary under `protocol: mqtt5`: birth and graceful death, commands subscribed
/// and acknowledged, and the session kept by `session_expiry` across a stop, so a command sent
/// meanwhile is written and answered after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mqtt5_the_session_keeps_a_command_sent_while_the_gateway_was_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (regs, device, _sim) = common::start_simulator().await;
    let p = "fieldrelay/test-gw";
    let config = dir.path().join("gateway.yaml");
    let text = common::config_head(
        &dir.path().join("data"),
        broker.port,
        device,
        "  protocol: mqtt5\n  will_delay: 0s\n",
    ) + "devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: mode, table: holding, address: 2, type: u16, writable: true}
      - {name: temperature, table: input, address: 0, type: i16}
";
    std::fs::write(&config, text).unwrap();
    let filters = [format!("{p}/+/+/set/result"), format!("{p}/status")];
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut sub = Subscriber::connect(broker.port, "m5-cmd-sub", &filters).await;
    let mut gateway = common::Gateway::start(&config);
    let answered = |id: String| {
        move |seen: &[common::Message]| {
            seen.iter()
                .any(|m| m.topic.ends_with("/set/result") && m.payload["id"] == id.as_str())
        }
    };
    // Probe until the gateway's subscription is in place (a probe to a read-only point is
    // refused before it reaches the device).
    for n in 0.. {
        let id = format!("probe{n}");
        command(
            broker.port,
            "boiler/temperature/set",
            &format!(r#"{{"id":"{id}","value":1}}"#),
        );
        if sub
            .try_until(Duration::from_millis(500), answered(id))
            .await
        {
            break;
        }
        assert!(n < 60, "the gateway never answered a command");
    }
    let status = |state: &'static str| {
        move |seen: &[common::Message]| {
            seen.iter()
                .any(|m| m.topic == format!("{p}/status") && m.payload["status"] == state)
        }
    };
    sub.until("the birth", Duration::from_secs(20), status("online"))
        .await;
    let exit = tokio::task::spawn_blocking(move || {
        let exit = gateway.terminate(Duration::from_secs(20));
        (exit, gateway)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{:?}", exit.0);
    sub.until(
        "the graceful death",
        Duration::from_secs(20),
        status("offline"),
    )
    .await;
    let payload = format!(r#"{{"id":"late","value":42,"ts":{}}}"#, now_ms());
    command(broker.port, "boiler/mode/set", &payload);
    let _gateway = common::Gateway::start(&config);
    sub.until(
        "the late command's result",
        Duration::from_secs(30),
        answered("late".into()),
    )
    .await;
    let result = sub
        .seen
        .iter()
        .find(|m| m.payload["id"] == "late")
        .map(|m| m.payload.clone())
        .unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(regs.holding(1, 2, 1), [42]);
    let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap();
    assert!(
        log.contains(" as test-gw (p5, c0"),
        "connected with MQTT 5, clean start 0"
    );
}

/// What a scripted MQTT 5 broker saw.
#[derive(Debug, Default)]
struct Script {
    /// When each CONNECT arrived.
    connects: Vec<std::time::Instant>,
    /// When each DISCONNECT the broker sent went out.
    disconnects: Vec<std::time::Instant>,
    /// (packet id, topic or alias, refused) of each QoS 1 PUBLISH, in arrival order.
    publishes: Vec<(u16, bool)>,
    /// Payloads of the PUBLISHes acknowledged with success.
    delivered: Vec<bytes::Bytes>,
}

/// A broker we script with rumqttc's MQTT 5 codec (mosquitto cannot be made to answer quota
/// exceeded or take a session over on cue): `answer(n)` is the reason code of the `n`th QoS 1
/// PUBLISH (from 1); `disconnect` is sent right after the first CONNACK.
async fn scripted_broker(
    answer: fn(usize) -> rumqttc::v5::mqttbytes::v5::PubAckReason,
    disconnect: Option<rumqttc::v5::mqttbytes::v5::DisconnectReasonCode>,
) -> (u16, Arc<Mutex<Script>>) {
    use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet, PubAck};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Mutex::new(Script::default()));
    let shared = script.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let script = shared.clone();
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                loop {
                    // rumqttc cannot read the 2-byte DISCONNECT its own codec writes.
                    if buf.starts_with(&[0xE0, 0x00]) {
                        return;
                    }
                    let packet = match Packet::read(&mut buf, None) {
                        Ok(packet) => packet,
                        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                            match socket.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => continue,
                            }
                        }
                        Err(e) => panic!("scripted broker cannot read: {e}"),
                    };
                    let mut out = bytes::BytesMut::new();
                    let mut close = false;
                    match packet {
                        Packet::Connect(..) => {
                            let first = {
                                let mut s = script.lock().unwrap();
                                s.connects.push(std::time::Instant::now());
                                s.connects.len() == 1
                            };
                            let ack = ConnAck {
                                session_present: false,
                                code: ConnectReturnCode::Success,
                                properties: None,
                            };
                            Packet::ConnAck(ack).write(&mut out, None).unwrap();
                            if let (true, Some(code)) = (first, disconnect) {
                                // As mosquitto writes it: the reason code, no properties.
                                out.extend_from_slice(&[0xE0, 0x01, code as u8]);
                                script
                                    .lock()
                                    .unwrap()
                                    .disconnects
                                    .push(std::time::Instant::now());
                                close = true;
                            }
                        }
                        Packet::Publish(p) if p.pkid != 0 => {
                            let mut s = script.lock().unwrap();
                            let reason = answer(s.publishes.len() + 1);
                            let refused =
                                reason != rumqttc::v5::mqttbytes::v5::PubAckReason::Success;
                            s.publishes.push((p.pkid, refused));
                            if !refused {
                                s.delivered.push(p.payload.clone());
                            }
                            let mut ack = PubAck::new(p.pkid, None);
                            ack.reason = reason;
                            Packet::PubAck(ack).write(&mut out, None).unwrap();
                        }
                        Packet::PingReq(_) => {
                            Packet::PingResp(rumqttc::v5::mqttbytes::v5::PingResp)
                                .write(&mut out, None)
                                .unwrap();
                        }
                        Packet::Disconnect(_) => return,
                        _ => {}
                    }
                    if socket.write_all(&out).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (port, script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_keeps_the_rows_and_sends_them_again_on_the_same_connection() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    let dir = tempfile::tempdir().unwrap();
    // The birth is the first PUBLISH; the 4th and 5th (two rows) are refused for now.
    let (port, script) = scripted_broker(
        |n| match n {
            4 | 5 => PubAckReason::QuotaExceeded,
            _ => PubAckReason::Success,
        },
        None,
    )
    .await;
    let samples = (0..20).map(|i| sample("temp", Value::Int(i))).collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;

    // A clean session: no first connection to clear an unknown broker session.
    let config = UplinkConfig {
        session: SessionMode::Clean,
        ..mqtt5_config(port)
    };
    let stats = drain(config, &queue).await;

    let s = std::mem::take(&mut *script.lock().unwrap());
    let refused: Vec<u16> = s.publishes.iter().filter(|p| p.1).map(|p| p.0).collect();
    assert_eq!(refused.len(), 2, "{:?}", s.publishes);
    for pkid in &refused {
        assert!(
            s.publishes.iter().any(|p| p.0 == *pkid && !p.1),
            "packet id {pkid} sent again and delivered: {:?}",
            s.publishes
        );
    }
    let rows = s
        .delivered
        .iter()
        .filter(|p| p.windows(6).any(|w| w == b"\"seq\":"))
        .count();
    assert_eq!(rows, 20, "every row delivered once");
    assert_eq!(s.connects.len(), 1, "no reconnect");
    assert_eq!(stats.snapshot().quota_pauses, 2);
    assert_eq!(queue.rejected().held.len(), 0);
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_waits_the_longest_backoff_before_dialling_again() {
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, PubAckReason};
    let dir = tempfile::tempdir().unwrap();
    let (port, script) = scripted_broker(
        |_| PubAckReason::Success,
        Some(DisconnectReasonCode::SessionTakenOver),
    )
    .await;
    let samples = (0..5).map(|i| sample("temp", Value::Int(i))).collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;
    let config = UplinkConfig {
        reconnect_initial: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(1500),
        session: SessionMode::Clean,
        ..mqtt5_config(port)
    };

    let stats = drain(config, &queue).await;

    let s = std::mem::take(&mut *script.lock().unwrap());
    assert_eq!(s.connects.len(), 2, "{:?}", s.connects);
    // Not the 10 ms first step of the backoff: its ceiling (a lower bound, never flaky).
    let waited = s.connects[1] - s.disconnects[0];
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert_eq!(stats.snapshot().disconnects, 1);
    let error = stats.retrying();
    assert!(error.is_none(), "connected again: {error:?}");
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_above_the_brokers_maximum_qos_are_rejected_locally_with_0x9b() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_with(dir.path(), "max_qos 1\n");
    let mut sub = subscriber(&broker, "m5-qos-sub").await;
    let samples = (0..30)
        .map(|i| {
            let mut s = sample("temp", Value::Int(i));
            if i % 3 == 1 {
                s.qos = Qos::ExactlyOnce;
            }
            s
        })
        .collect();
    let (queue, writer) = queue_with(dir.path(), samples).await;

    let stats = drain(mqtt5_config(broker.port), &queue).await;

    let topic = format!("{PREFIX}/boiler/temp");
    sub.until("the QoS 1 rows", Duration::from_secs(20), |seen| {
        seen.iter().filter(|m| m.topic == topic).count() >= 20
    })
    .await;
    let held = queue.rejected().held;
    assert_eq!(held.get(&0x9B), Some(&10), "{held:?}");
    assert_eq!(stats.snapshot().disconnects, 0);
    writer.close().await.unwrap();
}
