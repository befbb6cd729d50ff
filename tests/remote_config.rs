//! Configuration pushed from the cloud, with real parts: pushes sent with `mosquitto_pub` (a
//! client we did not write) through a real mosquitto to the `fieldrelay` binary, which polls our
//! simulator and keeps its queue in a real SQLite file. The test plays systemd where the
//! gateway asks for a restart (exit 75): it starts the same binary again on the same file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config_head, free_port, start_simulator, Gateway, Message, Mosquitto, Subscriber};
use fieldrelay::simulator::Registers;
use fieldrelay::status::stamp::sha256_hex;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const P: &str = "fieldrelay/test-gw";

/// A gateway file: `uplink_extra` (indented uplink keys), `remote` (the `remote_config`
/// mapping), then the devices. `broker` is the uplink's port.
fn config_text(dir: &Path, broker: u16, device: u16, remote: &str, devices: &str) -> String {
    config_head(&dir.join("data"), broker, device, "  health_interval: 1s\n")
        + &format!("remote_config: {remote}\ndevices:\n{devices}")
}

const BOILER: &str = "  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
      - {name: counter, table: holding, address: 0, type: u16, publish: every_poll}
";

/// QoS 1 through `mosquitto_pub`, which returns after the broker's PUBACK. The payload goes
/// through a file (`-f`): a command-line argument is limited to 128 KiB.
fn publish(port: u16, topic: &str, payload: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("{P}/{topic}"), "-f"])
        .arg(file.path())
        .status()
        .expect("run mosquitto_pub (mosquitto-clients)");
    assert!(status.success());
}

/// `GET /metrics`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn push(port: u16, id: &str, config: &str) {
    publish(
        port,
        "config/set",
        &json!({"id": id, "config": config}).to_string(),
    );
}

fn results(seen: &[Message]) -> Vec<&Message> {
    seen.iter()
        .filter(|m| m.topic == format!("{P}/config/result"))
        .collect()
}

/// Waits for the `n`th result (1-based) of push `id` and returns it.
async fn nth_result(sub: &mut Subscriber, id: &str, n: usize) -> Value {
    let wanted = json!(id);
    let count = |seen: &[Message]| {
        results(seen)
            .into_iter()
            .filter(|m| m.payload["id"] == wanted)
            .count()
    };
    sub.until(&format!("result {n} of {id}"), DEADLINE, |seen| {
        count(seen) >= n
    })
    .await;
    results(&sub.seen)
        .into_iter()
        .filter(|m| m.payload["id"] == wanted)
        .nth(n - 1)
        .map(|m| m.payload.clone())
        .unwrap()
}

/// Fields drop in order: the gateway (printing its log on a failure) before the directory.
struct Rig {
    gateway: Gateway,
    sub: Subscriber,
    broker: Mosquitto,
    regs: Registers,
    device: u16,
    config: PathBuf,
    _sim: CancellationToken,
    dir: tempfile::TempDir,
}

impl Rig {
    /// Broker, device, a subscriber to what the gateway publishes, and the gateway on `remote`
    /// and the boiler.
    async fn start(name: &str, remote: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path());
        let (regs, device, sim) = start_simulator().await;
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            config_text(dir.path(), broker.port, device, remote, BOILER),
        )
        .unwrap();
        // Not `P/#`: that would bring the pushes back, larger than the subscriber reads.
        let topics = [
            "boiler/+",
            "pump/+",
            "status",
            "health",
            "config/result",
            "config/current",
        ]
        .map(|t| format!("{P}/{t}"));
        let filters: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut sub = Subscriber::connect(broker.port, name, &filters).await;
        let gateway = Gateway::start(&config);
        // Running, subscribed and polling: the boiler's data arrives.
        sub.until("the boiler's data", DEADLINE, |seen| {
            seen.iter()
                .any(|m| m.topic == format!("{P}/boiler/counter"))
        })
        .await;
        Rig {
            dir,
            broker,
            regs,
            device,
            config,
            sub,
            gateway,
            _sim: sim,
        }
    }

    fn text(&self, remote: &str, devices: &str) -> String {
        config_text(
            self.dir.path(),
            self.broker.port,
            self.device,
            remote,
            devices,
        )
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    fn pending(&self) -> PathBuf {
        self.config.with_file_name("gateway.yaml.pending")
    }
}

/// Invalid and secret-holding pushes are refused with every problem and change nothing; a
/// valid push is applied once: the same id sent again (even with another file) gets the same
/// answer and applies nothing. `P/config/get` names the file and the push that wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pushes_change_nothing_and_an_id_is_applied_once() {
    // With a secret named by file (the on-site broker's password; the broker is not there,
    // which costs the cloud side nothing), to see it redacted.
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("local-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let metrics = free_port();
    let remote = format!(
        "{{allow: true, confirm_within: 20s, max_size: 256KiB}}\n\
         local: {{url: 'mqtt://127.0.0.1:1', username: u, password_file: {}}}\n\
         metrics: {{listen: '127.0.0.1:{metrics}'}}",
        password.display()
    );
    let remote = remote.as_str();
    let mut rig = Rig::start("rc-invalid", remote).await;
    let before = rig.file();

    let broken = rig
        .text(remote, BOILER)
        .replace("poll_interval: 50ms", "poll_interval: 5ms")
        .replace("  keep_alive: 5s\n", "  keep_alive: 5s\n  keep_alve: 5s\n");
    push(rig.broker.port, "bad-1", &broken);
    let answer = nth_result(&mut rig.sub, "bad-1", 1).await;
    assert_eq!(answer["status"], "invalid", "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["uplink.keep_alve", "devices[0].poll_interval"],
        "{answer}"
    );
    assert!(errors
        .iter()
        .all(|e| e["line"].is_u64() && e["column"].is_u64()));

    let secret = rig.text(remote, BOILER).replace(
        "  keep_alive: 5s\n",
        "  keep_alive: 5s\n  password: hunter2\n",
    );
    push(rig.broker.port, "bad-2", &secret);
    let answer = nth_result(&mut rig.sub, "bad-2", 1).await;
    assert_eq!(answer["status"], "invalid", "{answer}");
    assert!(
        answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "uplink.password"
                && e["message"].as_str().unwrap().contains("secret")),
        "{answer}"
    );
    assert_eq!(rig.file(), before, "a refused push changes nothing");
    assert!(!rig.pending().exists());
    let scrape = scrape(metrics);
    assert!(
        scrape.contains("fieldrelay_config_pushes_total{status=\"invalid\"} 2\n")
            && scrape.contains("fieldrelay_config_push_on_trial 0\n"),
        "{scrape}"
    );

    // Valid, reloadable (a poll interval): applied and confirmed without a restart.
    let slower = rig
        .text(remote, BOILER)
        .replace("poll_interval: 50ms", "poll_interval: 60ms");
    push(rig.broker.port, "good-1", &slower);
    let answer = nth_result(&mut rig.sub, "good-1", 1).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(answer["restarted"], false);
    assert_eq!(answer["hash"], sha256_hex(slower.as_bytes()));
    assert_eq!(rig.file(), slower);
    assert_eq!(
        std::fs::read_to_string(rig.config.with_file_name("gateway.yaml.last-good")).unwrap(),
        before
    );

    // The same id again, with another file: the recorded answer, nothing applied.
    let other = slower.replace("poll_interval: 60ms", "poll_interval: 70ms");
    push(rig.broker.port, "good-1", &other);
    let again = nth_result(&mut rig.sub, "good-1", 2).await;
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("seq");
        v
    };
    assert_eq!(strip(&again), strip(&answer));
    assert_eq!(rig.file(), slower, "a repeated id is not applied again");

    // Larger than a command may be (the connection reads up to max_size whole), and larger
    // than max_size.
    let padding = format!("# {}\n", "x".repeat(98)).repeat(1500);
    let big = format!("{slower}{padding}");
    push(rig.broker.port, "big-1", &big);
    let answer = nth_result(&mut rig.sub, "big-1", 1).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(rig.file(), big);
    push(rig.broker.port, "huge-1", &format!("{big}{padding}"));
    rig.sub
        .until("the answer to a push over max_size", DEADLINE, |seen| {
            results(seen)
                .iter()
                .any(|m| m.payload["status"] == "too_large")
        })
        .await;
    assert_eq!(rig.file(), big);

    publish(rig.broker.port, "config/get", r#"{"id":"q1"}"#);
    let topic = format!("{P}/config/current");
    rig.sub
        .until("the current configuration", DEADLINE, |seen| {
            seen.iter().any(|m| m.topic == topic)
        })
        .await;
    let current = &rig.sub.on(&topic)[0].payload;
    assert_eq!(current["id"], "q1");
    assert_eq!(current["set_by"], "big-1");
    assert_eq!(current["hash"], sha256_hex(big.as_bytes()));
    assert_eq!(current["config"]["devices"][0]["poll_interval"], "60ms");
    assert_eq!(current["config"]["local"]["username"], "u");
    assert_eq!(current["config"]["local"]["password_file"], "<redacted>");
    assert!(!current.to_string().contains("local-password"));
    drop(rig.gateway);
}

/// A push that adds a device: the device is in the next birth and its data flows, the birth
/// and the health report name the pushed file, and every row of the queue arrives exactly once
/// (the queue and the session are not touched by the reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_device_runs_and_the_queue_is_untouched() {
    let remote = "{allow: true, confirm_within: 20s}";
    let mut rig = Rig::start("rc-add", remote).await;
    rig.regs.set_holding(2, 0, &[7]);
    let pump = "  - name: pump
    bus: plc1
    unit_id: 2
    poll_interval: 50ms
    points:
      - {name: speed, table: holding, address: 0, type: u16}
";
    let added = rig.text(remote, &format!("{BOILER}{pump}"));
    push(rig.broker.port, "add-pump", &added);
    let answer = nth_result(&mut rig.sub, "add-pump", 1).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    let hash = sha256_hex(added.as_bytes());
    let birth_topic = format!("{P}/status");
    rig.sub
        .until(
            "a birth with the pump and the pushed file",
            DEADLINE,
            |seen| {
                seen.iter().any(|m| {
                    m.topic == birth_topic
                        && m.payload["devices"][1]["name"] == "pump"
                        && m.payload["config"]["hash"] == json!(hash)
                        && m.payload["config"]["id"] == "add-pump"
                })
            },
        )
        .await;
    let health_topic = format!("{P}/health");
    rig.sub
        .until(
            "the pump's data and a health report naming the push",
            DEADLINE,
            |seen| {
                seen.iter()
                    .any(|m| m.topic == format!("{P}/pump/speed") && m.payload["value"] == 7)
                    && seen
                        .iter()
                        .any(|m| m.topic == health_topic && m.payload["config"]["id"] == "add-pump")
            },
        )
        .await;
    // Let rows committed around the push arrive, then look at every queued row's seq.
    let last = rig
        .sub
        .seen
        .iter()
        .filter_map(|m| m.payload["seq"].as_u64())
        .max()
        .unwrap();
    rig.sub
        .until("rows after the push", DEADLINE, |seen| {
            seen.iter().filter_map(|m| m.payload["seq"].as_u64()).max() > Some(last + 20)
        })
        .await;
    let mut seqs: Vec<u64> = rig
        .sub
        .seen
        .iter()
        .filter(|m| !m.retain)
        .filter_map(|m| m.payload["seq"].as_u64())
        .collect();
    let received = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), received, "a row arrived twice");
    let max = *seqs.last().unwrap();
    assert_eq!(seqs, (1..=max).collect::<Vec<_>>(), "a row is missing");
    drop(rig.gateway);
}

/// A push that points the uplink at a dead broker: it needs a restart (exit 75), cannot
/// confirm, and is rolled back (another exit 75) after `confirm_within`; the gateway comes
/// back on the previous file and answers with what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_dead_broker_is_rolled_back_and_answered() {
    let remote = "{allow: true, confirm_within: 3s}";
    let mut rig = Rig::start("rc-dead", remote).await;
    let before = rig.file();
    let dead = free_port();
    let pushed = rig.text(remote, BOILER).replace(
        &format!("mqtt://127.0.0.1:{}", rig.broker.port),
        &format!("mqtt://127.0.0.1:{dead}"),
    );
    push(rig.broker.port, "dead-1", &pushed);
    // Applying the uplink change: a restart, asked for with exit 75.
    assert_eq!(rig.gateway.exited(DEADLINE).code(), Some(75));
    assert_eq!(rig.file(), pushed);
    rig.gateway.relaunch();
    // On the dead broker it cannot confirm: at the deadline, the last-known-good and another
    // exit 75 (or, started after the deadline, the last-known-good at once). Played as systemd.
    let wanted = json!("dead-1");
    let started = std::time::Instant::now();
    while !rig
        .sub
        .try_until(Duration::from_millis(200), |seen| {
            results(seen).iter().any(|m| m.payload["id"] == wanted)
        })
        .await
    {
        if !rig.gateway.is_running() {
            assert_eq!(rig.gateway.exited(DEADLINE).code(), Some(75));
            assert_eq!(rig.file(), before);
            rig.gateway.relaunch();
        }
        assert!(started.elapsed() < DEADLINE, "no answer to dead-1");
    }
    let answer = nth_result(&mut rig.sub, "dead-1", 1).await;
    assert_eq!(answer["status"], "rolled_back", "{answer}");
    assert_eq!(answer["hash"], sha256_hex(before.as_bytes()));
    let failed = answer["failed"][0].as_str().unwrap();
    assert!(
        failed == format!("uplink: not connected to 127.0.0.1:{dead} within 3s")
            || failed.starts_with("not confirmed within 3s"),
        "{answer}"
    );
    assert!(!rig.pending().exists());
    assert!(rig.gateway.is_running());
}

/// `kill -9` while a pushed file is on trial (its device does not answer): the restarted
/// gateway resumes the trial from disk, rolls back at the deadline and answers; the boiler's
/// data flows again on the restored file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_trial_comes_back_on_a_working_config() {
    let remote = "{allow: true, confirm_within: 4s}";
    let mut rig = Rig::start("rc-kill", remote).await;
    rig.regs.set_silent(3, true);
    let before = rig.file();
    let silent = rig.text(remote, &BOILER.replace("unit_id: 1", "unit_id: 3"));
    push(rig.broker.port, "kill-1", &silent);
    // Killed once the pushed file is in place and on trial (the first state written at the
    // push; the `failed` answer of a kill before the file went in is `pending.rs`'s unit test).
    common::wait_until("the pushed file on trial", DEADLINE, || {
        rig.pending().exists() && rig.file() == silent
    });
    // Another push during the trial waits its turn.
    push(rig.broker.port, "kill-2", &rig.text(remote, BOILER));
    let busy = nth_result(&mut rig.sub, "kill-2", 1).await;
    assert_eq!(busy["status"], "busy", "{busy}");
    rig.gateway.kill9();
    rig.gateway.relaunch();
    let answer = nth_result(&mut rig.sub, "kill-1", 1).await;
    assert_eq!(rig.file(), before);
    assert_eq!(answer["status"], "rolled_back", "{answer}");
    // What failed: the boiler, or (restarted only after the deadline, on a busy machine) the
    // trial as a whole.
    let failed = answer["failed"][0].as_str().unwrap();
    assert!(
        failed == "device boiler: did not answer within 4s"
            || failed.starts_with("not confirmed within 4s"),
        "{answer}"
    );
    let seen = rig.sub.seen.len();
    let topic = format!("{P}/boiler/counter");
    rig.sub
        .until("the boiler's data on the restored file", DEADLINE, |all| {
            all[seen..].iter().any(|m| m.topic == topic)
        })
        .await;
    assert!(!rig.pending().exists());
}

/// The exit status that asks for a restart is one the shipped unit restarts on.
#[test]
fn the_unit_restarts_on_the_restart_status() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/fieldrelay.service"
    ))
    .unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(key))
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let status = fieldrelay::remote_config::EX_RESTART.to_string();
    assert!(values("RestartForceExitStatus=").contains(&status));
    assert!(!values("RestartPreventExitStatus=").contains(&status));
}

/// A push that needs a restart (here: it turns pushes off) is applied with exit 75 and
/// confirmed by the restarted gateway, which answers `applied` with `restarted: true` — even
/// though it no longer takes pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_needing_a_restart_is_confirmed_after_it() {
    let remote = "{allow: true, confirm_within: 20s}";
    let mut rig = Rig::start("rc-restart", remote).await;
    let off = rig.text("{allow: false}", BOILER);
    push(rig.broker.port, "off-1", &off);
    assert_eq!(rig.gateway.exited(DEADLINE).code(), Some(75));
    rig.gateway.relaunch();
    let answer = nth_result(&mut rig.sub, "off-1", 1).await;
    assert_eq!(answer["status"], "applied", "{answer}");
    assert_eq!(answer["restarted"], true);
    assert_eq!(rig.file(), off);
    assert!(!rig.pending().exists());
    let birth = format!("{P}/status");
    rig.sub
        .until("a birth naming the push", DEADLINE, |seen| {
            seen.iter()
                .any(|m| m.topic == birth && m.payload["config"]["id"] == "off-1")
        })
        .await;
}

/// `fieldrelay check --pushed` checks a file as the gateway checks a push: a PEM block in a
/// value that the plain check accepts is refused at its key path.
#[test]
fn check_pushed_refuses_what_a_push_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    let text = config_text(dir.path(), 1883, 502, "{allow: true}", BOILER).replace(
        "type: u16, publish",
        "type: u16, unit: \"-----BEGIN PRIVATE KEY-----\", publish",
    );
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let plain = common::cases::run_on_config(&["check"], path);
    assert!(plain.status.success(), "{plain:?}");
    let pushed = common::cases::run_on_config(&["check", "--pushed"], path);
    assert_eq!(pushed.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    assert!(
        stderr.contains("devices[0].points[0].unit: a pushed configuration may not hold keys"),
        "{stderr}"
    );
}
