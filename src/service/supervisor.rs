//! The supervisor task (I/O): `READY=1`, then one probe per tick, `WATCHDOG=1` only after a
//! probe showed progress, `STOPPING=1` when shutdown begins.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::notifier::Notifier;
use super::status::{Health, Probe, Snapshot};
use super::watchdog::WatchdogPlan;
use crate::fleet::Pollers;
use crate::modbus::BusHandle;
use crate::queue::{rejected, Queue, QueueError, QueueProgress};
use crate::uplink::LinkState;

/// The parts of the running gateway the supervisor watches. Handles only: it never changes
/// what they do.
#[derive(Debug)]
pub struct Pipeline {
    /// For the probe through the writer thread.
    pub queue: Queue,
    /// The uplink's connection state, for the status line.
    pub link: watch::Receiver<LinkState>,
    /// Every device poller: how many run, out of how many the current buses started (a reload
    /// changes both).
    pub pollers: Pollers,
    /// The uplink task; finished before shutdown only if it panicked.
    pub uplink: AbortHandle,
    /// The current buses' devices and their health (a reload changes them).
    pub devices: watch::Receiver<Arc<[BusHandle]>>,
}

/// Runs until `cancel` fires. Does nothing when not started by systemd (no `NOTIFY_SOCKET`).
pub async fn supervise(pipeline: Pipeline, cancel: CancellationToken) {
    let notifier = Notifier::from_env();
    if !notifier.enabled() {
        return;
    }
    let plan = WatchdogPlan::new(sd_notify::watchdog_enabled());
    let mut supervisor = Supervisor {
        progress: pipeline.queue.progress(),
        pipeline,
        notifier,
        plan,
        stalled: false,
    };
    supervisor.run(cancel).await;
}

struct Supervisor {
    pipeline: Pipeline,
    /// Queue depth for the status line.
    progress: watch::Receiver<QueueProgress>,
    notifier: Notifier,
    plan: WatchdogPlan,
    /// Whether the last round found a stall; transitions are logged once.
    stalled: bool,
}

impl Supervisor {
    async fn run(&mut self, cancel: CancellationToken) {
        let depth = self.progress.borrow().depth;
        let started = format!("started; {depth} rows queued");
        self.notifier
            .send(&[NotifyState::Ready, NotifyState::Status(&started)]);
        info!(
            watchdog = ?self.plan.period,
            probe_every = ?self.plan.tick,
            "systemd notified: ready"
        );

        let mut ticks = tokio::time::interval(self.plan.tick);
        // After a slow probe the next one waits a full tick: probes never pile up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let probe = tokio::select! {
                () = cancel.cancelled() => break,
                probe = probe(&self.pipeline.queue, self.plan.probe_deadline) => probe,
            };
            self.report(probe);
        }
        self.notifier.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing in-flight work"),
        ]);
    }

    /// Feeds the watchdog if the round showed progress, and refreshes the status line.
    fn report(&mut self, probe: Probe) {
        let (devices_online, devices) = {
            let handles = self.pipeline.devices.borrow();
            let views = || handles.iter().flat_map(BusHandle::devices);
            let online = views()
                .filter(|view| {
                    let health = view.health.borrow();
                    health.answered && health.online
                })
                .count();
            (online, views().count())
        };
        let snapshot = Snapshot {
            probe,
            link: *self.pipeline.link.borrow(),
            depth: self.progress.borrow().depth,
            rejected: rejected::total(&self.pipeline.queue.rejected().held),
            pollers_running: self.pipeline.pollers.running(),
            pollers_started: self.pipeline.pollers.started(),
            devices_online,
            devices,
            uplink_running: !self.pipeline.uplink.is_finished(),
        };
        let line = snapshot.status_line();
        match snapshot.health() {
            Health::Progressing => {
                if self.stalled {
                    info!("pipeline makes progress again; feeding the systemd watchdog");
                    self.stalled = false;
                }
                if self.plan.pings() {
                    self.notifier
                        .send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                } else {
                    self.notifier.send(&[NotifyState::Status(&line)]);
                }
            }
            Health::Stalled(stall) => {
                if !self.stalled {
                    error!(reason = %stall, "pipeline stalled; the systemd watchdog is not fed");
                    self.stalled = true;
                }
                self.notifier.send(&[NotifyState::Status(&line)]);
            }
        }
    }
}

/// One round trip through the queue writer, bounded by `deadline`.
async fn probe(queue: &Queue, deadline: Duration) -> Probe {
    match tokio::time::timeout(deadline, queue.probe()).await {
        Ok(Ok(())) => Probe::Answered,
        Ok(Err(QueueError::Closed)) => Probe::Closed,
        Ok(Err(error)) => Probe::Failed(error.to_string()),
        Err(_) => Probe::TimedOut(deadline),
    }
}
