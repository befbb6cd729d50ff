//! The shipped on-site broker setup as a test fixture: mosquitto on
//! `packaging/mosquitto/fieldrelay.conf`, users and the ACL (from `fieldrelay.rights`) managed
//! with `packaging/fieldrelay-broker-user`, and mosquitto_pub/mosquitto_sub as on-site clients
//! (tools we did not write). Only the listener (a free loopback port) and file paths differ from
//! the package.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{free_port, port_accepts, wait_until};

pub const SNIPPET: &str = "packaging/mosquitto/fieldrelay.conf";
pub const RIGHTS: &str = "packaging/mosquitto/fieldrelay.rights";
pub const USER_TOOL: &str = "packaging/fieldrelay-broker-user";
/// Seconds mosquitto_sub waits for its messages; generous for a loaded machine.
pub const SUB_TIMEOUT: &str = "30";

/// Gateway's own account and an on-site user (an HMI).
pub const GATEWAY: (&str, &str) = ("fieldrelay", "gw-secret");
pub const HMI: (&str, &str) = ("hmi", "hmi-secret");

/// mosquitto on the shipped snippet, rewritten to a free port and a scratch directory.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        let mut broker = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        broker.write_config();
        broker.launch();
        broker
    }

    pub fn passwd(&self) -> PathBuf {
        self.dir.join("fieldrelay.passwd")
    }

    fn write_config(&self) {
        let snippet = std::fs::read_to_string(SNIPPET).expect("read the shipped snippet");
        // The ACL as the tool writes it beside the password file, for the users added so far.
        user_tool(&self.passwd(), &["sync"], "");
        let acl = self.dir.join("fieldrelay.acl");
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
        // What Debian's /etc/mosquitto/mosquitto.conf adds around conf.d, with the pid file in
        // the scratch directory (the user tool finds the broker by it, as by Debian's).
        let store = self.dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        conf.push_str(&format!(
            "persistence_location {}/\npid_file {}\nlog_dest stderr\nlog_type all\n",
            store.display(),
            pid_file(&self.passwd()).display()
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
    pub fn restart(&mut self) {
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
    pub fn publish(&self, (user, password): (&str, &str), topic: &str, payload: &str) -> Output {
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
    pub fn read(&self, (user, password): (&str, &str), filter: &str, count: usize) -> Vec<String> {
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

    pub fn log(&self) -> String {
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

/// The pid file of the [`Broker`] whose password file is `passwd` (in the directory mosquitto,
/// once it dropped to its own user, may write to).
pub fn pid_file(passwd: &Path) -> PathBuf {
    passwd.with_file_name("store").join("mosquitto.pid")
}

/// `fieldrelay-broker-user` on the scratch password file (and the broker's pid file beside it);
/// `stdin` answers its prompts.
pub fn user_tool(passwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("sh")
        .arg(USER_TOOL)
        .args(args)
        .env("FIELDRELAY_BROKER_PASSWD", passwd)
        .env("FIELDRELAY_BROKER_RIGHTS", RIGHTS)
        .env("FIELDRELAY_BROKER_PIDFILE", pid_file(passwd))
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

pub fn add_user(passwd: &Path, (user, password): (&str, &str)) {
    user_tool(passwd, &["add", user], &format!("{password}\n{password}\n"));
}

pub fn refused(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not authorised")
}
