//! Real parts for the uplink benchmarks (`benches/uplink.rs`): mosquitto brokers (a cloud one,
//! and a local one bridged to it), the `fieldrelay` binary as a child process, a simulated
//! Modbus device, an MQTT subscriber that timestamps every arrival, and a TCP proxy that delays
//! each direction (a WAN link on loopback).
//!
//! The subscriber speaks MQTT 3.1.1 with rumqttc's packet codec on a blocking socket in a thread
//! of its own, so its timestamps do not wait for a busy tokio worker and it keeps up with any
//! broker on this machine (it only parses, records and answers PUBACKs, one write per read).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, PingReq, PubAck, Subscribe};
use rumqttc::mqttbytes::QoS;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wall clock in microseconds since the Unix epoch (what a sample's `ts` is compared with).
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn wait_port(port: u16, deadline: Duration) -> bool {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Sends `signal` (`-TERM`, `-INT`) to `pid` with the `kill` command.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A mosquitto process on a loopback port; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
}

impl Broker {
    /// Starts mosquitto on `port` with `conf` (the listener line is added here).
    pub fn start(dir: &Path, name: &str, port: u16, conf: &str) -> BenchResult<Broker> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(
            &path,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{conf}"),
        )?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(mosquitto()?)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let broker = Broker { port, child };
        if !wait_port(port, Duration::from_secs(10)) {
            return Err(format!("mosquitto {name} did not listen on {port}").into());
        }
        Ok(broker)
    }

    /// The cloud broker: keeps up to 200k messages per session; no in-flight cap towards the
    /// subscriber, so that leg is never what a drain measures (`mosquitto_pub` direct is the
    /// row that shows its ceiling).
    pub fn cloud(dir: &Path, port: u16) -> BenchResult<Broker> {
        Broker::start(
            dir,
            "cloud",
            port,
            "max_queued_messages 200000\nmax_inflight_messages 0\n",
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> BenchResult<&'static str> {
    ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .find(|m| Command::new(m).arg("-h").output().is_ok())
        .ok_or_else(|| "mosquitto not found (scripts/test-deps.sh installs it)".into())
}

/// One PUBLISH as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// [`wall_us`] at arrival.
    pub wall_us: i64,
    pub topic: String,
    pub seq: Option<u64>,
    pub ts_ms: Option<i64>,
    pub value: Option<f64>,
}

struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    changed: Condvar,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A persistent-session (clean_session = 0) QoS 1 subscriber on a thread of its own.
pub struct Subscriber {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Connects, subscribes `filter` at QoS 1 and returns after the SUBACK. `nodelay`: set
    /// TCP_NODELAY on its socket (libmosquitto clients do not by default).
    pub fn connect(
        port: u16,
        client_id: &str,
        filter: &str,
        nodelay: bool,
    ) -> BenchResult<Subscriber> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(nodelay)?;
        let mut connect = Connect::new(client_id);
        connect.clean_session = false;
        connect.keep_alive = 0;
        let mut out = BytesMut::new();
        Packet::Connect(connect).write(&mut out, 1 << 20)?;
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = 1;
        Packet::Subscribe(subscribe).write(&mut out, 1 << 20)?;
        stream.write_all(&out)?;
        let mut buf = BytesMut::with_capacity(1 << 16);
        let start = Instant::now();
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut subacked = false;
        while !subacked {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("no SUBACK from the broker".into());
            }
            read_some(&mut stream, &mut buf)?;
            while let Some(packet) = next_packet(&mut buf)? {
                subacked |= matches!(packet, Packet::SubAck(_));
            }
        }
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bench-subscriber".into())
            .spawn(move || {
                if let Err(e) = receive(stream, buf, &inner) {
                    *inner.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
                inner.changed.notify_all();
            })?;
        Ok(Subscriber {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until `done(arrivals)` holds; `false` after `timeout` or a broken connection.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Arrival]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut arrivals = self.arrivals_guard();
        loop {
            if done(&arrivals) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.error().is_some() {
                return false;
            }
            arrivals = match self.shared.changed.wait_timeout(arrivals, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Everything that arrived so far.
    pub fn snapshot(&self) -> Vec<Arrival> {
        self.arrivals_guard().clone()
    }

    pub fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn arrivals_guard(&self) -> std::sync::MutexGuard<'_, Vec<Arrival>> {
        self.shared
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut chunk = [0u8; 1 << 16];
    match stream.read(&mut chunk) {
        Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

fn next_packet(buf: &mut BytesMut) -> BenchResult<Option<Packet>> {
    match Packet::read(buf, 1 << 20) {
        Ok(packet) => Ok(Some(packet)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("subscriber: bad packet: {e:?}").into()),
    }
}

fn receive(mut stream: TcpStream, mut buf: BytesMut, shared: &Shared) -> BenchResult<()> {
    let mut out = BytesMut::new();
    let mut batch = Vec::new();
    let mut last_ping = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if read_some(&mut stream, &mut buf)? == 0 {
            // Keep-alive is off (0); a ping now and then still tells a dead broker.
            if last_ping.elapsed() > Duration::from_secs(5) {
                PingReq.write(&mut out)?;
                last_ping = Instant::now();
            }
        }
        let at = Instant::now();
        let wall = wall_us();
        while let Some(packet) = next_packet(&mut buf)? {
            if let Packet::Publish(publish) = packet {
                if publish.qos == QoS::AtLeastOnce {
                    PubAck::new(publish.pkid).write(&mut out)?;
                }
                let text = std::str::from_utf8(&publish.payload).unwrap_or("");
                batch.push(Arrival {
                    at,
                    wall_us: wall,
                    topic: publish.topic,
                    seq: json_number(text, "seq").and_then(|v| v.parse().ok()),
                    ts_ms: json_number(text, "ts").and_then(|v| v.parse().ok()),
                    value: json_number(text, "value").and_then(|v| v.parse().ok()),
                });
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if !batch.is_empty() {
            let mut arrivals = shared.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            arrivals.append(&mut batch);
            drop(arrivals);
            shared.changed.notify_all();
        }
    }
    Ok(())
}

/// The text of a top-level number member `"key":<number>` of a flat JSON object.
pub fn json_number<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = text.find(&pattern)? + pattern.len();
    let rest = &text[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// A TCP proxy on a loopback port that forwards to `target`, delaying every chunk by
/// `one_way` in each direction while keeping its order: a WAN link with RTT = 2 × `one_way`
/// and no bandwidth limit. Runs on a runtime of its own, so the process measured never
/// shares a worker with it. Counts the bytes it forwards, both directions ([`DelayProxy::bytes`]).
pub struct DelayProxy {
    pub port: u16,
    counted: Arc<std::sync::atomic::AtomicU64>,
    cancel: tokio_util::sync::CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl DelayProxy {
    pub fn start(target: u16, one_way: Duration) -> BenchResult<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let cancel = tokio_util::sync::CancellationToken::new();
        let token = cancel.clone();
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = counted.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("bench-delay-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            () = token.cancelled() => return,
                            accepted = listener.accept() => {
                                if let Ok((inbound, _)) = accepted {
                                    tokio::spawn(proxy_connection(inbound, target, one_way, token.clone(), count.clone()));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(DelayProxy {
            port,
            counted,
            cancel,
            thread: Some(thread),
        })
    }
}

impl DelayProxy {
    /// Bytes forwarded so far, both directions: what crossed the TCP connections.
    pub fn bytes(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn proxy_connection(
    inbound: tokio::net::TcpStream,
    target: u16,
    one_way: Duration,
    cancel: tokio_util::sync::CancellationToken,
    counted: Arc<std::sync::atomic::AtomicU64>,
) {
    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = async {
            tokio::join!(
                delayed_pipe(in_read, out_write, one_way, counted.clone()),
                delayed_pipe(out_read, in_write, one_way, counted)
            )
        } => {}
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order.
async fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    counted: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match from.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, chunk[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// The fastest sender a broker can have: pre-built QoS 1 PUBLISHes of `payloads` on `topic`,
/// written as soon as the window (`window` unacknowledged) has room, many per write, PUBACKs
/// read in bulk; nothing durable, no session state. Returns once every PUBACK arrived.
pub fn pipelined_publish(
    port: u16,
    topic: &str,
    payloads: &[bytes::Bytes],
    window: usize,
) -> BenchResult<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = BytesMut::new();
    let mut connect = Connect::new(format!("bench-pipelined-{port}"));
    connect.keep_alive = 0;
    Packet::Connect(connect).write(&mut out, 1 << 20)?;
    stream.write_all(&out)?;
    let mut buf = BytesMut::new();
    wait_packet(&mut stream, &mut buf, |p| matches!(p, Packet::ConnAck(_)))?;
    let (mut next, mut acked, mut inflight) = (0usize, 0usize, 0usize);
    while acked < payloads.len() {
        out.clear();
        while next < payloads.len() && inflight < window {
            let mut publish = rumqttc::mqttbytes::v4::Publish::from_bytes(
                topic,
                QoS::AtLeastOnce,
                payloads[next].clone(),
            );
            publish.pkid = u16::try_from(next % 65_535 + 1)?;
            publish.write(&mut out)?;
            next += 1;
            inflight += 1;
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
        if read_some(&mut stream, &mut buf)? == 0 {
            return Err("pipelined publisher: no PUBACK for 10 s".into());
        }
        while let Some(packet) = next_packet(&mut buf)? {
            if let Packet::PubAck(_) = packet {
                inflight -= 1;
                acked += 1;
            }
        }
    }
    Ok(())
}

/// Median round trip of PINGREQ → PINGRESP to the broker on `port` (through a proxy, say).
pub fn mqtt_rtt(port: u16, rounds: usize) -> BenchResult<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = BytesMut::new();
    let mut connect = Connect::new(format!("bench-rtt-{port}"));
    connect.keep_alive = 0;
    Packet::Connect(connect).write(&mut out, 1 << 20)?;
    stream.write_all(&out)?;
    let mut buf = BytesMut::new();
    wait_packet(&mut stream, &mut buf, |p| matches!(p, Packet::ConnAck(_)))?;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        out.clear();
        PingReq.write(&mut out)?;
        let start = Instant::now();
        stream.write_all(&out)?;
        wait_packet(&mut stream, &mut buf, |p| matches!(p, Packet::PingResp))?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn wait_packet(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    wanted: impl Fn(&Packet) -> bool,
) -> BenchResult<()> {
    let start = Instant::now();
    loop {
        while let Some(packet) = next_packet(buf)? {
            if wanted(&packet) {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("no answer from the broker".into());
        }
        read_some(stream, buf)?;
    }
}

/// The `fieldrelay` binary running `run --config`; SIGTERM then kill on drop.
///
/// `FR_BENCH_WRAP` (e.g. `strace -f -c -o /tmp/s.txt`, `perf record -e cpu-clock -g -o
/// /tmp/p.data`) is put in front of the command line, for profiles of exactly what a benchmark
/// measures; the gateway is then the wrapper's child and is stopped with SIGTERM so the
/// wrapper writes its report.
pub struct GatewayProcess {
    child: Child,
    wrapped: bool,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts `bin` (a `fieldrelay` binary: this build's, or another to compare with).
    pub fn start(bin: &Path, config: &Path) -> BenchResult<GatewayProcess> {
        let log = config.with_extension("log");
        let wrap = std::env::var("FR_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "fieldrelay=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(GatewayProcess {
            child,
            wrapped: !wrap.trim().is_empty(),
            log,
        })
    }

    /// The gateway's own pid: the wrapper's child when wrapped by a tool that forks (strace,
    /// perf), the wrapper itself for one that does not (valgrind).
    pub fn pid(&self) -> Option<u32> {
        let wrapper = self.child.id();
        if !self.wrapped {
            return Some(wrapper);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            let children =
                std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(wrapper)
    }

    /// The last lines the gateway logged (for an error message).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// CPU seconds (user + system) the gateway used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// SIGTERM, then waits up to 30 s for the exit (and the wrapper's report).
    pub fn stop(mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-TERM");
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Samples a process's CPU time every few milliseconds on a thread of its own, so the CPU
/// spent between two instants (the first and the last arrival of a drain) can be read back.
pub struct CpuSampler {
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CpuSampler {
    pub fn start(pid: u32) -> BenchResult<CpuSampler> {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, until) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("bench-cpu-sampler".into())
            .spawn(move || {
                while !until.load(Ordering::Relaxed) {
                    if let Some(cpu) = cpu_seconds(pid) {
                        into.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((Instant::now(), cpu));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?;
        Ok(CpuSampler {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// CPU seconds used between `from` and `to` (the samples nearest to each).
    pub fn between(&self, from: Instant, to: Instant) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let at = |t: Instant| {
            samples
                .iter()
                .min_by_key(|(s, _)| if *s > t { *s - t } else { t - *s })
                .map(|(_, cpu)| *cpu)
        };
        Some(at(to)? - at(from)?)
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// utime + stime of `pid` in seconds (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it start past its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux target this runs on.
    Some(ticks as f64 / 100.0)
}

/// Gateway configuration for the benchmarks: one simulated device `boiler` on `device_port`
/// with `points` (YAML list items at 6 spaces), the uplink to `broker_port`.
pub fn gateway_config(
    dir: &Path,
    name: &str,
    broker_port: u16,
    device_port: u16,
    poll: &str,
    points: &str,
) -> BenchResult<PathBuf> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "gateway:\n  id: bench-gw\n  data_dir: {data}\nuplink:\n  url: mqtt://127.0.0.1:{broker_port}\n  \
             client_id: bench-{name}-{broker_port}\n  topic_prefix: fieldrelay/bench\n  keep_alive: 60s\n  \
             reconnect_initial: 100ms\n  reconnect_max: 500ms\n  response_timeout: 30s\n  max_inflight: 64\n\
             store:\n  sync: full\nbuses:\n  - name: plc1\n    type: tcp\n    host: 127.0.0.1\n    \
             port: {device_port}\n    timeout: 1s\ndevices:\n  - name: boiler\n    bus: plc1\n    \
             poll_interval: {poll}\n    points:\n{points}",
            data = dir.join("data").display(),
        ),
    )?;
    Ok(path)
}

/// min / median / max of `values` (sorted in place); zeros when empty.
pub fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(|a, b| a.total_cmp(b));
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

/// The `q`-quantile (0..=1) of sorted `values` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A Modbus TCP simulator (fieldrelay's own, tokio-modbus' server) on a free port, serving
/// `regs` until the returned token is cancelled.
pub async fn simulator(
    regs: fieldrelay::simulator::Registers,
) -> BenchResult<(u16, tokio_util::sync::CancellationToken)> {
    let sim =
        fieldrelay::simulator::Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs).await?;
    let port = sim.local_addr().port();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sim.run(cancel.clone()));
    Ok((port, cancel))
}

/// Queued sample `i` of a benchmark backlog: one QoS 1 point whose value varies, so payloads
/// have the length of real ones. The drain benchmarks share it, so their rows are comparable.
pub fn backlog_sample(i: u64) -> fieldrelay::sample::Sample {
    use fieldrelay::sample::{Sample, Value};
    Sample {
        device: Arc::from("boiler"),
        point: Arc::from("temperature"),
        value: Value::Float(20.0 + (i % 1000) as f64 / 8.0),
        ts_ms: 1_700_000_000_000 + i as i64,
        qos: fieldrelay::config::Qos::AtLeastOnce,
        retain: false,
    }
}

/// The uplink of `config` in-process over `queue` (no commands, a fixed presence), counting
/// into `stats`: what the drain benchmarks run.
pub fn in_process_uplink(
    config: fieldrelay::config::UplinkConfig,
    queue: &fieldrelay::queue::Queue,
    live: fieldrelay::queue::LiveReceiver,
    stats: Arc<fieldrelay::uplink::UplinkStats>,
) -> BenchResult<fieldrelay::uplink::Uplink> {
    let dialer = fieldrelay::uplink::dialer(&config)?;
    Ok(fieldrelay::uplink::Uplink {
        config,
        dialer,
        queue: queue.clone(),
        live,
        inbound: None,
        presence: fieldrelay::uplink::Presence::fixed(fieldrelay::sample::now_ms()),
        state: tokio::sync::watch::channel(fieldrelay::uplink::LinkState::default()).0,
        stats,
    })
}
