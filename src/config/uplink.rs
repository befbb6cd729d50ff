//! The `uplink` section: the broker every sample is forwarded to, and how the gateway's client
//! behaves on it (session, reconnects, flow). Its `status` and `health_interval` keys are
//! resolved separately (`status.rs` in this module); the keys it shares with the `local` broker
//! are checked by `client.rs`.
//!
//! ```yaml
//! uplink:
//!   url: mqtts://broker.example.com   # mqtt://host[:port] or mqtts://host[:port]
//!   tls: {ca_file: /etc/fieldrelay/ca.pem}   # only with mqtts://
//!   session: persistent               # persistent | clean
//!   reconnect_initial: 1s             # doubles up to reconnect_max
//!   max_inflight: 64
//!   broker: generic                   # a profile of documented limits (`broker.rs`)
//!   drain: in_order                   # in_order | live_first (see drain.rs)
//!   batch: none                       # none | per_device | per_device_compact (see batch.rs)
//!   protocol: mqtt311                 # mqtt311 | mqtt5, with session_expiry and will_delay
//!                                     # (see protocol.rs)
//! ```
//!
//! Stricter than the protocol, on purpose: TLS settings beside an `mqtt://` url are refused
//! (they would be silently unused), and so are a `cert_file` without its `key_file` and the
//! reverse.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::batch::{validate_batch, Batching};
use super::broker::{drain_rate_under, Broker};
use super::client;
use super::decode::{decode_mapping, Decoded, DurationValue, Keys};
use super::drain::{validate_drain, DrainOrder};
use super::error::Issue;
use super::protocol::{validate_protocol, Protocol};
use super::rules::{choice, file_path, in_range, number, positive_duration, when_written, Choice};
use super::sparkplug::{validate_profile, UplinkProfile};
use super::units::format_duration;

/// Debian's (and Raspberry Pi OS's) bundle of the system's trusted CAs, from `ca-certificates`.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A broker answers in milliseconds; 10 s rides over a slow cellular link and a broker busy
/// persisting, yet finds a dead link far sooner than 1.5 × keep_alive.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keeps a WAN link with a few hundred ms of latency busy; small enough that a reconnect
/// resends little.
pub const DEFAULT_MAX_INFLIGHT: u16 = 64;
/// Packet ids are 16 bits and status messages need a few of their own.
pub const MAX_INFLIGHT: u16 = 65_000;
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_secs(1);
/// A minute caps the gap after a broker outage while still sparing a broker that is restarting
/// from a thundering herd of gateways.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(60);
/// First topic level of the default prefix `fieldrelay/<gateway.id>`.
pub const DEFAULT_TOPIC_ROOT: &str = "fieldrelay";
/// Ten minutes: a PINGREQ and its PINGRESP cost ~200 bytes on the wire with TLS and TCP/IP
/// headers, so one every 10 minutes is ~0.9 MB/month where 30 s cost ~18 MB. The price: a
/// silent death (power cut, WAN cut) is announced by the Last Will after up to 15 minutes
/// (1.5 × keep-alive), and a half-open link is found within ~10 minutes when idle (at once when
/// acknowledgements are due: `response_timeout`). Within every broker profile's maximum.
pub const DEFAULT_UPLINK_KEEP_ALIVE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    /// Broker host from `mqtt://host:port`.
    pub host: String,
    /// Broker port; 1883 when the URL names none.
    pub port: u16,
    /// Resolved: `uplink.client_id` or `gateway.id`.
    pub client_id: String,
    pub keep_alive: Duration,
    /// Resolved: `uplink.topic_prefix` or `fieldrelay/<gateway.id>`; no trailing slash.
    pub topic_prefix: String,
    /// First reconnect delay; doubles per failed attempt (full jitter) up to `reconnect_max`.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// `Some` exactly for `mqtts://` urls.
    pub tls: Option<TlsConfig>,
    pub username: Option<String>,
    /// Read at every connect (so a rotated password is picked up); one trailing newline is not
    /// part of the password.
    pub password_file: Option<PathBuf>,
    pub session: SessionMode,
    /// How long a PINGRESP, PUBACK, PUBREC or PUBCOMP may take before the link is declared
    /// half-open, torn down and redialled.
    pub response_timeout: Duration,
    /// Most unacknowledged QoS 1/2 PUBLISHes at once.
    pub max_inflight: u16,
    /// Most queued messages sent per second; `None`: as fast as the window allows.
    pub max_rate: Option<u32>,
    /// The broker's profile: its documented limits cap the window and the drain rate.
    pub broker: Broker,
    /// `uplink.profile` with `uplink.sparkplug` (`sparkplug.rs` in this module).
    pub profile: UplinkProfile,
    /// `drain` and `live_share`: the order of a backlog and fresh rows (see `drain.rs`).
    pub drain: DrainOrder,
    /// `batch` and `max_packet`: one sample per message or a device's samples together (see
    /// `batch.rs`).
    pub batch: Batching,
    /// `protocol` with `session_expiry` and `will_delay`: MQTT 3.1.1 or 5 (see `protocol.rs`).
    pub protocol: Protocol,
}

impl UplinkConfig {
    /// The settings of a file that names only `url: mqtt://host:port` and `client_id` (every
    /// other key at its default, the topic prefix `fieldrelay/<client_id>`): a base for code
    /// that builds an uplink without a file (tests, benchmarks), which then sets what it needs
    /// with `..UplinkConfig::plain(..)`, so a key added later needs no edit there.
    pub fn plain(host: &str, port: u16, client_id: &str) -> UplinkConfig {
        UplinkConfig {
            host: host.to_owned(),
            port,
            client_id: client_id.to_owned(),
            keep_alive: DEFAULT_UPLINK_KEEP_ALIVE,
            topic_prefix: format!("{DEFAULT_TOPIC_ROOT}/{client_id}"),
            reconnect_initial: DEFAULT_RECONNECT_INITIAL,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            tls: None,
            username: None,
            password_file: None,
            session: SessionMode::Persistent,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_rate: None,
            broker: Broker::default(),
            profile: UplinkProfile::Json,
            drain: DrainOrder::default(),
            batch: Batching::None,
            protocol: Protocol::Mqtt311,
        }
    }

    /// The largest batched PUBLISH: `max_packet`, lowered to the broker's payload limit;
    /// `None` without batching.
    pub fn batch_limit(&self) -> Option<u32> {
        let max_packet = self.batch.max_packet()?;
        Some(
            self.broker
                .limits()
                .max_payload
                .map_or(max_packet, |cap| cap.min(max_packet)),
        )
    }

    /// The in-flight window: `max_inflight`, capped at what the broker allows.
    pub fn inflight_window(&self) -> u16 {
        let cap = self.broker.limits().max_inflight.unwrap_or(MAX_INFLIGHT);
        self.max_inflight.min(cap)
    }

    /// How often the uplink sends a PINGREQ: every `keep_alive`, what MQTT asks of a client
    /// (the broker waits 1.5 × `keep_alive`). The data budget counts them too.
    pub fn ping_interval(&self) -> Duration {
        self.keep_alive.max(Duration::from_millis(100))
    }

    /// The drain rate: `max_rate`, capped just under the broker's publishes per second.
    pub fn drain_rate(&self) -> Option<u32> {
        let cap = self.broker.limits().publishes_per_s.map(drain_rate_under);
        match (self.max_rate, cap) {
            (Some(rate), Some(cap)) => Some(rate.min(cap)),
            (rate, cap) => rate.or(cap),
        }
    }
}

/// TLS for `mqtts://`: the broker is verified against `ca_file`; with `cert_file` and
/// `key_file` the gateway also presents a client certificate (mutual TLS).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM bundle of trusted CAs; default Debian's system bundle.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and its PKCS#8, PKCS#1 or SEC1 key; both or neither.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// What the broker keeps of the gateway's MQTT session between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// `clean_session = 0` with the fixed client id (default): the broker keeps our QoS 2
    /// handshakes and subscriptions across reconnects, so QoS 2 stays exactly-once and commands
    /// sent while the gateway was offline are delivered — at the price of broker memory per
    /// gateway, and a client id that must be unique.
    Persistent,
    /// `clean_session = 1`: the broker forgets everything at disconnect. Nothing piles up on the
    /// broker, but after a reconnect unacknowledged QoS 2 messages are resent as new (possible
    /// duplicates, same `seq`) and commands published meanwhile are lost.
    Clean,
}

impl Choice for SessionMode {
    const WHAT: &'static str = "session mode";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("persistent", SessionMode::Persistent),
        ("clean", SessionMode::Clean),
    ];
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUplink {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub keep_alive: Option<DurationValue>,
    pub topic_prefix: Option<String>,
    pub reconnect_initial: Option<DurationValue>,
    pub reconnect_max: Option<DurationValue>,
    /// Decoded separately into [`RawTls`], key by key.
    pub tls: Option<Value>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub session: Option<String>,
    pub response_timeout: Option<DurationValue>,
    pub max_inflight: Option<i64>,
    pub max_rate: Option<i64>,
    pub broker: Option<String>,
    pub drain: Option<String>,
    pub live_share: Option<i64>,
    pub batch: Option<String>,
    pub max_packet: Option<i64>,
    pub protocol: Option<String>,
    pub session_expiry: Option<DurationValue>,
    pub will_delay: Option<DurationValue>,
    /// Decoded separately (see `status.rs` in this module).
    pub status: Option<Value>,
    pub health_interval: Option<DurationValue>,
    pub health_heartbeat: Option<DurationValue>,
    pub profile: Option<String>,
    /// Decoded separately (see `sparkplug.rs` in this module).
    pub sparkplug: Option<Value>,
}

/// `uplink.tls`: files for `mqtts://` (mutual TLS when a client certificate is given).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `gateway_id` is `None` when the gateway section is invalid: the defaults derived from it
/// are then not resolved (the id's own error is reported).
pub(crate) fn validate_uplink(
    uplink: &Decoded<RawUplink>,
    gateway_id: Option<&str>,
    issues: &mut Vec<Issue>,
) -> Option<UplinkConfig> {
    let (raw, keys) = (&uplink.value, &uplink.keys);
    let endpoint = client::url(keys, &raw.url, issues);
    let default_id = gateway_id.map(str::to_owned);
    let client_id = client::client_id(keys, &raw.client_id, default_id, issues);
    let keep_alive = client::keep_alive(keys, raw.keep_alive, DEFAULT_UPLINK_KEEP_ALIVE, issues);
    let default_prefix = gateway_id.map(|id| format!("{DEFAULT_TOPIC_ROOT}/{id}"));
    let topic_prefix = client::topic_prefix(keys, &raw.topic_prefix, default_prefix, issues);
    let (reconnect_initial, reconnect_max) = reconnect_delays(keys, raw, issues);
    let tls_wanted = endpoint.as_ref().map(|(_, _, tls)| *tls);
    let tls = validate_tls(raw.tls.as_ref(), keys, tls_wanted, issues);
    let username = client::username(keys, &raw.username, issues);
    let password_file = client::password_file(keys, &raw.password_file, &raw.username, issues);
    let session = choice(
        keys,
        "session",
        &raw.session,
        SessionMode::Persistent,
        issues,
    );
    let response_timeout = positive_duration(
        keys,
        "response_timeout",
        raw.response_timeout,
        DEFAULT_RESPONSE_TIMEOUT,
        issues,
    );
    let inflight = 1..=i64::from(MAX_INFLIGHT);
    let max_inflight = number(
        keys,
        "max_inflight",
        raw.max_inflight,
        DEFAULT_MAX_INFLIGHT,
        inflight,
        issues,
    );
    let max_rate = when_written(keys, "max_rate", &raw.max_rate, |rate| {
        in_range(keys, "max_rate", *rate, 1, 1_000_000, issues).and_then(|r| u32::try_from(r).ok())
    });
    let broker = choice(keys, "broker", &raw.broker, Broker::Generic, issues);

    let profile = validate_profile(
        keys,
        &raw.profile,
        raw.sparkplug.as_ref(),
        gateway_id,
        issues,
    );
    let drain = validate_drain(keys, &raw.drain, raw.live_share, issues);
    let batch = validate_batch(keys, &raw.batch, raw.max_packet, issues);
    let protocol = validate_protocol(
        keys,
        &raw.protocol,
        raw.session_expiry,
        raw.will_delay,
        raw.profile.as_deref() == Some("sparkplug"),
        issues,
    );

    let (host, port, _) = endpoint?;
    Some(UplinkConfig {
        host,
        port,
        client_id: client_id?,
        keep_alive: keep_alive?,
        topic_prefix: topic_prefix?,
        reconnect_initial: reconnect_initial?,
        reconnect_max: reconnect_max?,
        tls: tls?,
        username: username?,
        password_file: password_file?,
        session: session?,
        response_timeout: response_timeout?,
        max_inflight: max_inflight?,
        max_rate: max_rate?,
        broker: broker?,
        profile: profile?,
        drain: drain?,
        batch: batch?,
        protocol: protocol?,
    })
}

/// `reconnect_initial` and `reconnect_max`, each greater than 0, the maximum not below the
/// first delay. A pair in the wrong order is reported at the one the user wrote (if both, at
/// the maximum).
fn reconnect_delays(
    keys: &Keys,
    raw: &RawUplink,
    issues: &mut Vec<Issue>,
) -> (Option<Duration>, Option<Duration>) {
    let (initial_key, max_key) = ("reconnect_initial", "reconnect_max");
    let initial = raw.reconnect_initial;
    let initial = positive_duration(
        keys,
        initial_key,
        initial,
        DEFAULT_RECONNECT_INITIAL,
        issues,
    );
    let max = positive_duration(
        keys,
        max_key,
        raw.reconnect_max,
        DEFAULT_RECONNECT_MAX,
        issues,
    );
    let (Some(initial), Some(max)) = (initial, max) else {
        return (initial, max);
    };
    if max >= initial {
        return (Some(initial), Some(max));
    }
    let (initial_text, max_text) = (format_duration(initial), format_duration(max));
    issues.push(if raw.reconnect_max.is_some() {
        let note = if raw.reconnect_initial.is_some() {
            ""
        } else {
            ", the default"
        };
        Issue::value(
            keys.path_of(max_key),
            format!("must be at least reconnect_initial ({initial_text}{note}), got {max_text}"),
        )
    } else {
        Issue::value(
            keys.path_of(initial_key),
            format!("must not exceed reconnect_max ({max_text}, the default), got {initial_text}"),
        )
    });
    (None, None)
}

/// `uplink.tls`, checked against the url's scheme: TLS settings without `mqtts://` would be
/// silently unused, so they are refused. `Some(None)`: no TLS, valid.
fn validate_tls(
    value: Option<&Value>,
    keys: &Keys,
    tls_wanted: Option<bool>,
    issues: &mut Vec<Issue>,
) -> Option<Option<TlsConfig>> {
    let path = keys.path_of("tls");
    let decoded = match value {
        Some(value) => Some(decode_mapping::<RawTls>(
            value,
            &path,
            "the tls settings",
            issues,
        )?),
        None if keys.rejected.contains("tls") => return None,
        None => None,
    };
    let default_ca = || PathBuf::from(DEFAULT_CA_FILE);
    match (tls_wanted?, decoded) {
        (false, None) => Some(None),
        (false, Some(_)) => {
            issues.push(Issue::key(
                path,
                "tls settings need an mqtts:// url (the url is mqtt://)",
            ));
            None
        }
        (true, None) => Some(Some(TlsConfig {
            ca_file: default_ca(),
            client_auth: None,
        })),
        (true, Some(Decoded { value: raw, keys })) => {
            let ca_file = file_path(&keys, "ca_file", &raw.ca_file, issues);
            let cert_file = file_path(&keys, "cert_file", &raw.cert_file, issues);
            let key_file = file_path(&keys, "key_file", &raw.key_file, issues);
            let client_auth = match (cert_file?, key_file?) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (cert, _) => {
                    let (missing, message) = if cert.is_some() {
                        ("key_file", "cert_file needs its key_file")
                    } else {
                        ("cert_file", "key_file needs its cert_file")
                    };
                    issues.push(Issue::missing(keys.path_of(missing), message));
                    return None;
                }
            };
            Some(Some(TlsConfig {
                ca_file: ca_file?.unwrap_or_else(default_ca),
                client_auth,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::testing::{errors, with};

    #[test]
    fn uplink_rules() {
        let uplink = |lines: &str| errors(&with(&[("  url: mqtt://broker.local\n", lines)]));
        assert_eq!(
            uplink("  url: mqtt://b\n  tls: {ca_file: /ca.pem}\n"),
            ["6:3: uplink.tls: tls settings need an mqtts:// url (the url is mqtt://)"]
        );
        assert_eq!(
            uplink("  url: mqtts://b\n  tls: {ca_file: /c.pem, kye_file: x}\n  password_file: /p\n"),
            [
                r#"6:26: uplink.tls.kye_file: unknown key "kye_file" (did you mean "key_file"?)"#,
                "7:18: uplink.password_file: needs a username (mqtt 3.1.1 sends no password without one)",
            ]
        );
        assert_eq!(
            uplink("  url: mqtts://b\n  tls: {cert_file: /c.pem}\n"),
            ["6:8: uplink.tls.key_file: cert_file needs its key_file"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  session: sticky\n  max_inflight: 0\n  max_rate: -1\n  response_timeout: 0s\n"),
            [
                r#"6:12: uplink.session: unknown session mode "sticky": expected persistent or clean"#,
                "7:17: uplink.max_inflight: must be between 1 and 65000, got 0",
                "8:13: uplink.max_rate: must be between 1 and 1000000, got -1",
                "9:21: uplink.response_timeout: must be greater than 0s",
            ]
        );
        let config = load_str(
            &with(&[(
                "  url: mqtt://broker.local\n",
                "  url: mqtts://broker.local\n  tls:\n    ca_file: /ca.pem\n    cert_file: /c.pem\n    key_file: /k.pem\n  username: gw\n  password_file: /pw\n  session: clean\n  response_timeout: 2s\n  max_inflight: 5\n  max_rate: 100\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        let u = &config.uplink;
        assert_eq!(u.port, 8883);
        assert_eq!(
            u.tls,
            Some(TlsConfig {
                ca_file: "/ca.pem".into(),
                client_auth: Some(("/c.pem".into(), "/k.pem".into()))
            })
        );
        assert_eq!(u.username.as_deref(), Some("gw"));
        assert_eq!(u.password_file, Some(PathBuf::from("/pw")));
        assert_eq!(u.session, SessionMode::Clean);
        assert_eq!(u.response_timeout, Duration::from_secs(2));
        assert_eq!((u.max_inflight, u.max_rate), (5, Some(100)));
        let config = load_str(
            &with(&[(
                "  url: mqtt://broker.local\n",
                "  url: mqtts://broker.local\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            config.uplink.tls.unwrap().ca_file,
            PathBuf::from(DEFAULT_CA_FILE)
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  keep_alive: 0s\n  client_id: a b\n  topic_prefix: a/#/\n"),
            [
                "6:15: uplink.keep_alive: must be between 1s and 65535s, got 0s",
                r#"7:14: uplink.client_id: invalid client id "a b": use 1 to 128 letters, digits, "_" or "-""#,
                "8:17: uplink.topic_prefix: must not contain the mqtt wildcards + or #",
            ]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  keep_alive: 1.5s\n  topic_prefix: /x\n"),
            [
                "6:15: uplink.keep_alive: must be a whole number of seconds (mqtt sends it in seconds), got 1500ms",
                "7:17: uplink.topic_prefix: must not start or end with /",
            ]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_initial: 2s\n  reconnect_max: 1s\n"),
            ["7:18: uplink.reconnect_max: must be at least reconnect_initial (2s), got 1s"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_initial: 2m\n"),
            ["6:22: uplink.reconnect_initial: must not exceed reconnect_max (1m, the default), got 2m"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  reconnect_max: 500ms\n"),
            ["6:18: uplink.reconnect_max: must be at least reconnect_initial (1s, the default), got 500ms"]
        );
        let long = "x".repeat(129);
        assert_eq!(
            uplink(&format!("  url: mqtt://b\n  client_id: {long}\n")).len(),
            1
        );
    }
}
