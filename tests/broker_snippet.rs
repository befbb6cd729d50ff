//! The shipped on-site broker setup — `packaging/mosquitto/fieldrelay.conf` (the settings),
//! `packaging/mosquitto/fieldrelay.rights` and the user tool `packaging/fieldrelay-broker-user`
//! (which writes the ACL from them) —
//! run by a real mosquitto and exercised with mosquitto_pub/mosquitto_sub, clients we did not
//! write. Only the listener (a free loopback port) and file paths differ from the package.
//!
//! Refused publishes are shown without waiting for silence: `mosquitto_pub -q 1` returns after
//! the broker's PUBACK, which the broker sends after its ACL check, so a retained value read
//! afterwards shows whether the publish was applied.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::snippet::{add_user, pid_file, refused, user_tool, Broker, GATEWAY, HMI, SUB_TIMEOUT};
use common::wait_until;

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
    // Rights per user, not `pattern` lines: mosquitto has nothing to warn about at start.
    let log = broker.log();
    assert!(log.contains("mosquitto version"), "{log}");
    assert!(!log.contains("Warning"), "{log}");
    let acl = std::fs::read_to_string(dir.path().join("fieldrelay.acl")).unwrap();
    assert!(
        acl.contains("\nuser hmi\ntopic read fieldrelay/#\ntopic write fieldrelay/+/+/+/set\n"),
        "{acl}"
    );
    assert!(
        acl.contains("\nuser fieldrelay\ntopic readwrite fieldrelay/#\n"),
        "{acl}"
    );
    assert!(
        !acl.contains("former"),
        "a deleted user keeps rights:\n{acl}"
    );

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

/// The user tool makes a running mosquitto reload the password file without systemd (SIGHUP to
/// the pid in its pid file): a user added while it runs logs in at once, a deleted one is
/// refused at once.
#[test]
fn users_added_or_deleted_while_mosquitto_runs_take_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("fieldrelay.passwd");
    add_user(&passwd, GATEWAY);
    let broker = Broker::start(dir.path());
    wait_until("the pid file", Duration::from_secs(30), || {
        pid_file(&passwd).exists()
    });
    let out = user_tool(&passwd, &["add", HMI.0], &format!("{0}\n{0}\n", HMI.1));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("mosquitto reloaded (SIGHUP"), "{said}");
    let topic = "fieldrelay/gw1/pump/speed/set";
    // mosquitto handles the signal in its main loop: the first publish after it may race it.
    wait_until("the new user accepted", Duration::from_secs(30), || {
        broker.publish(HMI, topic, "1").status.success()
    });
    user_tool(&passwd, &["delete", HMI.0], "");
    wait_until("the deleted user refused", Duration::from_secs(30), || {
        refused(&broker.publish(HMI, topic, "1"))
    });
}

/// The snippet's `message_size_limit`: a payload above it from an on-site client is
/// acknowledged and dropped by the broker, never forwarded (the gateway's account receives the
/// small command sent after it first).
#[test]
fn a_payload_above_the_size_limit_is_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("fieldrelay.passwd");
    add_user(&passwd, GATEWAY);
    add_user(&passwd, HMI);
    let broker = Broker::start(dir.path());
    let topic = "fieldrelay/gw1/pump/speed/set";
    let commands = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-u", GATEWAY.0, "-P", GATEWAY.1, "-i", "gw-big", "-q", "1"])
        .args(["-t", topic, "-C", "1", "-W", SUB_TIMEOUT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    wait_until("the command subscription", Duration::from_secs(30), || {
        broker.log().contains("Sending SUBACK to gw-big")
    });
    let big = dir.path().join("big");
    std::fs::write(&big, "9".repeat(1_100_000)).unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-u", HMI.0, "-P", HMI.1, "-q", "1", "-t", topic, "-f"])
        .arg(&big)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = broker.publish(HMI, topic, "42");
    assert!(out.status.success(), "{out:?}");
    let received = commands.wait_with_output().unwrap();
    assert!(received.status.success(), "{received:?}");
    assert_eq!(String::from_utf8_lossy(&received.stdout), "42\n");
}
