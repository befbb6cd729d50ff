//! The uplink: one MQTT connection to the cloud broker (3.1.1, or 5 with
//! `uplink.protocol: mqtt5`), driven by our own session logic, with the session state kept in
//! the durable queue.
//!
//! # Guarantees
//! - A queue row is deleted ([`crate::queue::Queue::ack`]) only when the broker's PUBACK (QoS 1)
//!   or PUBCOMP (QoS 2) for the packet id it was sent with arrives — never because it was
//!   written to the socket.
//! - Packet ids and handshake stages are committed before the packets that depend on them are
//!   written, so a resumed session (`session_present = 1`) resends exactly what MQTT 3.1.1 §4.4
//!   asks — unacknowledged PUBLISHes with their original ids and DUP=1, PUBRELs for rows past
//!   PUBREC — even after a `kill -9`: QoS 2 stays exactly-once while the broker keeps the
//!   session. With `session_present = 0` every unacknowledged row is resent as new, same `seq`.
//! - Rows are first sent in `seq` order (so in order per point); a resend may repeat an older
//!   `seq` after a newer one, never skip one.
//! - QoS 0 samples (the queue's live channel) are sent only while connected; what arrives while
//!   the link is down is discarded at the next connect (counted in the log).
//! - Birth certificate (`P/status` online, retained, QoS 1) after every CONNACK, and again when
//!   the device map changes; the CONNECT carries a retained QoS 1 Last Will (`offline`,
//!   `reason: connection_lost`, or an empty payload with `uplink.status.offline: clear`); a
//!   graceful shutdown publishes the same kind of death with `reason: shutdown` before
//!   DISCONNECT ([`presence`]). Health reports on `P/health` go out only while connected.
//!
//! # Failure and recovery
//! Any I/O error, protocol violation, answer missing for `response_timeout` (PINGRESP, PUBACK,
//! PUBREC, PUBCOMP, SUBACK), write that does not complete in time, or incoming command left
//! unacknowledged ([`inbound`]: it would hold back every later PUBACK) tears the connection
//! down. The link then waits an exponential backoff with full jitter (`reconnect_initial`
//! doubling up to `reconnect_max`, reset after a CONNACK — except the first CONNACK after a
//! teardown for an unacknowledged command, so a failure that persists does not redial in a
//! loop) and dials again, forever, until shutdown. Nothing is lost meanwhile: the queue keeps
//! every row. A session write the queue cannot commit (a full disk) is not such a failure: the
//! link pauses on the live connection until it can ([`stall`]).
//!
//! # MQTT 5
//! The seam is the connection: [`connection`] speaks rumqttc's v4 or v5 codec and hands the
//! link and [`session`] the same (v4) packets either way, so the session logic is one and stays
//! pure. What only MQTT 5 says arrives beside them: a PUBACK or PUBREC refusing a message
//! ([`connection::Refusal`]), a server's DISCONNECT ([`UplinkError::ServerDisconnect`]), the
//! CONNACK's limits ([`limits::BrokerLimits`]); outgoing PUBLISHes gain a Message Expiry from
//! their rows and a topic alias ([`alias`]) in the writer. Under MQTT 5:
//! - A row is deleted only on a PUBACK / PUBCOMP of 0x00 or 0x10. A refusal for good sets the
//!   message's rows aside as rejected ([`crate::queue::Queue::reject`], [`reason`]); "quota
//!   exceeded" keeps them in flight and sends them again after a pause; neither stops the rows
//!   behind nor renews the connection. A row the broker cannot take (too large, QoS above its
//!   maximum, retained without retain support) is rejected before it is sent.
//! - Receive Maximum caps the window, Maximum Packet Size the batches, Server Keep Alive the
//!   pings; Session Expiry and Will Delay come from the configuration.
//! - A server's DISCONNECT is logged with its meaning; session taken over, rate or quota
//!   exceeded wait `reconnect_max` before the next dial; a server reference is logged, never
//!   followed.
//!
//! # Why not rumqttc's event loop
//! rumqttc 0.25 returns no packet id from `publish()`, reports a publish as "outgoing" when it is
//! buffered, resends without DUP and silently drops pending publishes on `session_present = 0`
//! (see `shared/notes/dependencies.md`). We use only its packet codec; [`session`] is the pure
//! state machine, [`link`] the task doing I/O; [`transport`] and [`connection`] know nothing of
//! the queue and serve any MQTT connection (the on-site broker's too). [`inbound`] is
//! the seam for commands: subscribe and acknowledge manually, in receive order.
//!
//! # The Sparkplug profile
//! With `uplink.profile: sparkplug`, [`sparkplug::SparkplugUplink`] runs instead of [`Uplink`]:
//! a Sparkplug B 3.0 edge node on the same connection parts, the queue as its history store,
//! rows deleted after a PINGRESP barrier instead of a PUBACK (see its module doc).

pub mod alias;
pub mod batch;
pub mod compact;
pub mod connection;
pub mod inbound;
pub mod limits;
pub mod link;
pub mod presence;
pub mod rate;
pub mod reason;
pub mod session;
pub mod share;
pub mod sparkplug;
pub mod stall;
pub mod stats;
pub mod transport;

pub use inbound::{AckToken, Inbound, Incoming};
pub use link::Uplink;
pub use presence::Presence;
pub use stats::{Retrying, UplinkSnapshot, UplinkStats};
pub use transport::{Dialer, TransportError};

/// Builds the dialer for the configured broker (reads the TLS files now).
pub fn dialer(config: &crate::config::UplinkConfig) -> Result<Dialer, TransportError> {
    Dialer::new(
        &config.host,
        config.port,
        config.tls.as_ref(),
        config.username.clone(),
        config.password_file.clone(),
    )
}

/// Whether the uplink has a broker connection, published on a watch for status lines (systemd
/// `STATUS=`). Only a view: delivery never depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling, or waiting out the backoff after a failed or lost connection.
    #[default]
    Connecting,
    /// CONNACK received; rows flow.
    Connected,
}

/// Why a connection ended (it is redialled after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("mqtt protocol error: {0}")]
    Protocol(rumqttc::mqttbytes::Error),
    #[error("mqtt 5 protocol error: {0}")]
    Protocol5(rumqttc::v5::mqttbytes::Error),
    /// MQTT 5: the broker closed the connection with a DISCONNECT saying why.
    #[error("broker disconnected: {code:#04x} {meaning}{}{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(), reference.as_ref().map(|r| format!("; it names another server to use: {r}")).unwrap_or_default())]
    ServerDisconnect {
        code: u8,
        meaning: &'static str,
        /// Server Reference: another broker to use (0x9C, 0x9D).
        reference: Option<String>,
        /// The broker's Reason String.
        reason: Option<String>,
    },
    #[error("broker refused the connection: {0}")]
    Refused(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("broker closed the connection")]
    Closed,
    #[error("unexpected {0} from the broker")]
    UnexpectedPacket(&'static str),
    /// An incoming message will never be acknowledged on this connection, and every later
    /// PUBACK waits behind it ([`inbound`]): only a new connection makes the broker redeliver it.
    #[error(
        "an incoming message was left unacknowledged; reconnecting so the broker redelivers it"
    )]
    Jammed,
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}
