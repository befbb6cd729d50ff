//! Safe downstream commands: `P/<device>/<point>/set` → the durable command inbox → a validated
//! Modbus write → `P/<device>/<point>/set/result`, at most one write per command id.
//!
//! ```text
//!  connection (uplink | local client) ──batches of PUBLISHes──► intake ──inbox_take──► queue.db
//!        ▲                                                       │ (command_inbox)
//!        └──────────── PUBACKs, in receive order, after the commit ◄┘       │
//!                                                  handler ◄── inbox_next ───┘
//!                                  bus owner ◄── write ──┘ └── answer + removal (one commit)
//! ```
//!
//! - [`payload`]: the command's JSON (object with `value`, `id`, `ts`, or a bare scalar). Pure,
//!   fuzzed (`fuzz/fuzz_targets/command_payload.rs`).
//! - [`topic`]: command and result topics. Pure.
//! - [`plan`]: age, type, resolution and range checks against the point map, and the request
//!   that carries the write out. Pure.
//! - [`request`]: MQTT 5 response topic, correlation data and message expiry of a command.
//!   Pure.
//! - [`result`]: the answer's payload and the error codes of the contract. Pure.
//! - [`intake`]: commits what a connection delivers to the inbox, then acknowledges it; refuses
//!   with `busy` when the inbox is full. One per broker commands come from.
//! - [`handler`]: works through the inbox of its origin in arrival order: the bus owners, the
//!   recent-commands table, the answers ([`answer`]).
//!
//! Why a command is acknowledged once it is in the inbox, and how a redelivery is answered
//! without a second write, is in [`intake`], [`handler`], `queue/inbox.rs` and
//! `queue/recent.rs`. The topics and payloads are the public contract in `docs/interface.md`.

pub mod answer;
pub mod handler;
pub mod intake;
pub mod payload;
pub mod plan;
pub mod request;
pub mod result;
pub mod stats;
pub mod topic;

use std::sync::Arc;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use answer::{LocalResults, Origin};
pub use handler::Handler;
pub use intake::Intake;
pub use payload::{CommandId, CommandPayload, PayloadError};
pub use result::{ErrorCode, Outcome, Refusal};
pub use stats::CommandStats;

use crate::config::CommandsConfig;
use crate::modbus::BusHandle;
use crate::queue::Queue;
use crate::uplink::inbound::{Inbound, INTAKE_BACKLOG};

/// The command path of one broker: its intake and its handler.
pub struct CommandPath {
    pub origin: Origin,
    /// The topic prefix commands arrive under (`P` of `P/+/+/set`).
    pub prefix: String,
    pub queue: Queue,
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    pub commands: CommandsConfig,
    pub stats: Arc<CommandStats>,
}

impl CommandPath {
    /// Starts the intake and the handler; returns what the connection hands its PUBLISHes to
    /// and the task running both (it ends when `cancel` fires).
    pub fn spawn(self, cancel: CancellationToken) -> (Inbound, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(INTAKE_BACKLOG);
        let wake = Arc::new(Notify::new());
        let inbound = Inbound {
            filters: vec![topic::filter(&self.prefix)],
            tx,
            max_packet: crate::uplink::inbound::MAX_INCOMING_PACKET,
        };
        let intake = Intake {
            origin: self.origin.clone(),
            prefix: self.prefix,
            queue: self.queue.clone(),
            handler: wake.clone(),
            stats: self.stats.clone(),
        };
        let handler = Handler {
            origin: self.origin,
            queue: self.queue,
            handles: self.handles,
            commands: self.commands,
            stats: self.stats,
        };
        let task = tokio::spawn(async move {
            tokio::join!(
                intake.run(rx, cancel.clone()),
                handler.run(wake, cancel.clone())
            );
        });
        (inbound, task)
    }
}
