//! Start-up: every task of the running gateway, started in dependency order, and what shutdown
//! needs of them ([`Running`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{AppError, GatewaySink};
use crate::commands::{CommandPath, CommandStats, Origin};
use crate::config::{Config, LocalConfig, UplinkProfile};
use crate::console::{self, LatestValues};
use crate::fleet::{Fleet, Pollers};
use crate::local::{self, feed::FeedReceiver, LocalFeed};
use crate::metrics::{
    self, CommandCollector, DeviceCollector, Metrics, PushCollector, QueueCollector,
    ReloadCollector, UplinkCollector,
};
use crate::queue::{LiveReceiver, Queue, QueueOptions, QueueWriter};
use crate::reload::{Hangups, ReloadStats, Reloader};
use crate::remote_config::{self, ConfigTask, PushStats};
use crate::sample::now_ms;
use crate::status::gateway::GatewayInfo;
use crate::status::monitor::{self, Monitor, StatusSink};
use crate::status::stamp::ConfigStamp;
use crate::uplink::inbound::INTAKE_BACKLOG;
use crate::uplink::sparkplug::SparkplugUplink;
use crate::uplink::{self, Dialer, Inbound, LinkState, Presence, Uplink, UplinkStats};
use crate::{http, modbus, service};

/// The tasks of the running gateway, in the order shutdown stops them ([`super::shutdown`]).
pub(super) struct Running {
    pub supervisor: JoinHandle<()>,
    pub reloader: JoinHandle<()>,
    /// The configuration task (with `remote_config.allow`).
    pub remote: Option<JoinHandle<()>>,
    pub pollers: Pollers,
    /// The HTTP server of `/metrics` and the console (with either configured).
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
    /// Statuses and results for the client (the status monitor's sink).
    pub feed: LocalFeed,
}

/// The on-site broker's parts made before the tasks start: the bus owners' sink needs the feed.
struct LocalParts {
    settings: LocalConfig,
    dialer: Dialer,
    feed: LocalFeed,
    receiver: FeedReceiver,
}

/// The bus owners' sink: the gateway's, with the console's value table beside it.
type Sink = console::Tapped<GatewaySink>;

/// What the tasks started after the bus owners share; and the command paths' counters, as
/// the paths are started.
struct Shared<'a> {
    config: &'a Config,
    queue: &'a Queue,
    handles: &'a watch::Receiver<Arc<[modbus::BusHandle]>>,
    started_ms: i64,
    /// The uplink's counters and link state, read by the monitor, `/metrics` and the console.
    uplink: Arc<UplinkStats>,
    link: watch::Receiver<LinkState>,
    commands: Vec<Arc<CommandStats>>,
    /// Pushed configurations' answers (zero unless `remote_config.allow`).
    pushes: Arc<PushStats>,
}

/// Starts every task; each selects on `cancel`. SIGHUP reloads the buses and devices from
/// `config_path`.
pub(super) fn start(
    config: Config,
    config_path: PathBuf,
    restart: Arc<AtomicBool>,
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
    let values = config.console.as_ref().map(|_| {
        console::log::enable();
        Arc::new(LatestValues::default())
    });
    let sink = console::Tapped {
        inner: GatewaySink::new(&queue, local.as_ref().map(|parts| &parts.feed)),
        values: values.clone(),
    };
    // One owner task per bus; validation guarantees every device names a known bus. The handles
    // (`fleet.handles()`: writes, probes, device health) are for the command and status parts.
    let fleet = Fleet::start(&config, sink, cancel.clone());
    let handles = fleet.handles();
    // Which configuration runs (birth, health report), kept current by reloads and pushes.
    let stamp = Arc::new(watch::Sender::new(ConfigStamp::read(&config_path)));
    let mut info = monitor::gateway_info(started_ms, &handles.borrow());
    info.config = stamp.borrow().clone();
    let (gateway_tx, gateway_rx) = watch::channel(Arc::new(info));
    // One report at a time: a report the uplink did not take (link down) is stale by the next.
    let (health_tx, health_rx) = mpsc::channel(1);
    let (link_state, link) = watch::channel(LinkState::default());
    let mut shared = Shared {
        config: &config,
        queue: &queue,
        handles: &handles,
        started_ms,
        uplink: Arc::new(UplinkStats::default()),
        link,
        commands: Vec::new(),
        pushes: Arc::default(),
    };
    // Cloud commands: subscribed by the uplink, committed to the command inbox (then
    // acknowledged) by the intake, carried out by the handler.
    let (cloud_inbound, cloud_commands) =
        shared.spawn_commands(Origin::Cloud, &config.uplink.topic_prefix, cancel);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    // With `remote_config.allow`, the configuration topics share the cloud's connection. A
    // trial left by the push that turned them off is still seen through.
    let files = remote_config::Files::new(&config_path);
    let allow = config.remote_config.allow;
    let (cloud_inbound, remote) = if allow || files.pending_path().exists() {
        let (tx, rx) = mpsc::channel(INTAKE_BACKLOG);
        let (set_topic, get_topic) = remote_config::topics(&config.uplink.topic_prefix);
        let configs = Inbound {
            filters: vec![set_topic.clone(), get_topic.clone()],
            tx,
            // A whole file, and the topic and headers around it.
            max_packet: usize::try_from(config.remote_config.max_size)
                .unwrap_or(usize::MAX)
                .saturating_add(uplink::inbound::MAX_INCOMING_PACKET),
        };
        let task = ConfigTask {
            files,
            settings: config.remote_config,
            set_topic,
            get_topic,
            broker: format!("{}:{}", config.uplink.host, config.uplink.port),
            queue: queue.clone(),
            link: shared.link.clone(),
            handles: handles.clone(),
            reload: reload_tx,
            stamp: stamp.clone(),
            restart,
            stop: cancel.clone(),
            stats: shared.pushes.clone(),
        };
        let remote = tokio::spawn(task.run(rx, cancel.clone()));
        if allow {
            let (routed, _router) = uplink::inbound::route(vec![cloud_inbound, configs]);
            (routed, Some(remote))
        } else {
            drop(configs);
            (cloud_inbound, Some(remote))
        }
    } else {
        drop((reload_tx, restart));
        (cloud_inbound, None)
    };
    let presence = Presence {
        gateway: gateway_rx,
        offline: config.status.offline,
        health: health_rx,
    };
    let uplink = shared.spawn_uplink(dialer, live, cloud_inbound, presence, link_state, cancel);
    let local = local.map(|parts| parts.spawn(&mut shared, gateway_tx.subscribe(), cancel));
    let local_feed = local.as_ref().map(|tasks| tasks.feed.clone());
    let monitor =
        shared.spawn_monitor(gateway_tx, health_tx, local_feed, stamp.subscribe(), cancel);
    let reloads = Arc::new(ReloadStats::default());
    let link = shared.link.clone();
    let web = shared.serve_web(&fleet, &reloads, values, cancel);
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
            requests: reload_rx,
            stamp,
        }
        .run(hangups, cancel.clone()),
    );
    Ok(Running {
        supervisor,
        reloader,
        remote,
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

impl Shared<'_> {
    /// Starts the intake and handler of commands from one broker; returns what its connection
    /// hands PUBLISHes to and the task.
    fn spawn_commands(
        &mut self,
        origin: Origin,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> (Inbound, JoinHandle<()>) {
        let stats = Arc::new(CommandStats::new(origin.name()));
        self.commands.push(stats.clone());
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

    /// Starts the uplink; `state`: the sender of [`Shared::link`].
    fn spawn_uplink(
        &self,
        dialer: Dialer,
        live: LiveReceiver,
        inbound: Inbound,
        presence: Presence,
        state: watch::Sender<LinkState>,
        cancel: &CancellationToken,
    ) -> JoinHandle<()> {
        if let UplinkProfile::Sparkplug(sparkplug) = &self.config.uplink.profile {
            // Sparkplug has no status topic: the presence stays unused (its senders see a
            // closed receiver). DCMD writes go through the cloud command path.
            drop(presence);
            let uplink = SparkplugUplink {
                config: self.config.uplink.clone(),
                sparkplug: sparkplug.clone(),
                devices: self.config.devices.clone(),
                dialer,
                queue: self.queue.clone(),
                live,
                state,
                stats: self.uplink.clone(),
                commands: Some(inbound),
                health_interval: self.config.status.health_interval,
            };
            return tokio::spawn(uplink.run(cancel.clone()));
        }
        let uplink = Uplink {
            config: self.config.uplink.clone(),
            dialer,
            queue: self.queue.clone(),
            live,
            inbound: Some(inbound),
            presence,
            state,
            stats: self.uplink.clone(),
        };
        tokio::spawn(uplink.run(cancel.clone()))
    }

    /// Starts the status monitor: device statuses through the queue (and to the on-site broker
    /// with `local:`), the birth's device map and the health report for the uplink.
    fn spawn_monitor(
        &self,
        gateway: watch::Sender<Arc<GatewayInfo>>,
        health: mpsc::Sender<Bytes>,
        local: Option<LocalFeed>,
        config: watch::Receiver<Option<ConfigStamp>>,
        cancel: &CancellationToken,
    ) -> JoinHandle<()> {
        let stats = self.uplink.clone();
        let monitor = Monitor {
            queue: self.queue.clone(),
            handles: self.handles.clone(),
            gateway,
            health,
            health_interval: self.config.status.health_interval,
            health_heartbeat: self.config.status.health_heartbeat,
            connections: Box::new(move || stats.snapshot().connects),
            started_ms: self.started_ms,
            local: local.map(|feed| Box::new(feed) as Box<dyn StatusSink>),
            config,
        };
        tokio::spawn(monitor.run(cancel.clone()))
    }

    /// Starts the HTTP server of `/metrics` and the console (`values`: the console's table,
    /// filled by the sink): one server per distinct address; `None` with neither configured.
    fn serve_web(
        self,
        fleet: &Fleet<Sink>,
        reloads: &Arc<ReloadStats>,
        values: Option<Arc<LatestValues>>,
        cancel: &CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let config = self.config;
        let mut sites: Vec<(SocketAddr, Arc<dyn http::Route>)> = Vec::new();
        if let Some(settings) = &config.metrics {
            let mut metrics = Metrics::new();
            metrics.add(QueueCollector::new(self.queue.clone()));
            metrics.add(UplinkCollector::new(self.uplink.clone(), self.link.clone()));
            metrics.add(DeviceCollector::new(fleet.handles()));
            metrics.add(ReloadCollector::new(reloads.clone()));
            metrics.add(CommandCollector::new(self.commands));
            metrics.add(PushCollector::new(self.pushes));
            sites.push((settings.listen, Arc::new(metrics::Endpoint::new(metrics))));
        }
        if let (Some(settings), Some(values)) = (&config.console, values) {
            let parts = console::Parts {
                gateway_id: config.gateway.id.clone(),
                broker: format!("{}:{}", config.uplink.host, config.uplink.port),
                started_ms: self.started_ms,
                queue: self.queue.clone(),
                handles: fleet.handles(),
                link: self.link,
                uplink: self.uplink,
                data_dir: config.gateway.data_dir.clone(),
            };
            let route = console::start(settings, parts, values, cancel.clone());
            sites.push((settings.listen, route));
        }
        (!sites.is_empty()).then(|| tokio::spawn(http::serve_all(sites, cancel.clone())))
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
        shared: &mut Shared<'_>,
        gateway: watch::Receiver<Arc<GatewayInfo>>,
        cancel: &CancellationToken,
    ) -> LocalTasks {
        let origin = Origin::Local(Arc::new(self.feed.clone()));
        let (inbound, handler) = shared.spawn_commands(origin, &self.settings.topic_prefix, cancel);
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
        LocalTasks {
            handler,
            client,
            feed: self.feed,
        }
    }
}
