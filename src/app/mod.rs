//! Wiring and shutdown: opens the queue, starts one owner task per bus and the uplink, and stops
//! them in order when the shared [`CancellationToken`] fires (SIGTERM/SIGINT in `main.rs`).
//!
//! - [`start`]: start-up, in dependency order — the queue, the bus owners with the gateway's
//!   sample sink ([`GatewaySink`]: a live copy to the on-site broker, then the queue), the command
//!   paths, the uplink, the local broker client, the status monitor, the HTTP server (metrics,
//!   console), the service
//!   supervisor (READY=1 last) and the reload task. What it started is a [`start::Running`].
//! - [`shutdown`]: the staged stop of a [`start::Running`].
//!
//! # Shutdown order
//! 1. Intake stops first: every bus owner selects on the token and returns at its next wait point;
//!    samples it already pushed are committed by the writer.
//! 2. The uplink publishes the offline status, waits up to its grace period for outstanding
//!    acknowledgements, and disconnects. Rows not acknowledged stay queued for the next start.
//! 3. The queue closes last: the writer commits what is pending and the database is closed.
//!
//! Each of the three stages waits at most [`STEP_DEADLINE`]; a task that overruns it is abandoned
//! (logged), so the process exits within [`SHUTDOWN_BUDGET`] even when a peer hangs.
//!
//! Beside the pipeline: the reload task ([`crate::reload`], SIGHUP swaps buses and devices in the
//! [`crate::fleet::Fleet`]) and, when configured, the HTTP server of the metrics endpoint
//! ([`crate::metrics`]) and the console ([`crate::console`]); both stop on the token with the
//! pollers. Then the status monitor ([`crate::status`]), the command handlers
//! ([`crate::commands`]: the cloud's, and the on-site broker's with `local:`) and the local
//! broker client ([`crate::local`]), which stop before the uplink and the queue: they may be
//! committing a device status or a command's answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::queue::QueueError;
use crate::uplink;

mod shutdown;
mod sink;
mod start;

pub use sink::GatewaySink;

/// Upper bound for each of the three shutdown stages (intake, links, queue); the uplink's own
/// grace period for acknowledgements fits inside it.
pub const STEP_DEADLINE: Duration = Duration::from_secs(5);

/// The longest a shutdown can take: three stages of [`STEP_DEADLINE`]. It must stay below the
/// unit's `TimeoutStopSec=`, or systemd kills the process before the queue has closed (a test
/// reads the unit file and checks this).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3 * STEP_DEADLINE.as_secs());

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the queue in {dir}: {source}")]
    Queue {
        dir: std::path::PathBuf,
        source: QueueError,
    },
    #[error("uplink: {0}")]
    Uplink(#[from] uplink::TransportError),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
}

/// How the gateway stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (SIGTERM/SIGINT).
    Shutdown,
    /// To apply a configuration pushed from the cloud (or its rollback) that needs a restart:
    /// the process should exit with [`crate::remote_config::EX_RESTART`].
    Restart,
}

/// Runs the gateway until `cancel` fires, then shuts down in order. SIGHUP reloads the buses and
/// devices from `config_path`.
pub async fn run(
    config: Config,
    config_path: PathBuf,
    cancel: CancellationToken,
) -> Result<Stopped, AppError> {
    let restart = Arc::new(AtomicBool::new(false));
    let running = start::start(config, config_path, restart.clone(), &cancel)?;
    cancel.cancelled().await;
    info!("shutting down");
    running.shutdown().await;
    Ok(if restart.load(Ordering::SeqCst) {
        Stopped::Restart
    } else {
        Stopped::Shutdown
    })
}
