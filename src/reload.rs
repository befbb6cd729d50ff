//! Configuration reload on SIGHUP (`systemctl reload fieldrelay`): change the device map
//! without restarting the process and without touching the queue.
//!
//! # Contract
//! 1. The file is read again with the same loader as at start ([`crate::config::load`]). If it
//!    is invalid, every problem is logged at error level as `FILE:LINE:COLUMN: KEY.PATH: message`
//!    and the gateway keeps running on the configuration it had: nothing is half applied.
//! 2. Only `buses` and `devices` (with their points, `max_age` included: the queue takes the
//!    new ages for rows committed after the reload) are reloadable. If anything else differs
//!    from the running configuration — `gateway.id`, `gateway.data_dir`, the `uplink` section,
//!    the `metrics`, `commands`, `local`, `console` and `remote_config` sections (the console's password file is
//!    re-read when it changes, without a reload), and any section added later until it is
//!    taught otherwise — the reload is refused **as a whole** with a warning naming those keys
//!    ("needs a restart"), and nothing changes. Refusing the whole file rather than applying the
//!    reloadable part keeps one rule: what runs is exactly one version of the file. (Applying
//!    half would leave the process running a mix that no file on disk describes.)
//! 3. A valid, reloadable file replaces exactly the buses whose bus settings or devices
//!    changed ([`crate::fleet::Fleet::apply`]): the old owners are stopped (all cancelled, then
//!    each waited for, within [`STOP_DEADLINE`]) before the new ones start; unchanged buses keep
//!    running. The queue, its unsent rows and the uplink connection are untouched.
//! 4. systemd is told `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload` requires)
//!    when the reload starts and `READY=1` when it is over, whatever the outcome.
//!
//! Signals arriving during a reload are merged into one more reload afterwards (tokio's signal
//! stream coalesces them), which then reads the newest file.
//!
//! A configuration pushed from the cloud (`crate::remote_config`) is applied through the same
//! path: it writes the file and sends a [`ReloadRequest`], which is served exactly as a SIGHUP
//! and answered with the [`Outcome`]. After every reload that leaves a valid file running, the
//! running configuration's [`ConfigStamp`] (hash and push id) is read again for the birth.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{
    self, CommandsConfig, Config, ConsoleConfig, LocalConfig, StatusConfig, StoreConfig,
    UplinkConfig, UplinkProfile,
};
use crate::fleet::{units, BusChanges, Fleet};
use crate::queue::{self, Queue};
use crate::sample::now_ms;
use crate::sample::SampleSink;
use crate::service::notifier::Notifier;
use crate::status::stamp::ConfigStamp;

/// A reload asked for by another part of the gateway (a pushed configuration): served like a
/// SIGHUP; the outcome goes back on the sender.
pub type ReloadRequest = oneshot::Sender<Outcome>;

/// How long the replaced bus owners get to stop. An owner returns at its next wait point, so
/// this only matters for one stuck in a system call (a serial port that does not close).
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new buses and devices run.
    Applied,
    /// The file describes what already runs.
    Unchanged,
    /// The file is invalid; the previous configuration keeps running.
    Invalid,
    /// A key that only a restart applies changed; the previous configuration keeps running.
    NeedsRestart,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::Invalid,
        Outcome::NeedsRestart,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Invalid => "invalid",
            Outcome::NeedsRestart => "needs_restart",
        }
    }

    fn successful(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Unchanged)
    }
}

/// What a new file asks for compared with the running configuration (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Unchanged,
    /// Only buses and devices differ: these bus units change (possibly none), and the points'
    /// `max_age`s go to the queue if they changed.
    Apply {
        buses: BusChanges,
        max_age_changed: bool,
    },
    /// These keys differ and need a restart.
    NeedsRestart(Vec<String>),
}

/// Decides what reloading from `running` to `new` means.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let mut keys = Vec::new();
    let StatusConfig {
        offline,
        health_interval,
        health_heartbeat,
    } = &new.status;
    let CommandsConfig {
        max_age,
        without_ts,
    } = &new.commands;
    push_changed(
        &mut keys,
        "",
        [
            ("gateway.id", running.gateway.id != new.gateway.id),
            (
                "gateway.data_dir",
                running.gateway.data_dir != new.gateway.data_dir,
            ),
        ],
    );
    uplink_changes(&running.uplink, &new.uplink, &mut keys);
    // A Sparkplug edge node declares its devices and their aliases in its births, which only a
    // new session re-sends: a changed device map waits for a restart.
    if matches!(running.uplink.profile, UplinkProfile::Sparkplug(_))
        && running.devices != new.devices
    {
        keys.push("devices (with uplink.profile: sparkplug)".to_owned());
    }
    push_changed(
        &mut keys,
        "",
        [
            ("metrics.listen", running.metrics != new.metrics),
            ("uplink.status.offline", *offline != running.status.offline),
            (
                "uplink.health_interval",
                *health_interval != running.status.health_interval,
            ),
            (
                "uplink.health_heartbeat",
                *health_heartbeat != running.status.health_heartbeat,
            ),
            ("commands.max_age", *max_age != running.commands.max_age),
            (
                "commands.without_ts",
                *without_ts != running.commands.without_ts,
            ),
            // The config topics are subscribed at connect; the limits are read by that path.
            ("remote_config", new.remote_config != running.remote_config),
        ],
    );
    local_changes(running.local.as_ref(), new.local.as_ref(), &mut keys);
    console_changes(running.console.as_ref(), new.console.as_ref(), &mut keys);
    // The points' `max_age`s are resolved into `store` but written on the points: they follow
    // the devices. The rest of `store` (the file's size, `on_full`, `sync`) needs a restart.
    let new_ages = StoreConfig {
        max_age: new.store.max_age.clone(),
        ..running.store.clone()
    };
    if new_ages != new.store {
        keys.push("store".to_owned());
    }
    // Everything but the reloadable parts, compared whole: a section added to `Config` later
    // needs a restart until this function learns to reload it.
    let same_rest = Config {
        buses: new.buses.clone(),
        devices: new.devices.clone(),
        store: new_ages,
        ..running.clone()
    } == *new;
    if keys.is_empty() && !same_rest {
        keys.push("a section other than buses and devices".to_owned());
    }
    if !keys.is_empty() {
        return Plan::NeedsRestart(keys);
    }
    let changes = BusChanges::between(&units(running), &units(new));
    let max_age_changed = running.store.max_age != new.store.max_age;
    if changes.is_empty() && !max_age_changed {
        Plan::Unchanged
    } else {
        Plan::Apply {
            buses: changes,
            max_age_changed,
        }
    }
}

/// The `uplink.*` keys whose values differ. The struct is taken apart whole, so a key added to
/// it cannot be forgotten here.
fn uplink_changes(old: &UplinkConfig, new: &UplinkConfig, keys: &mut Vec<String>) {
    let UplinkConfig {
        host,
        port,
        client_id,
        keep_alive,
        topic_prefix,
        reconnect_initial,
        reconnect_max,
        tls,
        username,
        password_file,
        session,
        response_timeout,
        max_inflight,
        max_rate,
        broker,
        profile,
        drain,
        batch,
        protocol,
    } = new;
    let changed = [
        ("url", *host != old.host || *port != old.port),
        ("client_id", *client_id != old.client_id),
        ("keep_alive", *keep_alive != old.keep_alive),
        ("topic_prefix", *topic_prefix != old.topic_prefix),
        (
            "reconnect_initial",
            *reconnect_initial != old.reconnect_initial,
        ),
        ("reconnect_max", *reconnect_max != old.reconnect_max),
        ("tls", *tls != old.tls),
        ("username", *username != old.username),
        ("password_file", *password_file != old.password_file),
        ("session", *session != old.session),
        (
            "response_timeout",
            *response_timeout != old.response_timeout,
        ),
        ("max_inflight", *max_inflight != old.max_inflight),
        ("max_rate", *max_rate != old.max_rate),
        ("broker", *broker != old.broker),
        ("profile", *profile != old.profile),
        ("drain", *drain != old.drain),
        ("batch", *batch != old.batch),
        ("protocol", *protocol != old.protocol),
    ];
    push_changed(keys, "uplink.", changed);
}

/// `prefix` + each key whose flag is set, in order.
fn push_changed<const N: usize>(keys: &mut Vec<String>, prefix: &str, changed: [(&str, bool); N]) {
    keys.extend(
        changed
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| format!("{prefix}{key}")),
    );
}

/// An optional section on both sides; `None` when it is on neither, or (with `name` pushed)
/// when it came or went.
fn both_sides<'c, T>(
    name: &str,
    old: Option<&'c T>,
    new: Option<&'c T>,
    keys: &mut Vec<String>,
) -> Option<(&'c T, &'c T)> {
    match (old, new) {
        (Some(old), Some(new)) => Some((old, new)),
        (None, None) => None,
        _ => {
            keys.push(name.to_owned());
            None
        }
    }
}

/// The `local.*` keys whose values differ; `local` itself when the section came or went.
fn local_changes(old: Option<&LocalConfig>, new: Option<&LocalConfig>, keys: &mut Vec<String>) {
    let Some((old, new)) = both_sides("local", old, new, keys) else {
        return;
    };
    let LocalConfig {
        host,
        port,
        client_id,
        keep_alive,
        topic_prefix,
        username,
        password_file,
    } = new;
    let changed = [
        ("url", *host != old.host || *port != old.port),
        ("client_id", *client_id != old.client_id),
        ("keep_alive", *keep_alive != old.keep_alive),
        ("topic_prefix", *topic_prefix != old.topic_prefix),
        ("username", *username != old.username),
        ("password_file", *password_file != old.password_file),
    ];
    push_changed(keys, "local.", changed);
}

/// The `console.*` keys whose values differ; `console` itself when the section came or went.
/// The password file's contents are re-read by the console itself; its path needs a restart.
fn console_changes(
    old: Option<&ConsoleConfig>,
    new: Option<&ConsoleConfig>,
    keys: &mut Vec<String>,
) {
    let Some((old, new)) = both_sides("console", old, new, keys) else {
        return;
    };
    let ConsoleConfig { listen, auth } = new;
    let changed = [
        ("listen", *listen != old.listen),
        ("auth", *auth != old.auth),
    ];
    push_changed(keys, "console.", changed);
}

/// Reload results for the metrics endpoint.
#[derive(Debug)]
pub struct ReloadStats {
    /// Per [`Outcome::ALL`] entry.
    counts: [AtomicU64; 4],
    last_successful: AtomicBool,
    /// When the running configuration was loaded (ms since the epoch).
    loaded_ms: AtomicI64,
}

/// A copy of [`ReloadStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSnapshot {
    pub counts: [u64; 4],
    pub last_successful: bool,
    pub loaded_ms: i64,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            counts: Default::default(),
            last_successful: AtomicBool::new(true),
            loaded_ms: AtomicI64::new(now_ms()),
        }
    }
}

impl ReloadStats {
    pub fn record(&self, outcome: Outcome) {
        if let Some(index) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.counts[index].fetch_add(1, Ordering::Relaxed);
        }
        self.last_successful
            .store(outcome.successful(), Ordering::Relaxed);
        if outcome == Outcome::Applied {
            self.loaded_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> ReloadSnapshot {
        ReloadSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            last_successful: self.last_successful.load(Ordering::Relaxed),
            loaded_ms: self.loaded_ms.load(Ordering::Relaxed),
        }
    }
}

/// SIGHUP, installed early: until it is, SIGHUP's default action would end the process.
pub struct Hangups(Signal);

impl Hangups {
    pub fn install() -> std::io::Result<Hangups> {
        signal(SignalKind::hangup()).map(Hangups)
    }
}

/// The reload task: serves SIGHUP until `cancel` fires.
pub struct Reloader<S> {
    pub path: PathBuf,
    /// The configuration that runs now.
    pub running: Config,
    pub fleet: Fleet<S>,
    /// For the points' `max_age`s, the one part of the queue a reload changes.
    pub queue: Queue,
    pub stats: Arc<ReloadStats>,
    /// Reloads asked for by a pushed configuration.
    pub requests: mpsc::Receiver<ReloadRequest>,
    /// The running configuration's stamp, read again after every successful reload.
    pub stamp: Arc<watch::Sender<Option<ConfigStamp>>>,
}

impl<S: SampleSink + Clone> Reloader<S> {
    pub async fn run(mut self, mut hangups: Hangups, cancel: CancellationToken) {
        let mut notifier = Notifier::from_env();
        let mut requests_open = true;
        loop {
            let reply = tokio::select! {
                () = cancel.cancelled() => return,
                received = hangups.0.recv() => match received {
                    Some(()) => None,
                    None => return,
                },
                request = self.requests.recv(), if requests_open => match request {
                    Some(reply) => Some(reply),
                    None => {
                        requests_open = false;
                        continue;
                    }
                },
            };
            let mut reloading = vec![NotifyState::Reloading];
            reloading.extend(NotifyState::monotonic_usec_now().ok());
            notifier.send(&reloading);
            let outcome = self.reload(&cancel).await;
            self.stats.record(outcome);
            if outcome.successful() {
                self.stamp.send_replace(ConfigStamp::read(&self.path));
            }
            if let Some(reply) = reply {
                // The asker may have gone (shutdown): nothing to tell then.
                let _ = reply.send(outcome);
            }
            let status = match outcome {
                Outcome::Applied => "configuration reloaded",
                Outcome::Unchanged => "reload: configuration unchanged",
                Outcome::Invalid => "reload refused: invalid file (see the journal)",
                Outcome::NeedsRestart => "reload refused: changes need a restart",
            };
            notifier.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// One reload (see the module's contract).
    pub async fn reload(&mut self, cancel: &CancellationToken) -> Outcome {
        let path = self.path.clone();
        info!(file = %path.display(), "reloading the configuration");
        let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
        let new = match loaded {
            Ok(Ok(new)) => new,
            Ok(Err(errors)) => {
                for problem in &errors.errors {
                    error!("{problem}");
                }
                error!(
                    problems = errors.errors.len(),
                    "reload refused: the configuration file is invalid; still running on the previous configuration"
                );
                return Outcome::Invalid;
            }
            Err(join_error) => {
                error!(error = %join_error, "reload refused: the configuration could not be read; still running on the previous configuration");
                return Outcome::Invalid;
            }
        };
        match plan(&self.running, &new) {
            Plan::Unchanged => {
                info!("reload: buses and devices are unchanged");
                Outcome::Unchanged
            }
            Plan::NeedsRestart(keys) => {
                warn!(
                    changed = %keys.join(", "),
                    "reload refused: these changes need a restart (systemctl restart fieldrelay); still running on the previous configuration"
                );
                Outcome::NeedsRestart
            }
            Plan::Apply {
                buses: changes,
                max_age_changed,
            } => {
                if max_age_changed {
                    // Before the new buses start, so their first samples get the new ages.
                    if let Err(error) = self.queue.set_max_age(queue::max_ages(&new.store)).await {
                        warn!(%error, "reload: the queue did not take the new max_age values");
                    }
                }
                if !changes.is_empty() {
                    self.fleet.apply(&new, &changes, STOP_DEADLINE).await;
                }
                if cancel.is_cancelled() {
                    // Shutting down: the stopped buses were not restarted; nothing to report.
                    return Outcome::Applied;
                }
                info!(
                    stopped = changes.stop.len(),
                    started = changes.start.len(),
                    kept = changes.kept.len(),
                    devices = new.devices.len(),
                    "configuration reloaded"
                );
                self.running = new;
                Outcome::Applied
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    use crate::config::testing::MINIMAL as BASE;

    fn config(text: &str) -> Config {
        load_str(text, "c.yaml").unwrap_or_else(|errors| panic!("{errors}"))
    }

    #[test]
    fn the_same_file_is_unchanged() {
        assert_eq!(plan(&config(BASE), &config(BASE)), Plan::Unchanged);
        // Formatting and comments do not matter, only the resolved values.
        let reformatted = format!(
            "# comment\n{}",
            BASE.replace("{url: 'mqtt://b'}", "{url: 'mqtt://b:1883'}")
        );
        assert_eq!(plan(&config(BASE), &config(&reformatted)), Plan::Unchanged);
    }

    #[test]
    fn device_and_bus_changes_are_applied() {
        let more = BASE.replace(
            "type: bool}]",
            "type: bool}, {name: q, table: holding, address: 1, type: u16}]",
        );
        assert_eq!(
            plan(&config(BASE), &config(&more)),
            Plan::Apply {
                buses: BusChanges {
                    stop: vec!["plc1".into()],
                    start: vec!["plc1".into()],
                    kept: vec![],
                },
                max_age_changed: false,
            }
        );
        let timeout = BASE.replace("host: h}", "host: h, timeout: 2s}");
        assert!(matches!(
            plan(&config(BASE), &config(&timeout)),
            Plan::Apply { .. }
        ));
    }

    #[test]
    fn a_points_max_age_is_reloaded_but_the_rest_of_the_store_needs_a_restart() {
        let aged = BASE.replace("type: bool}", "type: bool, qos: 1, max_age: 1h}");
        let Plan::Apply {
            max_age_changed, ..
        } = plan(&config(BASE), &config(&aged))
        else {
            panic!("a new max_age is applied");
        };
        assert!(max_age_changed);
        // A point added with a max_age: both at once.
        let added = BASE.replace(
            "type: bool}]",
            "type: bool}, {name: q, table: holding, address: 1, type: u16, max_age: 2m}]",
        );
        assert!(matches!(
            plan(&config(BASE), &config(&added)),
            Plan::Apply {
                max_age_changed: true,
                ..
            }
        ));
        let resized = format!("{BASE}store: {{max_size: 64MiB}}\n");
        assert_eq!(
            plan(&config(BASE), &config(&resized)),
            Plan::NeedsRestart(vec!["store".into()])
        );
    }

    #[test]
    fn gateway_uplink_and_metrics_changes_need_a_restart() {
        let changed = BASE
            .replace("id: gw", "id: gw2")
            .replace("data_dir: /d", "data_dir: /e")
            .replace("mqtt://b", "mqtt://c")
            + "metrics: {listen: 127.0.0.1:9898}\n";
        assert_eq!(
            plan(&config(BASE), &config(&changed)),
            Plan::NeedsRestart(vec![
                "gateway.id".into(),
                "gateway.data_dir".into(),
                "uplink.url".into(),
                // Both follow gateway.id when not set.
                "uplink.client_id".into(),
                "uplink.topic_prefix".into(),
                "metrics.listen".into(),
            ])
        );
        // Together with a device change: still refused as a whole.
        let both = BASE
            .replace("mqtt://b", "mqtt://c")
            .replace("address: 0", "address: 5");
        assert_eq!(
            plan(&config(BASE), &config(&both)),
            Plan::NeedsRestart(vec!["uplink.url".into()])
        );
        // Each key by name, in every section that needs a restart.
        let keys = BASE.replace("mqtt://b'", "mqtt://b', keep_alive: 7s, max_rate: 5")
            + "commands: {max_age: 5s}\nlocal: {url: 'mqtt://l'}\n";
        assert_eq!(
            plan(&config(BASE), &config(&keys)),
            Plan::NeedsRestart(vec![
                "uplink.keep_alive".into(),
                "uplink.max_rate".into(),
                "commands.max_age".into(),
                "local".into(),
            ])
        );
    }

    #[test]
    fn remote_config_changes_need_a_restart() {
        let allowed = format!("{BASE}remote_config: {{allow: true}}\n");
        assert_eq!(
            plan(&config(BASE), &config(&allowed)),
            Plan::NeedsRestart(vec!["remote_config".into()])
        );
    }

    #[test]
    fn a_sparkplug_edge_node_needs_a_restart_for_a_new_device_map() {
        let sparkplug = BASE.replace(
            "mqtt://b'",
            "mqtt://b', profile: sparkplug, sparkplug: {group_id: g}",
        );
        let moved = sparkplug.replace("address: 0", "address: 5");
        assert_eq!(
            plan(&config(&sparkplug), &config(&moved)),
            Plan::NeedsRestart(vec!["devices (with uplink.profile: sparkplug)".into()])
        );
        assert_eq!(
            plan(&config(&sparkplug), &config(&sparkplug)),
            Plan::Unchanged
        );
    }

    #[test]
    fn console_changes_need_a_restart() {
        let console = |listen: &str| format!("{BASE}console: {{listen: '{listen}'}}\n");
        assert_eq!(
            plan(&config(BASE), &config(&console("127.0.0.1:8080"))),
            Plan::NeedsRestart(vec!["console".into()])
        );
        assert_eq!(
            plan(
                &config(&console("127.0.0.1:8080")),
                &config(&console("127.0.0.1:8081"))
            ),
            Plan::NeedsRestart(vec!["console.listen".into()])
        );
    }

    #[test]
    fn stats_count_outcomes_and_remember_the_last() {
        let stats = ReloadStats::default();
        assert!(stats.snapshot().last_successful);
        stats.record(Outcome::Invalid);
        assert!(!stats.snapshot().last_successful);
        stats.record(Outcome::Applied);
        stats.record(Outcome::Applied);
        let snapshot = stats.snapshot();
        assert!(snapshot.last_successful);
        assert_eq!(snapshot.counts, [2, 0, 1, 0]);
    }
}
