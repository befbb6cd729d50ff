//! Safe downstream commands (issue 5): `P/<device>/<point>/set` → a validated Modbus write →
//! `P/<device>/<point>/set/result`, at most one write per command id.
//!
//! - [`payload`]: the command's JSON (object with `value`, `id`, `ts`, or a bare scalar). Pure,
//!   fuzzed (`fuzz/fuzz_targets/command_payload.rs`).
//! - [`topic`]: command and result topics. Pure.
//! - [`plan`]: age, type, resolution and range checks against the point map, and the request
//!   that carries the write out. Pure.
//! - [`result`]: the answer's payload and the error codes of the contract. Pure.
//! - [`handler`]: the task (I/O) that ties them to the bus owners, the recent-commands table in
//!   the queue file and the broker's manual acknowledgements; one per broker the gateway takes
//!   commands from (the cloud uplink and, with `local:`, the on-site broker).
//!
//! Why a command is acknowledged only after its answer is committed, and how a redelivery is
//! answered without a second write, is in [`handler`] and `queue/recent.rs`. The topics and
//! payloads are the public contract in `docs/interface.md`.

pub mod handler;
pub mod payload;
pub mod plan;
pub mod result;
pub mod topic;

pub use handler::{Handler, LocalResults, Origin};
pub use payload::{CommandId, CommandPayload, PayloadError};
pub use result::{ErrorCode, Outcome, Refusal};

/// How many commands may wait for the handler. A broker sends an unacknowledged subscriber at
/// most its in-flight limit (mosquitto: 20) at once, so this is never the bound in practice;
/// when it is, the uplink leaves the extra ones unacknowledged and the broker redelivers them.
pub const BACKLOG: usize = 256;
