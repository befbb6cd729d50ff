//! The shipped on-site broker setup — `packaging/mosquitto/fieldrelay.conf` (conf.d snippet),
//! `packaging/mosquitto/fieldrelay.acl` and the user tool `packaging/fieldrelay-broker-user` —
//! run by a real mosquitto and exercised with mosquitto_pub/mosquitto_sub, clients we did not
//! write. Only the listener (a free loopback port) and file paths differ from the package.
//!
//! Refused publishes are shown without waiting for silence: `mosquitto_pub -q 1` returns after
//! the broker's PUBACK, which the broker sends after its ACL check, so a retained value read
//! afterwards shows whether the publish was applied.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, port_accepts, wait_until};

const SNIPPET: &str = "packaging/mosquitto/fieldrelay.conf";
const ACL: &str = "packaging/mosquitto/fieldrelay.acl";
const USER_TOOL: &str = "packaging/fieldrelay-broker-user";
/// Seconds mosquitto_sub waits for its messages; generous for a loaded machine.
const SUB_TIMEOUT: &str = "30";

/// Gateway's own account and an on-site user (an HMI).
const GATEWAY: (&str, &str) = ("fieldrelay", "gw-secret");
const HMI: (&str, &str) = ("hmi", "hmi-secret");

/// mosquitto on the shipped snippet, rewritten to a free port and a scratch directory.
struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let mut broker = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        broker.write_config();
        broker.launch();
        broker
    }

    fn passwd(&self) -> PathBuf {
        self.dir.join("fieldrelay.passwd")
    }

    fn write_config(&self) {
        let snippet = std::fs::read_to_string(SNIPPET).expect("read the shipped snippet");
        let acl = self.dir.join("fieldrelay.acl");
        std::fs::copy(ACL, &acl).expect("copy the shipped ACL");
        let mut conf = snippet.clone();
        for (from, to) in [
            (
                "\nlistener 1883\n",
                format!("\nlistener {} 127.0.0.1\n", self.port),
            ),
            (
                "/etc/mosquitto/fieldrelay.passwd",
                self.passwd().display().to_string(),
            ),
            ("/etc/mosquitto/fieldrelay.acl", acl.display().to_string()),
        ] {
            assert!(
                conf.contains(from),
                "the snippet no longer contains {from:?}"
            );
            conf = conf.replace(from, &to);
        }
        // What Debian's /etc/mosquitto/mosquitto.conf adds around conf.d, minus the pid file.
        let store = self.dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        conf.push_str(&format!(
            "persistence_location {}/\nlog_dest stderr\nlog_type all\n",
            store.display()
        ));
        std::fs::write(self.dir.join("mosquitto.conf"), conf).unwrap();
        // Started as root, mosquitto drops to user mosquitto, which must reach these files.
        for (path, mode) in [(&self.dir, 0o755), (&store, 0o777)] {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (scripts/test-deps.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(30), || {
            port_accepts(port)
        });
    }

    /// SIGTERM (mosquitto saves its persistence file) and start again on the same port.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            child.wait().unwrap();
        }
        self.launch();
    }

    /// QoS 1; retained for values and status (as fieldrelay publishes them), not for commands.
    fn publish(&self, (user, password): (&str, &str), topic: &str, payload: &str) -> Output {
        let retain = if topic.ends_with("/set") {
            None
        } else {
            Some("-r")
        };
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", user, "-P", password, "-q", "1"])
            .args(retain)
            .args(["-t", topic, "-m", payload])
            .output()
            .expect("run mosquitto_pub")
    }

    /// The first `count` messages (retained ones arrive at once) as "topic payload" lines.
    fn read(&self, (user, password): (&str, &str), filter: &str, count: usize) -> Vec<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", user, "-P", password, "-q", "1", "-v"])
            .args(["-t", filter, "-C", &count.to_string(), "-W", SUB_TIMEOUT])
            .output()
            .expect("run mosquitto_sub");
        assert!(
            out.status.success(),
            "{user} reading {filter}: {out:?}\n{}",
            self.log()
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ----\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `fieldrelay-broker-user` on the scratch password file; `stdin` answers its prompts.
fn user_tool(passwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("sh")
        .arg(USER_TOOL)
        .args(args)
        .env("FIELDRELAY_BROKER_PASSWD", passwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fieldrelay-broker-user");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fieldrelay-broker-user {args:?}: {out:?}"
    );
    out
}

fn add_user(passwd: &Path, (user, password): (&str, &str)) {
    user_tool(passwd, &["add", user], &format!("{password}\n{password}\n"));
}

fn refused(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not authorised")
}

#[test]
fn on_site_users_read_everything_and_write_only_commands() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("fieldrelay.passwd");
    add_user(&passwd, GATEWAY);
    add_user(&passwd, HMI);
    add_user(&passwd, ("former", "former-secret"));
    user_tool(&passwd, &["delete", "former"], "");
    let listed = user_tool(&passwd, &["list"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "fieldrelay\nhmi\n");
    let mut broker = Broker::start(dir.path());
    assert_eq!(broker.passwd(), passwd);

    // The gateway's account publishes a live value and its status (retained, as fieldrelay does).
    let value = "fieldrelay/gw1/boiler/temperature";
    let status = "fieldrelay/gw1/status";
    for (topic, payload) in [
        (value, r#"{"value":21.5}"#),
        (status, r#"{"status":"online"}"#),
    ] {
        let out = broker.publish(GATEWAY, topic, payload);
        assert!(out.status.success(), "{out:?}");
    }

    // An on-site user reads P/#: values and status.
    assert_eq!(
        broker.read(HMI, "fieldrelay/#", 2),
        [
            r#"fieldrelay/gw1/boiler/temperature {"value":21.5}"#,
            r#"fieldrelay/gw1/status {"status":"online"}"#,
        ]
    );

    // It cannot publish to a data or status topic: the broker acknowledges and drops it.
    for topic in [value, status] {
        let out = broker.publish(HMI, topic, r#"{"value":99}"#);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        broker.read(GATEWAY, "fieldrelay/gw1/#", 2),
        [
            r#"fieldrelay/gw1/boiler/temperature {"value":21.5}"#,
            r#"fieldrelay/gw1/status {"status":"online"}"#,
        ],
        "an on-site user's publish to a data topic got through"
    );

    // It can send a command (P/<device>/<point>/set), which reaches the gateway's account. The
    // subscriber's stdout is block-buffered, so the broker's log tells when it is subscribed.
    let commands = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-u",
            GATEWAY.0,
            "-P",
            GATEWAY.1,
            "-i",
            "gw-commands",
            "-q",
            "1",
            "-v",
        ])
        .args(["-t", "fieldrelay/+/+/+/set", "-C", "1", "-W", SUB_TIMEOUT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    wait_until("the command subscription", Duration::from_secs(30), || {
        broker.log().contains("Sending SUBACK to gw-commands")
    });
    assert!(
        broker.log().contains("gw-commands 1 fieldrelay/+/+/+/set"),
        "subscription not granted at QoS 1"
    );
    let out = broker.publish(HMI, "fieldrelay/gw1/pump/speed/set", "42");
    assert!(out.status.success(), "{out:?}");
    let received = commands.wait_with_output().unwrap();
    assert!(received.status.success(), "{received:?}");
    assert_eq!(
        String::from_utf8_lossy(&received.stdout),
        "fieldrelay/gw1/pump/speed/set 42\n"
    );

    // Wrong password, no login, and a deleted user are refused.
    let topic = "fieldrelay/gw1/pump/speed/set";
    assert!(refused(&broker.publish((HMI.0, "wrong"), topic, "1")));
    assert!(refused(&broker.publish(
        ("former", "former-secret"),
        topic,
        "1"
    )));
    let anonymous = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-q", "1", "-t", topic, "-m", "1"])
        .output()
        .unwrap();
    assert!(refused(&anonymous), "{anonymous:?}");

    // Persistence is on: retained values survive a broker restart.
    broker.restart();
    assert_eq!(
        broker.read(HMI, value, 1),
        [r#"fieldrelay/gw1/boiler/temperature {"value":21.5}"#]
    );
}
