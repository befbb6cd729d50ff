//! The uplink: one MQTT 3.1.1 connection to the cloud broker, driven by our own session logic.
//!
//! # Guarantees
//! - A queue row is deleted ([`crate::queue::Queue::ack`]) only when the broker's PUBACK (QoS 1)
//!   or PUBCOMP (QoS 2) for the packet id it was sent with arrives on the same connection —
//!   never because it was written to the socket.
//! - Rows are sent in `seq` order. After every (re)connect all rows still in the queue are sent
//!   again from the oldest, with their original `seq`, so a consumer can drop duplicates.
//! - QoS 0 samples (the queue's live channel) are sent only while connected; what arrives while
//!   the link is down is discarded at the next connect (counted in the log).
//! - Birth certificate (`P/status` online, retained, QoS 1) after every CONNACK; the CONNECT
//!   carries a retained QoS 1 Last Will (`offline`, `reason: connection_lost`); a graceful
//!   shutdown publishes `offline` with `reason: shutdown` before DISCONNECT.
//!
//! # Failure and recovery
//! Any I/O error, protocol violation, missing PINGRESP or write that does not complete within the
//! keep-alive tears the connection down. The link then waits an exponential backoff with full
//! jitter (`reconnect_initial` doubling up to `reconnect_max`, reset after a CONNACK) and dials
//! again, forever, until shutdown. Nothing is lost meanwhile: the queue keeps every row.
//!
//! # Why not rumqttc's event loop
//! rumqttc 0.25 returns no packet id from `publish()`, reports a publish as "outgoing" when it is
//! buffered, resends without DUP and silently drops pending publishes on `session_present = 0`
//! (see `shared/notes/dependencies.md`). We use only its packet codec; [`session`] is the pure
//! state machine, [`link`] the task doing I/O.

pub mod connection;
pub mod link;
pub mod message;
pub mod session;

pub use link::run;

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
    #[error("broker refused the connection: {0}")]
    Refused(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("broker closed the connection")]
    Closed,
    #[error("unexpected {0} from the broker")]
    UnexpectedPacket(&'static str),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}
