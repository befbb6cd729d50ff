//! The staged shutdown of what [`super::start`] started (the order is in the module doc of
//! [`super`]).

use std::future::Future;

use tokio::time::Instant;
use tracing::{info, warn};

use super::start::Running;
use super::STEP_DEADLINE;

impl Running {
    /// Stops every task in three stages, each within [`STEP_DEADLINE`]; called once the token
    /// every task selects on was cancelled.
    pub(super) async fn shutdown(self) {
        // Stage 1: intake and what stands beside it. Every task below was cancelled by the same
        // token, so they stop together and share one deadline.
        let deadline = Instant::now() + STEP_DEADLINE;
        // Sends STOPPING=1 and returns; it holds a queue handle only until then.
        if let Some(Err(error)) = settle(deadline, "service supervisor", self.supervisor).await {
            warn!(%error, "service supervisor failed");
        }
        // A reload under way stops starting buses once cancelled.
        settle(deadline, "reload task", self.reloader).await;
        settle(deadline, "pollers", self.pollers.wait()).await;
        if let Some(web) = self.web {
            settle(deadline, "http server", web).await;
        }
        // Before the uplink and the queue: they may be committing a device status or an answer.
        settle(deadline, "status monitor", self.monitor).await;
        settle(deadline, "command handler", self.cloud_commands).await;
        if let Some(remote) = self.remote {
            settle(deadline, "configuration task", remote).await;
        }
        let local_client = match self.local {
            Some(local) => {
                settle(deadline, "local command handler", local.handler).await;
                Some(local.client)
            }
            None => None,
        };
        // Stage 2: the links say goodbye (retained offline status, outstanding acks, DISCONNECT),
        // the cloud uplink and the on-site client at the same time: neither waits for the other.
        let deadline = Instant::now() + STEP_DEADLINE;
        let local_goodbye = async {
            if let Some(client) = local_client {
                settle(deadline, "local broker client", client).await;
            }
        };
        let (uplink, ()) = tokio::join!(settle(deadline, "uplink", self.uplink), local_goodbye);
        if let Some(Err(error)) = uplink {
            warn!(%error, "uplink task failed");
        }
        // Stage 3: the queue closes last.
        match settle(Instant::now() + STEP_DEADLINE, "queue", self.writer.close()).await {
            Some(Ok(())) => info!("queue closed"),
            Some(Err(error)) => warn!(%error, "queue did not close cleanly"),
            None => {}
        }
    }
}

/// Waits for `task` until `deadline`; a task that overruns it is abandoned, with a warning, so
/// that shutdown stays within [`super::SHUTDOWN_BUDGET`] whatever a peer does.
async fn settle<F: Future>(deadline: Instant, what: &str, task: F) -> Option<F::Output> {
    let output = tokio::time::timeout_at(deadline, task).await.ok();
    if output.is_none() {
        warn!("{what} did not stop in time");
    }
    output
}
