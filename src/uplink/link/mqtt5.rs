//! `uplink.protocol: mqtt5` on a connection: the broker's CONNACK limits applied, refusals
//! acted on by their reason code ([`crate::uplink::reason`]), rows the broker cannot take
//! rejected before they are sent.
//!
//! - **Rejected** (0x80, 0x83, 0x87, 0x90, 0x91, 0x99 from the broker; 0x95, 0x9A, 0x9B found
//!   locally): the message's rows leave the queue for its `rejected` table
//!   ([`crate::queue::Queue::reject`]) with the code, counted per code; a warning names the topic
//!   and the meaning once per code and minute. The connection goes on and the rows behind flow.
//! - **Quota exceeded** (0x97): the message keeps its packet id and window slot, awaiting
//!   nothing; no new rows are taken, and after a pause (the reconnect backoff's, doubling while
//!   the broker keeps refusing) every such message is written again with its id. The
//!   connection stays up.
//!
//! The PUBLISH of every row message in flight is kept (its payload is shared, not copied) for
//! that resend and for the topic the warnings name; an answer on a command's Response Topic
//! (a `command_response` row) keeps its Correlation Data too, sent with every copy.
//!
//! A server's DISCONNECT ends the connection like any loss, logged with its meaning
//! ([`server_disconnect`]); one that waits in the socket behind a failed write is read for it
//! ([`why_lost`]). Session taken over, rate or quota exceeded make the link wait
//! `reconnect_max` before it dials again.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::Packet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Link;
use crate::backoff::Backoff;
use crate::config::Qos;
use crate::queue::request;
use crate::queue::{Entry, MessageKind, StoredRow};
use crate::sample::now_ms;
use crate::uplink::connection::{PacketReader, PacketWriter, Refusal};
use crate::uplink::limits::{expiry_secs, BrokerLimits};
use crate::uplink::reason::{
    after_disconnect, meaning, verdict, AfterDisconnect, Verdict, PACKET_TOO_LARGE,
};
use crate::uplink::session::Released;
use crate::uplink::UplinkError;

/// How often one reason code is warned about; refusals in between are counted only.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The MQTT 5 state of one connection.
#[derive(Debug)]
pub(super) struct Mqtt5Link {
    pub limits: BrokerLimits,
    /// The PUBLISH of every row message in flight, with its rows' earliest `expires_ms`.
    sent: HashMap<u16, (Packet, Option<i64>)>,
    /// The Correlation Data of the answers to requests in flight (rows of kind
    /// `command_response`), sent with every copy of their PUBLISH.
    correlations: HashMap<u16, Bytes>,
    /// While set, no rows are taken and deferred messages wait (quota exceeded).
    pub quota_until: Option<Instant>,
    quota_backoff: Backoff,
    /// When each reason code was last warned about.
    warned: HashMap<u8, Instant>,
}

impl Mqtt5Link {
    pub fn new(limits: BrokerLimits, initial: Duration, max: Duration) -> Mqtt5Link {
        Mqtt5Link {
            limits,
            sent: HashMap::new(),
            correlations: HashMap::new(),
            quota_until: None,
            quota_backoff: Backoff::new(initial, max),
            warned: HashMap::new(),
        }
    }

    /// Whether a warning about `code` is due at `now` (once per [`WARN_EVERY`]).
    fn warn_due(&mut self, code: u8, now: Instant) -> bool {
        match self.warned.get(&code) {
            Some(&at) if now < at + WARN_EVERY => false,
            _ => {
                self.warned.insert(code, now);
                true
            }
        }
    }

    fn topic(&self, pkid: u16) -> String {
        match self.sent.get(&pkid) {
            Some((Packet::Publish(p), _)) => p.topic.clone(),
            _ => String::from("(not a queue row)"),
        }
    }
}

impl Link {
    /// A new MQTT 5 connection: its limits cap the window, the keep-alive and the session.
    pub(super) fn apply_limits(&mut self, limits: Option<BrokerLimits>) {
        let configured = self.config.inflight_window();
        let Some(limits) = limits else {
            self.mqtt5 = None;
            self.session.set_window(configured);
            return;
        };
        let window = limits.window(configured);
        self.session.set_window(window);
        info!(
            receive_maximum = ?limits.receive_max,
            maximum_packet_size = ?limits.max_packet,
            topic_alias_maximum = limits.topic_alias_max,
            maximum_qos = ?limits.max_qos,
            retain_available = limits.retain_available,
            window,
            "uplink speaks MQTT 5; the broker's limits apply"
        );
        if !limits.retain_available || limits.max_qos == Some(0) {
            error!(
                "the broker takes no retained or no QoS 1 messages: the gateway's status \
                 certificates (retained, QoS 1) will be refused; use a broker or plan that takes them"
            );
        }
        let asked = self.config.protocol.mqtt5().map(|v5| v5.session_expiry);
        if let (Some(assigned), Some(asked)) = (limits.session_expiry, asked) {
            if u64::from(assigned) < asked.as_secs() {
                warn!(
                    asked_secs = asked.as_secs(),
                    assigned_secs = assigned,
                    "the broker keeps the session for less than uplink.session_expiry: an outage \
                     longer than that loses the commands published meanwhile and restarts QoS 2 \
                     handshakes as new messages"
                );
            }
        }
        self.mqtt5 = Some(Mqtt5Link::new(
            limits,
            self.config.reconnect_initial,
            self.config.reconnect_max,
        ));
    }

    /// How often a PINGREQ goes out: the broker's Server Keep Alive when it sets one.
    pub(super) fn ping_every(&self) -> Duration {
        match self.mqtt5.as_ref().and_then(|m| m.limits.server_keep_alive) {
            Some(secs) if secs > 0 => Duration::from_secs(u64::from(secs)),
            _ => self.config.ping_interval(),
        }
    }

    /// The largest batch: `uplink.max_packet` lowered to the broker's limits.
    pub(super) fn batch_limit(&self) -> Option<u32> {
        let limit = self.config.batch_limit()?;
        Some(
            self.mqtt5
                .as_ref()
                .map_or(limit, |m| m.limits.batch_limit(limit)),
        )
    }

    /// Whether new rows wait for a quota pause to end.
    pub(super) fn quota_paused(&self) -> bool {
        self.mqtt5.as_ref().is_some_and(|m| m.quota_until.is_some())
    }

    /// The reason code a row is refused with before it is sent, if the broker cannot take it:
    /// larger than its Maximum Packet Size, or of a QoS or retain flag it does not take.
    pub(super) fn refused_locally(
        &self,
        topic: &str,
        payload: usize,
        qos: Qos,
        retain: bool,
    ) -> Option<u8> {
        let limits = &self.mqtt5.as_ref()?.limits;
        if !limits.fits(topic.len(), payload) {
            return Some(PACKET_TOO_LARGE);
        }
        limits.refuses(qos, retain)
    }

    /// Keeps the PUBLISH of a row message in flight (MQTT 5 only).
    pub(super) fn keep_sent(&mut self, pkid: u16, packet: &Packet, rows: &[StoredRow]) {
        if let Some(m) = self.mqtt5.as_mut() {
            let expires = rows.iter().filter_map(|row| row.expires_ms).min();
            m.sent.insert(pkid, (packet.clone(), expires));
            match correlation(rows) {
                Some(correlation) => m.correlations.insert(pkid, correlation),
                None => m.correlations.remove(&pkid),
            };
        }
    }

    /// Whether the PUBLISH of `pkid` is kept (a row message in flight).
    fn kept(&self, pkid: u16) -> bool {
        self.mqtt5
            .as_ref()
            .is_some_and(|m| m.sent.contains_key(&pkid))
    }

    /// A message left the session (acknowledged, refused, cancelled).
    pub(super) fn forget_sent(&mut self, pkid: u16) {
        if let Some(m) = self.mqtt5.as_mut() {
            m.sent.remove(&pkid);
            m.correlations.remove(&pkid);
            if m.quota_until.is_none() {
                m.quota_backoff.reset();
            }
        }
    }

    /// The Message Expiry Interval of each of `packets` (MQTT 5), from their kept rows.
    pub(super) fn expiries(&self, packets: &[Packet]) -> Vec<Option<u32>> {
        let Some(m) = self.mqtt5.as_ref() else {
            return Vec::new();
        };
        let now = now_ms();
        packets
            .iter()
            .map(|packet| match packet {
                Packet::Publish(p) => m
                    .sent
                    .get(&p.pkid)
                    .and_then(|(_, expires)| expiry_secs(*expires, now)),
                _ => None,
            })
            .collect()
    }

    /// The Correlation Data of each of `packets` (MQTT 5), from their kept rows.
    pub(super) fn correlations(&self, packets: &[Packet]) -> Vec<Option<Bytes>> {
        let Some(m) = self.mqtt5.as_ref() else {
            return Vec::new();
        };
        packets
            .iter()
            .map(|packet| match packet {
                Packet::Publish(p) => m.correlations.get(&p.pkid).cloned(),
                _ => None,
            })
            .collect()
    }

    /// A PUBACK or PUBREC refusing a message (see the module doc).
    pub(super) async fn on_refused(
        &mut self,
        refusal: Refusal,
        now: Instant,
    ) -> Result<(), UplinkError> {
        let pubrec = refusal.packet == "PUBREC";
        let topic = self
            .mqtt5
            .as_ref()
            .map_or_else(String::new, |m| m.topic(refusal.pkid));
        match verdict(refusal.code) {
            Verdict::Retry(code) if !self.kept(refusal.pkid) => {
                // Not a row (a status certificate): not kept, so not sent again; a later birth
                // replaces it.
                self.session.on_refused(refusal.pkid, pubrec)?;
                warn!(
                    reason = meaning(code),
                    "the broker refused a status message for now ({code:#04x}); not sent again"
                );
                Ok(())
            }
            Verdict::Retry(code) => {
                self.session.defer(refusal.pkid, pubrec)?;
                self.stats.quota_paused();
                let Some(m) = self.mqtt5.as_mut() else {
                    return Ok(());
                };
                if m.quota_until.is_none() {
                    let delay = m.quota_backoff.ceiling();
                    m.quota_backoff.next_delay_with(1.0);
                    m.quota_until = Some(now + delay);
                    if m.warn_due(code, now) {
                        warn!(
                            %topic, reason = meaning(code), pause = ?delay,
                            "the broker refused a message for now ({code:#04x} {}); sending it \
                             again after a pause, the rows stay queued",
                            meaning(code)
                        );
                    }
                }
                Ok(())
            }
            Verdict::Rejected(code) => {
                let released = self.session.on_refused(refusal.pkid, pubrec)?;
                self.forget_sent(refusal.pkid);
                let seqs = match released {
                    Released::Row(seq) => vec![seq],
                    Released::Rows(seqs) => seqs,
                    Released::Status => {
                        warn!(%topic, reason = meaning(code), "the broker refused a status message ({code:#04x})");
                        return Ok(());
                    }
                };
                for &seq in &seqs {
                    self.live_released(seq);
                }
                self.reject(seqs, code, &topic, refusal.reason.as_deref(), now)
                    .await
            }
            // A refusal always carries a failure code (the connection hands successes over as
            // PUBACK / PUBREC).
            Verdict::Delivered => Err(UplinkError::UnexpectedPacket("PUBACK")),
        }
    }

    /// Sets `seqs` aside as rejected with `code`, counted; warned about once per code and minute.
    pub(super) async fn reject(
        &mut self,
        seqs: Vec<u64>,
        code: u8,
        topic: &str,
        reason: Option<&str>,
        now: Instant,
    ) -> Result<(), UplinkError> {
        let rows = seqs.len();
        self.queue.reject(seqs, code).await?;
        self.stats.rejected(code, rows);
        let warn_due = self.mqtt5.as_mut().is_some_and(|m| m.warn_due(code, now));
        if warn_due {
            warn!(
                %topic, rows, code = format!("{code:#04x}"), reason = meaning(code),
                broker_says = reason.unwrap_or(""),
                "rows refused for good ({}): set aside as rejected, the rest of the queue \
                 flows; see `fieldrelay queue stats` and `queue export --rejected`",
                meaning(code)
            );
        }
        Ok(())
    }

    /// The quota pause ended: every deferred message is written again with its id.
    pub(super) async fn resend_deferred(
        &mut self,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let now = Instant::now();
        let pkids = self.session.resend_deferred(now);
        let Some(m) = self.mqtt5.as_mut() else {
            return Ok(());
        };
        m.quota_until = None;
        let packets: Vec<Packet> = pkids
            .iter()
            .filter_map(|pkid| m.sent.get(pkid).map(|(packet, _)| packet.clone()))
            .collect();
        let expiries = self.expiries(&packets);
        let correlations = self.correlations(&packets);
        writer.write_v5(&packets, &expiries, &correlations).await?;
        self.stats.resent(packets.len());
        Ok(())
    }
}

/// Why a connection was lost: a server's DISCONNECT (MQTT 5) says it better than the write that
/// failed after it (a broker closes the socket right after its DISCONNECT, which may still wait
/// in the socket's buffer): what is readable at once is read for it.
pub(super) async fn why_lost(reader: &mut PacketReader, error: UplinkError) -> UplinkError {
    if !reader.speaks_mqtt5() || !matches!(error, UplinkError::Io(_) | UplinkError::Closed) {
        return error;
    }
    let drain = async {
        loop {
            match reader.read().await {
                Ok(_) => continue,
                Err(disconnect @ UplinkError::ServerDisconnect { .. }) => return Some(disconnect),
                Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(100), drain).await {
        Ok(Some(disconnect)) => disconnect,
        _ => error,
    }
}

/// Logs a lost connection; whether it was a server's DISCONNECT asking the link to wait the
/// backoff's ceiling before it dials again (session taken over, rate or quota exceeded).
pub(super) fn server_disconnect(error: &UplinkError) -> bool {
    let UplinkError::ServerDisconnect {
        code, reference, ..
    } = error
    else {
        warn!(%error, "uplink connection lost");
        return false;
    };
    match code {
        0x8E => error!(
            %error,
            "another client connected with this gateway's client id and took the session over: \
             two gateways share uplink.client_id? waiting uplink.reconnect_max before dialling \
             again"
        ),
        0x9C | 0x9D => warn!(
            %error, server_reference = reference.as_deref().unwrap_or(""),
            "the broker asks the gateway to use another server; not followed on its own: \
             change uplink.url to move it; dialling the configured broker again"
        ),
        _ => warn!(%error, "uplink connection lost"),
    }
    after_disconnect(*code) == AfterDisconnect::Longest
}

/// The Correlation Data a row message answers with: that of a `command_response` row (stored in
/// hex in its `point`, see `queue/request.rs`); none for an empty one or any other row.
fn correlation(rows: &[StoredRow]) -> Option<Bytes> {
    let [row] = rows else { return None };
    match &row.entry {
        Entry::Message(m) if m.kind == MessageKind::CommandResponse && !m.point.is_empty() => {
            request::from_hex(&m.point).map(Bytes::from)
        }
        _ => None,
    }
}
