//! Sparkplug peers we did not write, for the integration tests: pysparkplug 0.6.1 (Python) and
//! npm sparkplug-payload 1.0.3 (Eclipse Tahu's JavaScript codec), both installed by
//! scripts/test-deps.sh, driven through the scripts in tests/peers/ with JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

/// `tests/peers/<name>`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// The Python with pysparkplug 0.6.1 and paho-mqtt ([`super::python::find`]).
pub fn python() -> PathBuf {
    super::python::find(
        "import pysparkplug, paho.mqtt; assert pysparkplug.__version__ == '0.6.1'",
        "pysparkplug 0.6.1 and paho-mqtt",
    )
}

/// `node` and the NODE_PATH holding sparkplug-payload 1.0.3: `FIELDRELAY_NODE_MODULES`, default
/// `~/.cache/fieldrelay/node/node_modules` (scripts/test-deps.sh).
pub fn node() -> (PathBuf, PathBuf) {
    let modules = std::env::var_os("FIELDRELAY_NODE_MODULES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/fieldrelay/node/node_modules"))
        })
        .expect("HOME or FIELDRELAY_NODE_MODULES");
    assert!(
        modules.join("sparkplug-payload/package.json").is_file(),
        "no sparkplug-payload in {}: run scripts/test-deps.sh",
        modules.display()
    );
    (PathBuf::from("node"), modules)
}

/// Runs a peer script: one JSON line per request on stdin, one JSON line back per request.
pub fn run_lines(mut command: Command, requests: &[Json]) -> Vec<Json> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the peer");
    {
        let mut stdin = child.stdin.take().expect("peer stdin");
        for request in requests {
            writeln!(stdin, "{request}").expect("write to the peer");
        }
    }
    let output = child.wait_with_output().expect("peer output");
    assert!(
        output.status.success(),
        "peer failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let replies: Vec<Json> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("the peer prints json lines"))
        .collect();
    assert_eq!(replies.len(), requests.len(), "one reply per request");
    replies
}

/// pysparkplug's reading of payloads (tests/peers/sparkplug_decode.py).
pub fn decode_with_pysparkplug(requests: &[Json]) -> Vec<Json> {
    let mut command = Command::new(python());
    command.arg(peer_script("sparkplug_decode.py"));
    run_lines(command, requests)
}

/// sparkplug-payload's reading of payloads (tests/peers/sparkplug_decode.js).
pub fn decode_with_tahu_js(requests: &[Json]) -> Vec<Json> {
    let (node, modules) = node();
    let mut command = Command::new(node);
    command
        .arg(peer_script("sparkplug_decode.js"))
        .env("NODE_PATH", modules);
    run_lines(command, requests)
}

/// NCMD/DCMD payloads as pysparkplug encodes them (tests/peers/sparkplug_encode.py).
pub fn encode_with_pysparkplug(requests: &[Json]) -> Vec<Vec<u8>> {
    let mut command = Command::new(python());
    command.arg(peer_script("sparkplug_encode.py"));
    run_lines(command, requests)
        .into_iter()
        .map(|reply| {
            assert_eq!(reply["ok"], true, "pysparkplug refused to encode: {reply}");
            hex_decode(reply["payload"].as_str().expect("hex payload"))
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A JSON integer printed as a number or (beyond 2^53, by the JS peer) as a decimal string.
pub fn as_u64(value: &Json) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// A JSON integer that may be negative, as a number or a decimal string.
pub fn as_i64(value: &Json) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// A peer process that talks JSON lines: commands on its stdin, records on its stdout, read by
/// a thread so that waits have deadlines.
pub struct LinePeer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: std::sync::mpsc::Receiver<Json>,
    /// Every record received so far, in order.
    pub seen: Vec<Json>,
    name: String,
}

impl LinePeer {
    pub fn spawn(name: &str, mut command: Command) -> LinePeer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("peer stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let record = serde_json::from_str(&line).unwrap_or(Json::String(line));
                if tx.send(record).is_err() {
                    break;
                }
            }
        });
        LinePeer {
            stdin: child.stdin.take(),
            child,
            rx,
            seen: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Writes one command line.
    pub fn send(&mut self, command: &Json) {
        let stdin = self.stdin.as_mut().expect("peer stdin is open");
        writeln!(stdin, "{command}").expect("write to the peer");
        stdin.flush().expect("flush the peer's stdin");
    }

    /// Receives records until one satisfies `matches` (checking those already seen after index
    /// `from` first); panics after `deadline` with everything seen.
    pub fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        deadline: std::time::Duration,
        matches: impl Fn(&Json) -> bool,
    ) -> Json {
        if let Some(found) = self.seen.iter().skip(from).find(|r| matches(r)) {
            return found.clone();
        }
        let end = std::time::Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(record) => {
                    self.seen.push(record.clone());
                    if matches(&record) {
                        return record;
                    }
                }
                Err(error) => panic!(
                    "{}: {} waiting for {what}; seen:\n{}",
                    self.name,
                    match error {
                        std::sync::mpsc::RecvTimeoutError::Timeout =>
                            format!("timed out after {deadline:?}"),
                        std::sync::mpsc::RecvTimeoutError::Disconnected =>
                            "exited (its stderr is above)".to_owned(),
                    },
                    self.seen
                        .iter()
                        .map(Json::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// [`LinePeer::wait_from`] over every record.
    pub fn wait_for(
        &mut self,
        what: &str,
        deadline: std::time::Duration,
        matches: impl Fn(&Json) -> bool,
    ) -> Json {
        self.wait_from(0, what, deadline, matches)
    }

    /// Records received so far that satisfy `matches` (after draining what is buffered).
    pub fn count(&mut self, matches: impl Fn(&Json) -> bool) -> usize {
        while let Ok(record) = self.rx.try_recv() {
            self.seen.push(record);
        }
        self.seen.iter().filter(|r| matches(r)).count()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        // Closing stdin ends the scripts gracefully; a kill makes sure.
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a record is `event` with every `(key, value)` of `fields`.
pub fn is_event(record: &Json, event: &str, fields: &[(&str, Json)]) -> bool {
    record["event"] == event && fields.iter().all(|(k, v)| record[*k] == *v)
}

/// The test host application (tests/peers/sparkplug_host.py) on a broker at 127.0.0.1:`port`,
/// once it published its online STATE.
pub fn start_host(port: u16, host_id: &str) -> LinePeer {
    let mut command = Command::new(python());
    command.arg(peer_script("sparkplug_host.py")).args([
        "--port",
        &port.to_string(),
        "--host-id",
        host_id,
    ]);
    let mut host = LinePeer::spawn("sparkplug host", command);
    host.wait_for(
        "the host's ready",
        std::time::Duration::from_secs(15),
        |r| r["event"] == "ready",
    );
    host
}
