//! Wiring and shutdown: opens the queue, starts one owner task per bus and the uplink, and stops
//! them in order when the shared [`CancellationToken`] fires (SIGTERM/SIGINT in `main.rs`).
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
//! [`Fleet`]) and, when configured, the HTTP server of the metrics endpoint ([`crate::metrics`])
//! and the console ([`crate::console`]); both stop on the token with the pollers. Then the
//! status monitor ([`crate::status`]), the command handlers ([`crate::commands`]: the cloud's,
//! and the on-site broker's with `local:`) and the local broker client ([`crate::local`]), which
//! stop before the uplink and the queue: they may be committing a device status or a command's
//! answer.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::{
    CommandCollector, DeviceCollector, Metrics, QueueCollector, ReloadCollector, UplinkCollector,
};
use crate::queue::{Queue, QueueError, QueueOptions};
use crate::reload::{Hangups, ReloadStats, Reloader};
use crate::sample::now_ms;
use crate::{commands, console, http, local, metrics, service, status, uplink};

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

/// The queue's options from the `store` section and the points' `max_age`.
pub fn queue_options(config: &Config) -> QueueOptions {
    QueueOptions {
        max_size: config.store.max_size,
        on_full: config.store.on_full,
        sync: config.store.sync,
        max_age: max_ages(config),
        ..QueueOptions::default()
    }
}

/// The points' `max_age`s as the queue takes them: at start, and again after a reload.
pub fn max_ages(config: &Config) -> HashMap<(String, String), Duration> {
    config
        .store
        .max_age
        .iter()
        .map(|(key, age)| (key.clone(), *age))
        .collect()
}

/// Runs the gateway until `cancel` fires, then shuts down in order. SIGHUP reloads the buses and
/// devices from `config_path`.
pub async fn run(
    config: Config,
    config_path: PathBuf,
    cancel: CancellationToken,
) -> Result<(), AppError> {
    // First: until SIGHUP is handled, its default action would end the process.
    let hangups = Hangups::install().map_err(AppError::Signal)?;
    let data_dir = config.gateway.data_dir.clone();
    let dialer = uplink::dialer(&config.uplink)?;
    let (queue, live, writer) =
        Queue::open(&data_dir, queue_options(&config)).map_err(|source| AppError::Queue {
            dir: data_dir.clone(),
            source,
        })?;
    info!(dir = %data_dir.display(), depth = queue.progress().borrow().depth, "queue open");

    // One owner task per bus; validation guarantees every device names a known bus. The handles
    // (`fleet.handles()`: writes, probes, device health) are for the command and status parts.
    let started_ms = now_ms();
    // With `local:`, every sample is also offered (never awaited) to the on-site broker client.
    let local = match &config.local {
        Some(settings) => {
            let dialer = uplink::Dialer::new(
                &settings.host,
                settings.port,
                None,
                settings.username.clone(),
                settings.password_file.clone(),
            )?;
            let (feed, receiver) = local::LocalFeed::channel();
            Some((settings.clone(), dialer, feed, receiver))
        }
        None => None,
    };
    // With `console:`, each sample's value is also kept for the console's pages.
    let console_values = config.console.as_ref().map(|_| {
        console::log::enable();
        Arc::new(console::LatestValues::default())
    });
    let sink = console::Tapped {
        inner: local::Tee {
            queue: queue.clone(),
            local: local.as_ref().map(|(_, _, feed, _)| feed.clone()),
        },
        values: console_values.clone(),
    };
    let fleet = Fleet::start(&config, sink, cancel.clone());
    let pollers = fleet.pollers();
    let handles = fleet.handles();
    let (gateway_tx, gateway_rx) = watch::channel(Arc::new(status::monitor::gateway_info(
        started_ms,
        &handles.borrow(),
    )));
    // One report at a time: a report the uplink did not take (link down) is stale by the next.
    let (health_tx, health_rx) = mpsc::channel(1);
    // Cloud commands: subscribed by the uplink, committed to the command inbox (then
    // acknowledged) by the intake, carried out by the handler.
    let cloud_stats = Arc::new(commands::CommandStats::new("cloud"));
    let (cloud_inbound, cloud_commands) = commands::CommandPath {
        origin: commands::Origin::Cloud,
        prefix: config.uplink.topic_prefix.clone(),
        queue: queue.clone(),
        handles: handles.clone(),
        commands: config.commands,
        stats: cloud_stats.clone(),
    }
    .spawn(cancel.clone());
    let mut command_stats = vec![cloud_stats];
    let (link_state, link) = watch::channel(uplink::LinkState::default());
    let uplink_stats = Arc::new(uplink::UplinkStats::default());
    let uplink = tokio::spawn(
        uplink::Uplink {
            config: config.uplink.clone(),
            dialer,
            queue: queue.clone(),
            live,
            inbound: Some(cloud_inbound),
            presence: uplink::Presence {
                gateway: gateway_rx,
                offline: config.status.offline,
                health: health_rx,
            },
            state: link_state,
            stats: uplink_stats.clone(),
        }
        .run(cancel.clone()),
    );
    let local_tasks = local.map(|(settings, dialer, feed, receiver)| {
        let stats = Arc::new(commands::CommandStats::new("local"));
        command_stats.push(stats.clone());
        let (inbound, handler) = commands::CommandPath {
            origin: commands::Origin::Local(Arc::new(feed.clone())),
            prefix: settings.topic_prefix.clone(),
            queue: queue.clone(),
            handles: handles.clone(),
            commands: config.commands,
            stats,
        }
        .spawn(cancel.clone());
        let client = tokio::spawn(
            local::LocalClient {
                config: settings,
                dialer,
                feed: receiver,
                gateway: gateway_tx.subscribe(),
                commands: inbound,
            }
            .run(cancel.clone()),
        );
        (feed, client, handler)
    });
    let monitor = tokio::spawn(
        status::monitor::Monitor {
            queue: queue.clone(),
            handles: handles.clone(),
            gateway: gateway_tx,
            health: health_tx,
            health_interval: config.status.health_interval,
            uplink: uplink_stats.clone(),
            started_ms,
            local: local_tasks
                .as_ref()
                .map(|(feed, _, _)| Box::new(feed.clone()) as Box<dyn status::monitor::StatusSink>),
        }
        .run(cancel.clone()),
    );
    let reloads = Arc::new(ReloadStats::default());
    // `/metrics` and the console: one HTTP server per distinct address.
    let mut sites: Vec<(std::net::SocketAddr, Arc<dyn http::Route>)> = Vec::new();
    if let Some(settings) = &config.metrics {
        let uplink = UplinkCollector::new(uplink_stats.clone(), link.clone());
        let mut metrics = gateway_metrics(&queue, &fleet, &reloads, uplink);
        metrics.add(CommandCollector::new(command_stats.clone()));
        sites.push((settings.listen, Arc::new(metrics::Endpoint::new(metrics))));
    }
    if let (Some(settings), Some(values)) = (&config.console, console_values) {
        let parts = console::Parts {
            gateway_id: config.gateway.id.clone(),
            broker: format!("{}:{}", config.uplink.host, config.uplink.port),
            started_ms,
            queue: queue.clone(),
            handles: handles.clone(),
            link: link.clone(),
            uplink: uplink_stats.clone(),
            data_dir: data_dir.clone(),
        };
        let route = console::start(settings, parts, values, cancel.clone());
        sites.push((settings.listen, route));
    }
    let web = (!sites.is_empty()).then(|| tokio::spawn(http::serve_all(sites, cancel.clone())));
    // Last: READY=1 means every task above runs.
    let supervisor = tokio::spawn(service::supervise(
        service::Pipeline {
            queue: queue.clone(),
            link,
            pollers: pollers.clone(),
            uplink: uplink.abort_handle(),
            devices: handles.clone(),
        },
        cancel.clone(),
    ));
    // The reload task keeps one handle: a reload may change the points' `max_age`s.
    let reload_queue = queue;
    info!(
        devices = config.devices.len(),
        gateway = %config.gateway.id,
        "gateway running"
    );
    let reloader = tokio::spawn(
        Reloader {
            path: config_path,
            running: config,
            fleet,
            queue: reload_queue,
            stats: reloads,
        }
        .run(hangups, cancel.clone()),
    );

    cancel.cancelled().await;
    info!("shutting down");
    // Stage 1: intake and what stands beside it. Every task below was cancelled by the same
    // token, so they stop together and share one deadline.
    let deadline = Instant::now() + STEP_DEADLINE;
    // Sends STOPPING=1 and returns; it holds a queue handle only until then.
    if let Some(Err(error)) = settle(deadline, "service supervisor", supervisor).await {
        warn!(%error, "service supervisor failed");
    }
    // A reload under way stops starting buses once cancelled.
    settle(deadline, "reload task", reloader).await;
    settle(deadline, "pollers", pollers.wait()).await;
    if let Some(web) = web {
        settle(deadline, "http server", web).await;
    }
    // Before the uplink and the queue: they may be committing a device status or an answer.
    settle(deadline, "status monitor", monitor).await;
    settle(deadline, "command handler", cloud_commands).await;
    let local_client = match local_tasks {
        Some((_, client, handler)) => {
            settle(deadline, "local command handler", handler).await;
            Some(client)
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
    let (uplink, ()) = tokio::join!(settle(deadline, "uplink", uplink), local_goodbye);
    match uplink {
        Some(Ok(())) | None => {}
        Some(Err(error)) => warn!(%error, "uplink task failed"),
    }
    // Stage 3: the queue closes last.
    match settle(Instant::now() + STEP_DEADLINE, "queue", writer.close()).await {
        Some(Ok(())) => info!("queue closed"),
        Some(Err(error)) => warn!(%error, "queue did not close cleanly"),
        None => {}
    }
    Ok(())
}

/// Waits for `task` until `deadline`; a task that overruns it is abandoned, with a warning, so
/// that shutdown stays within [`SHUTDOWN_BUDGET`] whatever a peer does.
async fn settle<F: Future>(deadline: Instant, what: &str, task: F) -> Option<F::Output> {
    let output = tokio::time::timeout_at(deadline, task).await.ok();
    if output.is_none() {
        warn!("{what} did not stop in time");
    }
    output
}

/// What `/metrics` shows of the running gateway: one collector per part. A part with metrics of
/// its own (the uplink's publishes and reconnects, ...) adds its collector here.
fn gateway_metrics(
    queue: &Queue,
    fleet: &Fleet<console::Tapped<local::Tee>>,
    reloads: &Arc<ReloadStats>,
    uplink: UplinkCollector,
) -> Metrics {
    let mut metrics = Metrics::new();
    metrics.add(QueueCollector::new(queue.clone()));
    metrics.add(uplink);
    metrics.add(DeviceCollector::new(fleet.handles()));
    metrics.add(ReloadCollector::new(reloads.clone()));
    metrics
}
