//! The web console end to end, in a real browser: the `fieldrelay` binary with a console (with
//! logins from a password file made by `fieldrelay console-user`), a real mosquitto, a
//! simulated Modbus device (our simulator, in this process), and Debian's chromium driven by
//! Playwright for Python (tests/peers/console_browser.py).
//!
//! The browser script asks for what it needs done to the world (`ask change-value`,
//! `ask stop-broker`, ...) and this test does it; the script checks the page: the overview's
//! uplink and queue state, the rows a broker rejected (left in the queue file before the start)
//! with what to do about them, a changed value shown within 2 s without a reload, the device shown
//! offline when it dies, the link retrying and the queue growing when the broker stops, wrong
//! credentials refused, no console errors. With `FIELDRELAY_SCREENSHOTS=DIR` it also saves the
//! screenshots docs/ shows.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, port_accepts, python, wait_until, Gateway, Mosquitto, Subscriber};
use fieldrelay::simulator::{Registers, Simulator};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const P: &str = "fieldrelay/test-gw";
const USER: &str = "technician";
const PASSWORD: &str = "cabinet 7 key";
/// Points of the second device: the devices page at a plant's size.
const BANK_POINTS: usize = 1000;

fn write_config(dir: &Path, broker: u16, device: u16, web: u16, passwd: &Path) -> PathBuf {
    let mut bank = String::new();
    for i in 0..BANK_POINTS {
        bank.push_str(&format!(
            "      - {{name: p{i:04}, table: holding, address: {}, type: u16}}\n",
            100 + i
        ));
    }
    let path = dir.join("gateway.yaml");
    let text = format!(
        "gateway:
  id: test-gw
  data_dir: {data}
uplink:
  url: mqtt://127.0.0.1:{broker}
  keep_alive: 5s
  reconnect_initial: 200ms
  reconnect_max: 1s
buses:
  - {{name: plc1, type: tcp, host: 127.0.0.1, port: {device}, timeout: 200ms}}
devices:
  - name: boiler
    bus: plc1
    unit_id: 1
    poll_interval: 100ms
    backoff_max: 500ms
    offline_after: 2
    points:
      - {{name: level, table: holding, address: 20, type: u16, scale: 0.1, unit: '%', publish: every_poll}}
      - {{name: counter, table: holding, address: 4, type: u32, publish: on_change}}
      - {{name: setpoint, table: holding, address: 10, type: u16, unit: '°C', writable: true}}
  - name: bank
    bus: plc1
    unit_id: 2
    poll_interval: 1s
    points:
{bank}metrics:
  listen: 127.0.0.1:{web}
console:
  listen: 127.0.0.1:{web}
  auth:
    password_file: {passwd}
",
        data = dir.join("data").display(),
        passwd = passwd.display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `fieldrelay console-user add USER --file FILE`, the password piped on stdin twice.
fn add_user(file: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldrelay"))
        .args(["console-user", "add", USER, "--file"])
        .arg(file)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fieldrelay console-user");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{PASSWORD}\n{PASSWORD}\n").as_bytes())
        .expect("write the password");
    drop(stdin);
    let out = child.wait_with_output().expect("console-user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(file).expect("the password file");
    assert!(text.starts_with(&format!("{USER}:$2b$10$")), "{text}");
}

/// Status of a plain HTTP/1.1 GET (the server closes after `/metrics`; elsewhere we ask it to).
fn status_of(port: u16, path: &str) -> u16 {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let python = python::find(
        "import playwright.sync_api",
        "playwright (scripts/test-deps.sh installs it)",
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed: scripts/test-deps.sh installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let regs = Registers::default();
    let sim = Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0)), regs.clone())
        .await
        .expect("bind simulator");
    let device_port = sim.local_addr().port();
    let device = CancellationToken::new();
    tokio::spawn(sim.run(device.clone()));
    // A level that moves, for the sparkline.
    let ramp = {
        let (regs, stop) = (regs.clone(), device.clone());
        tokio::spawn(async move {
            for i in 0u16.. {
                regs.set_holding(1, 20, &[400 + (i % 50) * 4]);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(150)) => {}
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let passwd = dir.path().join("console.passwd");
    add_user(&passwd);
    let web = free_port();
    let config = write_config(dir.path(), broker.port, device_port, web, &passwd);
    common::queued::seed_rejected(&dir.path().join("data"), 3, 0x87).await;
    let mut results = Subscriber::connect(
        broker.port,
        "console-results",
        &[&format!("{P}/+/+/set/result")],
    )
    .await;
    let mut gateway = Gateway::start(&config);
    wait_until("the console to listen", DEADLINE, || port_accepts(web));
    // /metrics shares the address and stays open to scrapers; the pages do not.
    assert_eq!(status_of(web, "/metrics"), 200);
    assert_eq!(status_of(web, "/"), 401);

    let shots = std::env::var("FIELDRELAY_SCREENSHOTS").unwrap_or_default();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/console_browser.py");
    let mut browser = Command::new(&python)
        .arg(&script)
        .args([&format!("http://127.0.0.1:{web}"), USER, PASSWORD, &shots])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the browser script");
    let mut answers = browser.stdin.take().expect("stdin");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = browser.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut reports = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .expect("the browser script went silent");
        let Some(line) = line else { break };
        let answer = match line.strip_prefix("ask ") {
            Some("change-value") => {
                regs.set_holding(1, 4, &[0, 4242]);
                "4242".to_owned()
            }
            Some("send-command") => {
                let status = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
                    .args(["-t", &format!("{P}/boiler/setpoint/set")])
                    .args(["-m", r#"{"id":"console-1","value":42}"#])
                    .status()
                    .expect("run mosquitto_pub");
                assert!(status.success());
                let done = results
                    .try_until(DEADLINE, |seen| {
                        seen.iter().any(|m| m.payload["id"] == "console-1")
                    })
                    .await;
                assert!(done, "no result for the command: {:?}", results.seen);
                "console-1".to_owned()
            }
            Some("stop-broker") => {
                broker.stop();
                String::new()
            }
            Some("kill-device") => {
                device.cancel();
                String::new()
            }
            Some(other) => panic!("the browser script asked for {other:?}"),
            None => {
                if let Some(report) = line.strip_prefix("report ") {
                    reports.push(report.to_owned());
                }
                eprintln!("browser: {line}");
                continue;
            }
        };
        writeln!(answers, "done {answer}").expect("answer the browser script");
    }
    let out = browser.wait_with_output().expect("the browser script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser checks failed: {stderr}\ngateway log:\n{}",
        gateway.log()
    );
    eprintln!("console measurements: {}", reports.join(" "));
    ramp.abort();
    let exit = tokio::task::spawn_blocking(move || gateway.terminate(DEADLINE))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
