//! Real parts for integration tests: a mosquitto broker on a free loopback port, the `fieldrelay`
//! binary as a child process, and an MQTT subscriber (rumqttc's client, a peer we did not write).
//!
//! Waits are on events (a port accepting, a message arriving, a row committed), each with a
//! deadline so a broken build fails instead of hanging.

#![allow(dead_code)]

pub mod cases;
pub mod disk;
pub mod notify;
pub mod pki;
pub mod python;
pub mod queued;
pub mod snippet;
pub mod sparkplug;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}

fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < deadline,
            "process did not exit within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real mosquitto with persistence, so a persistent subscriber keeps its session across a
/// broker restart.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Appended to the generated mosquitto.conf (extra listeners, TLS, passwords).
    extra_conf: String,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "")
    }

    /// Like [`Mosquitto::start`], with `extra_conf` appended to the configuration.
    pub fn start_with(dir: &Path, extra_conf: &str) -> Mosquitto {
        let mut broker = Mosquitto {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
            extra_conf: extra_conf.to_owned(),
        };
        broker.launch();
        broker
    }

    /// Stops the broker, deletes its persistence (it forgets every session) and starts it again
    /// on the same port: the next CONNECT of a persistent client gets `session_present = 0`.
    pub fn restart_forgetting_sessions(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.dir.join("mosquitto-store"));
        self.launch();
    }

    fn launch(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        // mosquitto started as root drops to the `mosquitto` user, which must be able to write
        // its persistence file; without it the subscriber's session is lost on restart.
        let store = self.dir.join("mosquitto-store");
        std::fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("open the test dir for the mosquitto user");
        std::fs::create_dir_all(&store).expect("create mosquitto store dir");
        std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("open mosquitto store dir");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\n{anonymous}persistence true\n\
                 persistence_location {dir}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
                 log_dest stderr\nlog_type all\nlistener {port} 127.0.0.1\n{extra}",
                port = self.port,
                dir = store.display(),
                extra = self.extra_conf,
                anonymous = if self.extra_conf.contains("allow_anonymous") {
                    ""
                } else {
                    "allow_anonymous true\n"
                },
            ),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .expect("open mosquitto log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (is it installed? see .ci/run)");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            port_accepts(port)
        });
    }

    /// Graceful stop (mosquitto saves its persistence file on SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            wait_exit(&mut child, Duration::from_secs(10));
        }
    }

    /// SIGSTOP: connections stay open and nothing is answered (a hung broker, or a half-open
    /// link as the gateway sees it). [`Mosquitto::resume`] continues it.
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("mosquitto is running"), "-STOP");
    }

    /// SIGCONT after [`Mosquitto::pause`].
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("mosquitto is running"), "-CONT");
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// SIGKILL (a paused broker too): no persistence is saved, connections drop at once.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped or killed broker again on the same port, without its persistence (no
    /// sessions, no retained messages).
    pub fn start_forgetting(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir.join("mosquitto-store"));
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            eprintln!("---- mosquitto log ----\n{log}");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The gateway binary under test.
pub struct Gateway {
    config: PathBuf,
    log: PathBuf,
    /// Extra environment variables (e.g. `NOTIFY_SOCKET`).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Gateway {
    pub fn start(config: &Path) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut gateway = Gateway {
            config: config.to_path_buf(),
            log: config.with_extension("log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        gateway.launch();
        gateway
    }

    /// SIGHUP: reload the configuration file.
    pub fn hangup(&self) {
        signal(self.child.as_ref().expect("gateway is running"), "-HUP");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open gateway log");
        let child = Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "fieldrelay=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Inherited from a runner that itself runs under systemd, these would name another
            // process (the watchdog would be off) or another stream.
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fieldrelay");
        self.child = Some(child);
    }

    /// `kill -9`: no shutdown code runs, the socket is closed by the kernel.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Waits for the process to exit by itself and returns its status (what systemd sees).
    pub fn exited(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is running");
        wait_exit(&mut child, deadline)
    }

    /// Starts the process again on the same file after it exited, as systemd's `Restart=`.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the gateway is still running");
        self.launch();
    }

    /// SIGTERM without waiting for the exit.
    pub fn begin_shutdown(&self) {
        signal(self.child.as_ref().expect("gateway is running"), "-TERM");
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("gateway is running");
        signal(&child, "-TERM");
        wait_exit(&mut child, deadline)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How much was logged so far: a mark for [`Gateway::log_since`].
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// The complete lines logged after `mark`.
    pub fn log_since(&self, mark: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.seek(SeekFrom::Start(mark));
            let _ = file.read_to_string(&mut text);
        }
        // A line being written may be cut short: only whole lines count.
        text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
        text
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: serde_json::Value,
    pub retain: bool,
}

/// A persistent-session MQTT subscriber (QoS 1) that survives broker restarts.
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Message>,
    pub seen: Vec<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn connect(port: u16, client_id: &str, filters: &[&str]) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                        for filter in &filters {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload).unwrap_or(
                            serde_json::Value::String(
                                String::from_utf8_lossy(&p.payload).into_owned(),
                            ),
                        );
                        let _ = tx.send(Message {
                            topic: p.topic.clone(),
                            payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    // Broker down: retry at a modest pace (rumqttc redials on the next poll).
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Subscriber {
            rx,
            seen: Vec::new(),
            task,
        }
    }

    /// Receives until `done(&all messages so far)` holds or `deadline` passes; returns whether
    /// it held.
    pub async fn try_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&[Message]) -> bool,
    ) -> bool {
        let wait = async {
            while !done(&self.seen) {
                match self.rx.recv().await {
                    Some(m) => self.seen.push(m),
                    None => panic!("subscriber task ended"),
                }
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    /// Receives until `done(&all messages so far)` holds; panics after `deadline`.
    pub async fn until(
        &mut self,
        what: &str,
        deadline: Duration,
        mut done: impl FnMut(&[Message]) -> bool,
    ) {
        let wait = async {
            while !done(&self.seen) {
                match self.rx.recv().await {
                    Some(m) => self.seen.push(m),
                    None => panic!("subscriber task ended"),
                }
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            let topics: HashMap<&str, usize> =
                self.seen.iter().fold(HashMap::new(), |mut m, msg| {
                    *m.entry(msg.topic.as_str()).or_default() += 1;
                    m
                });
            panic!("timed out after {deadline:?} waiting for {what}; seen per topic: {topics:?}");
        }
    }

    pub fn on(&self, topic: &str) -> Vec<&Message> {
        self.seen.iter().filter(|m| m.topic == topic).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The start of a gateway config the integration tests share: gateway `test-gw` keeping its
/// queue in `data_dir`, the uplink to the broker on `broker` (fast reconnects), `before_buses`
/// as is (more uplink keys indented by two, or whole sections such as `local:`), and the
/// simulator's bus `plc1` on `device`. The `devices:` list (and any later section) follows.
pub fn config_head(data_dir: &Path, broker: u16, device: u16, before_buses: &str) -> String {
    format!(
        "gateway:
  id: test-gw
  data_dir: {data}
uplink:
  url: mqtt://127.0.0.1:{broker}
  keep_alive: 5s
  reconnect_initial: 100ms
  reconnect_max: 500ms
{before_buses}buses:
  - {{name: plc1, type: tcp, host: 127.0.0.1, port: {device}, timeout: 200ms}}
",
        data = data_dir.display(),
    )
}

/// Writes a gateway config for one simulated TCP device.
pub fn write_config(dir: &Path, broker_port: u16, device_port: u16, points_yaml: &str) -> PathBuf {
    let path = dir.join("gateway.yaml");
    let text = format!(
        r#"gateway:
  id: test-gw
  data_dir: {data}
uplink:
  url: mqtt://127.0.0.1:{broker_port}
  keep_alive: 5s
  reconnect_initial: 100ms
  reconnect_max: 500ms
buses:
  - name: plc1
    type: tcp
    host: 127.0.0.1
    port: {device_port}
    timeout: 500ms
devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 50ms
    points:
{points_yaml}"#,
        data = dir.join("data").display(),
    );
    std::fs::write(&path, text).expect("write gateway config");
    path
}

/// Our Modbus TCP simulator on a free loopback port, serving until the token is cancelled.
pub async fn start_simulator() -> (
    fieldrelay::simulator::Registers,
    u16,
    tokio_util::sync::CancellationToken,
) {
    let regs = fieldrelay::simulator::Registers::default();
    let sim =
        fieldrelay::simulator::Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
            .await
            .expect("bind simulator");
    let port = sim.local_addr().port();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sim.run(cancel.clone()));
    (regs, port, cancel)
}

/// The two registers of a `u32` point, high word first (the simulator's default word order).
pub fn u32_words(v: u32) -> [u16; 2] {
    [(v >> 16) as u16, v as u16]
}

/// The two registers of an `f32` point, high word first.
pub fn f32_words(v: f32) -> [u16; 2] {
    let bits = v.to_bits();
    [(bits >> 16) as u16, bits as u16]
}

/// Publishes `messages` (topic, payload) at QoS 1 from one client (so in this order), as fast as
/// the broker takes them; returns once the broker acknowledged every one.
pub async fn publish_burst(port: u16, client_id: &str, messages: Vec<(String, String)>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(1000);
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue a publish");
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(error) => panic!("the burst's publisher failed: {error}"),
        }
    }
    let client = sender.await.expect("publisher task");
    let _ = client.disconnect().await;
    // Flush the DISCONNECT.
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// How often `client_id` connected to a test [`Mosquitto`] so far (from its log).
pub fn connects_of(broker_dir: &Path, client_id: &str) -> usize {
    std::fs::read_to_string(broker_dir.join("mosquitto.log"))
        .unwrap_or_default()
        .matches(&format!(" as {client_id} ("))
        .count()
}

/// Publishes probes on `probe` (a topic the subscriber's filters match) until one comes back:
/// the subscription is then in place, and nothing published after it can be missed.
pub async fn subscribed(sub: &mut Subscriber, port: u16, probe: &str) {
    for _ in 0..50 {
        let _ = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "1", "-t", probe, "-m", "{}"])
            .status();
        if sub
            .try_until(Duration::from_millis(200), |seen| {
                seen.iter().any(|m| m.topic == probe)
            })
            .await
        {
            return;
        }
    }
    panic!("the subscription never took effect");
}

/// An uplink run in process on `queue`: no live samples, no commands, a fixed birth; its
/// counters in `stats`.
pub fn in_process_uplink(
    config: &fieldrelay::config::UplinkConfig,
    queue: &fieldrelay::queue::Queue,
    stats: std::sync::Arc<fieldrelay::uplink::UplinkStats>,
) -> fieldrelay::uplink::Uplink {
    let (_unused, live) = tokio::sync::mpsc::channel(1);
    fieldrelay::uplink::Uplink {
        config: config.clone(),
        dialer: fieldrelay::uplink::dialer(config).expect("the uplink's dialer"),
        queue: queue.clone(),
        live: fieldrelay::queue::LiveReceiver { rx: live },
        inbound: None,
        presence: fieldrelay::uplink::Presence::fixed(fieldrelay::sample::now_ms()),
        state: tokio::sync::watch::channel(fieldrelay::uplink::LinkState::default()).0,
        stats,
    }
}
