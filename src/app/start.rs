//! Start-up: every task of the running gateway, started in dependency order, and what shutdown
//! needs of them ([`Running`]).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{AppError, GatewaySink};
use crate::commands::{CommandPath, CommandStats, Origin};
use crate::config::{Config, LocalConfig};
use crate::fleet::{Fleet, Pollers};
use crate::local::{self, feed::FeedReceiver, LocalFeed};
use crate::metrics::{
    self, CommandCollector, DeviceCollector, Metrics, QueueCollector, ReloadCollector,
    UplinkCollector,
};
use crate::queue::{LiveReceiver, Queue, QueueOptions, QueueWriter};
use crate::reload::{Hangups, ReloadStats, Reloader};
use crate::sample::now_ms;
use crate::status::gateway::GatewayInfo;
use crate::status::monitor::{self, Monitor, StatusSink};
use crate::uplink::{self, Dialer, Inbound, LinkState, Presence, Uplink, UplinkStats};
use crate::{console, http, modbus, service};

/// The tasks of the running gateway, in the order shutdown stops them ([`super::shutdown`]).
pub(super) struct Running {
    pub supervisor: JoinHandle<()>,
    pub reloader: JoinHandle<()>,
    pub pollers: Pollers,
    /// The HTTP server of `/metrics` and the console.
    pub web: Option<JoinHandle<()>>,
    pub monitor: JoinHandle<()>,
    pub cloud_commands: JoinHandle<()>,
    pub local: Option<LocalTasks>,
    pub uplink: JoinHandle<()>,
    pub writer: QueueWriter,
}

/// The on-site broker's tasks (with `local:`).
pub(super) struct LocalTasks {
    pub handler: JoinHandle<()>,
    pub client: JoinHandle<()>,
}

/// The on-site broker's parts made before the tasks start: the bus owners' sink needs the feed.
struct LocalParts {
    settings: LocalConfig,
    dialer: Dialer,
    feed: LocalFeed,
    receiver: FeedReceiver,
}

/// What every command path shares.
struct CommandParts<'a> {
    config: &'a Config,
    queue: &'a Queue,
    handles: &'a watch::Receiver<Arc<[modbus::BusHandle]>>,
    stats: Vec<Arc<CommandStats>>,
}

/// Starts every task; each selects on `cancel`. SIGHUP reloads the buses and devices from
/// `config_path`.
pub(super) fn start(
    config: Config,
    config_path: PathBuf,
    cancel: &CancellationToken,
) -> Result<Running, AppError> {
    // First: until SIGHUP is handled, its default action would end the process.
    let hangups = Hangups::install().map_err(AppError::Signal)?;
    let dialer = uplink::dialer(&config.uplink)?;
    let (queue, live, writer) = open_queue(&config)?;
    let started_ms = now_ms();
    // With `local:`, every sample is also offered (never awaited) to the on-site broker client.
    let local = config.local.as_ref().map(LocalParts::new).transpose()?;
    // With `console:`, each sample's value is also kept for the console's pages.
    let console_values = config.console.as_ref().map(|_| {
        console::log::enable();
        Arc::new(console::LatestValues::default())
    });
    let sink = console::Tapped {
        inner: GatewaySink {
            queue: queue.clone(),
            local: local.as_ref().map(|parts| parts.feed.clone()),
        },
        values: console_values.clone(),
    };
    // One owner task per bus; validation guarantees every device names a known bus. The handles
    // (`fleet.handles()`: writes, probes, device health) are for the command and status parts.
    let fleet = Fleet::start(&config, sink, cancel.clone());
    let handles = fleet.handles();
    let info = monitor::gateway_info(started_ms, &handles.borrow());
    let (gateway_tx, gateway_rx) = watch::channel(Arc::new(info));
    // One report at a time: a report the uplink did not take (link down) is stale by the next.
    let (health_tx, health_rx) = mpsc::channel(1);
    let mut commands = CommandParts {
        config: &config,
        queue: &queue,
        handles: &handles,
        stats: Vec::new(),
    };
    // Cloud commands: subscribed by the uplink, committed to the command inbox (then
    // acknowledged) by the intake, carried out by the handler.
    let (cloud_inbound, cloud_commands) =
        commands.spawn(Origin::Cloud, &config.uplink.topic_prefix, cancel);
    let (link_state, link) = watch::channel(LinkState::default());
    let uplink_stats = Arc::new(UplinkStats::default());
    let uplink = tokio::spawn(
        Uplink {
            config: config.uplink.clone(),
            dialer,
            queue: queue.clone(),
            live,
            inbound: Some(cloud_inbound),
            presence: Presence {
                gateway: gateway_rx,
                offline: config.status.offline,
                health: health_rx,
            },
            state: link_state,
            stats: uplink_stats.clone(),
        }
        .run(cancel.clone()),
    );
    let (local, local_feed) = match local {
        Some(parts) => {
            let feed = parts.feed.clone();
            let tasks = parts.spawn(&mut commands, gateway_tx.subscribe(), cancel);
            (Some(tasks), Some(feed))
        }
        None => (None, None),
    };
    let command_stats = commands.stats;
    let monitor = tokio::spawn(
        Monitor {
            queue: queue.clone(),
            handles: handles.clone(),
            gateway: gateway_tx,
            health: health_tx,
            health_interval: config.status.health_interval,
            connections: {
                let stats = uplink_stats.clone();
                Box::new(move || stats.snapshot().connects)
            },
            started_ms,
            local: local_feed.map(|feed| Box::new(feed) as Box<dyn StatusSink>),
        }
        .run(cancel.clone()),
    );
    let reloads = Arc::new(ReloadStats::default());
    // `/metrics` and the console: one HTTP server per distinct address.
    let mut sites: Vec<(std::net::SocketAddr, Arc<dyn http::Route>)> = Vec::new();
    if let Some(settings) = &config.metrics {
        let mut metrics = Metrics::new();
        metrics.add(QueueCollector::new(queue.clone()));
        metrics.add(UplinkCollector::new(uplink_stats.clone(), link.clone()));
        metrics.add(DeviceCollector::new(fleet.handles()));
        metrics.add(ReloadCollector::new(reloads.clone()));
        metrics.add(CommandCollector::new(command_stats));
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
            data_dir: config.gateway.data_dir.clone(),
        };
        let route = console::start(settings, parts, values, cancel.clone());
        sites.push((settings.listen, route));
    }
    let web = (!sites.is_empty()).then(|| tokio::spawn(http::serve_all(sites, cancel.clone())));
    // Last: READY=1 means every task above runs.
    let pollers = fleet.pollers();
    let supervisor = tokio::spawn(service::supervise(
        service::Pipeline {
            queue: queue.clone(),
            link,
            pollers: pollers.clone(),
            uplink: uplink.abort_handle(),
            devices: handles,
        },
        cancel.clone(),
    ));
    info!(
        devices = config.devices.len(),
        gateway = %config.gateway.id,
        "gateway running"
    );
    // The reload task keeps one queue handle: a reload may change the points' `max_age`s.
    let reloader = tokio::spawn(
        Reloader {
            path: config_path,
            running: config,
            fleet,
            queue,
            stats: reloads,
        }
        .run(hangups, cancel.clone()),
    );
    Ok(Running {
        supervisor,
        reloader,
        pollers,
        web,
        monitor,
        cloud_commands,
        local,
        uplink,
        writer,
    })
}

/// Opens (creating, migrating or quarantining as needed) the queue in `gateway.data_dir`.
fn open_queue(config: &Config) -> Result<(Queue, LiveReceiver, QueueWriter), AppError> {
    let data_dir = &config.gateway.data_dir;
    let opened =
        Queue::open(data_dir, QueueOptions::for_store(&config.store)).map_err(|source| {
            AppError::Queue {
                dir: data_dir.clone(),
                source,
            }
        })?;
    info!(dir = %data_dir.display(), depth = opened.0.progress().borrow().depth, "queue open");
    Ok(opened)
}

impl CommandParts<'_> {
    /// Starts the intake and handler of commands from one broker; returns what its connection
    /// hands PUBLISHes to and the task.
    fn spawn(
        &mut self,
        origin: Origin,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> (Inbound, JoinHandle<()>) {
        let stats = Arc::new(CommandStats::new(origin.name()));
        self.stats.push(stats.clone());
        CommandPath {
            origin,
            prefix: prefix.to_owned(),
            queue: self.queue.clone(),
            handles: self.handles.clone(),
            commands: self.config.commands,
            stats,
        }
        .spawn(cancel.clone())
    }
}

impl LocalParts {
    fn new(settings: &LocalConfig) -> Result<LocalParts, AppError> {
        let dialer = Dialer::new(
            &settings.host,
            settings.port,
            None,
            settings.username.clone(),
            settings.password_file.clone(),
        )?;
        let (feed, receiver) = LocalFeed::channel();
        Ok(LocalParts {
            settings: settings.clone(),
            dialer,
            feed,
            receiver,
        })
    }

    /// Starts the on-site broker's command path and client.
    fn spawn(
        self,
        commands: &mut CommandParts<'_>,
        gateway: watch::Receiver<Arc<GatewayInfo>>,
        cancel: &CancellationToken,
    ) -> LocalTasks {
        let origin = Origin::Local(Arc::new(self.feed));
        let (inbound, handler) = commands.spawn(origin, &self.settings.topic_prefix, cancel);
        let client = tokio::spawn(
            local::LocalClient {
                config: self.settings,
                dialer: self.dialer,
                feed: self.receiver,
                gateway,
                commands: inbound,
            }
            .run(cancel.clone()),
        );
        LocalTasks { handler, client }
    }
}
