//! The `sparkplug` uplink profile: a Sparkplug B 3.0 edge node on the broker connection, with
//! the queue as its history store. The pure parts are [`crate::sparkplug`] and [`node`]; this
//! module does the I/O, as [`super::link`] does for the JSON profile (whose code it shares only
//! the connection parts with: [`super::connection`], [`super::transport`]).
//!
//! # A connection
//! 1. `bdSeq` = stored value + 1 (255 → 0), committed to `queue.db` **before** the CONNECT, so
//!    neither a restart nor a `kill -9` reuses one (`topics-nbirth-bdseq-increment`).
//! 2. CONNECT with a clean session (`principles-persistence-clean-session-311`) and the will
//!    NDEATH (`bdSeq` only), QoS 1, not retained (`topics-ndeath-payload`, `topics-ndeath-seq`).
//! 3. SUBSCRIBE NCMD, `DCMD/+` and, with a primary host, its STATE, at QoS 1; the births wait
//!    for the SUBACK (`message-flow-edge-node-ncmd-subscribe`).
//! 4. With a primary host: nothing is published until its STATE says online
//!    ([`crate::sparkplug::PrimaryHost`]); an offline STATE that is not stale ends the
//!    connection with an NDEATH (`message-flow-edge-node-birth-publish-phid-wait*`).
//! 5. NBIRTH, the DBIRTHs ([`node::Node::births`]); the queue's last `seq` at that moment is the
//!    **history boundary**: queued rows up to it go out as DDATA with `is_historical`, the rows
//!    after it as live DDATA, in the order `uplink.sparkplug.history` says.
//! 6. Graceful stop: NDEATH (QoS 1, its PUBACK awaited), then DISCONNECT.
//!
//! # The delete barrier
//! DATA is QoS 0: the broker acknowledges nothing. After each window of rows a PINGREQ is
//! written; its PINGRESP (MQTT connections are processed in order) proves the broker read every
//! PUBLISH before it, and only then are those rows deleted ([`crate::sparkplug::barrier`]).
//! Keep-alive PINGREQs are markers too. Rows not confirmed when the connection ends stay queued
//! and are sent again after the next births, as history with their own timestamps. At most
//! [`WINDOW`] rows wait for a PINGRESP; a PINGRESP missing for `response_timeout` ends the
//! connection (a half-open link).
//!
//! QoS 0 samples of the live channel (points with `qos: 0`) are never queued: they are sent as
//! live DDATA while births are out, and dropped otherwise, as the JSON profile does.
//!
//! # Commands
//! NCMD `Node Control/Rebirth = true`: NBIRTH (same `bdSeq`) and every DBIRTH again, without
//! reconnecting, coalesced by [`RebirthDebounce`]. Incoming PUBLISHes are acknowledged at once
//! (clean session: a redelivery would not come anyway). DCMD metrics are decoded and checked
//! against the alias table and the point's type; a refused one is logged and counted.

mod incoming;
pub(crate) mod node;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe, SubscribeFilter};
use rumqttc::mqttbytes::QoS;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connection::{self, ConnectOptions, PacketReader, PacketWriter, Received};
use super::inbound::Inbound;
use super::stats::UplinkStats;
use super::transport::Dialer;
use super::{LinkState, UplinkError};
use crate::backoff::{Backoff, FailureLog};
use crate::config::{DeviceConfig, SparkplugConfig, SparkplugHistory, UplinkConfig};
use crate::queue::{LiveReceiver, Queue, QueueError, QueueProgress, StoredRow};
use crate::sample::now_ms;
use crate::sparkplug::barrier::{Barrier, Marker};
use crate::sparkplug::command::RebirthDebounce;
use crate::sparkplug::history::{HistoryOrder, Source};
use crate::sparkplug::{BdSeq, MessageType, PrimaryHost};
use node::{Health, Node};

/// Most rows written and not yet confirmed by a PINGRESP.
pub const WINDOW: usize = 4096;
/// Rows fetched from the queue at once.
const FETCH: usize = 1024;
/// Deadline for TCP connect, TLS handshake and CONNECT/CONNACK; also bounds each write.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for the NDEATH's PUBACK.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Packet id of the SUBSCRIBE (the only QoS 1 packets we send are it and the graceful NDEATH).
const SUBSCRIBE_PKID: u16 = 1;
const NDEATH_PKID: u16 = 2;

/// Everything the Sparkplug uplink task is given.
pub struct SparkplugUplink {
    pub config: UplinkConfig,
    pub sparkplug: SparkplugConfig,
    pub devices: Vec<DeviceConfig>,
    pub dialer: Dialer,
    pub queue: Queue,
    pub live: LiveReceiver,
    pub state: watch::Sender<LinkState>,
    pub stats: Arc<UplinkStats>,
    /// The command pipeline's intake: DCMD writes go to it as the JSON profile's commands do.
    pub commands: Option<Inbound>,
    /// How often the health figures are checked and their changes published as NDATA.
    pub health_interval: Duration,
}

/// How a connection ended.
enum Ended {
    Shutdown,
    Lost(UplinkError),
    /// The primary host's STATE went offline: NDEATH and DISCONNECT were sent; reconnect and
    /// wait for it again (not a failure).
    HostOffline,
}

/// The cursors of a session over the queue: history up to the boundary, live after it.
#[derive(Debug, Clone, Copy)]
struct Cursors {
    boundary: u64,
    history: u64,
    live: u64,
}

impl Cursors {
    fn history_waiting(&self) -> bool {
        self.history < self.boundary
    }
}

struct Driver {
    config: UplinkConfig,
    order: HistoryOrder,
    primary_host: Option<String>,
    node: Node,
    dialer: Dialer,
    queue: Queue,
    progress: watch::Receiver<QueueProgress>,
    live: LiveReceiver,
    live_open: bool,
    state: watch::Sender<LinkState>,
    stats: Arc<UplinkStats>,
    cancel: CancellationToken,
    /// The bdSeq of the current connection.
    bd_seq: BdSeq,
    /// `bd_seq` was committed but its CONNECT never written (see `next_bd_seq`).
    bd_seq_unused: bool,
    barrier: Barrier,
    /// When each outstanding PINGREQ was written, oldest first.
    pings: VecDeque<Instant>,
    host: PrimaryHost,
    rebirth: RebirthDebounce,
    rebirth_at: Option<Instant>,
    /// `Some` once the births of this connection are out.
    cursors: Option<Cursors>,
    /// The primary host's STATE said offline: end the connection.
    host_went_offline: bool,
    commands: Option<Inbound>,
    health_interval: Duration,
}

impl SparkplugUplink {
    /// Runs until `cancel` fires. Never returns early on broker errors.
    pub async fn run(self, cancel: CancellationToken) {
        let node = match Node::new(&self.sparkplug, &self.devices) {
            Ok(node) => node,
            Err(error) => {
                error!(%error, "sparkplug uplink cannot start");
                return;
            }
        };
        // Rows a JSON-profile run left with a session state are plain history here.
        if let Err(error) = self.queue.reset_session().await {
            warn!(%error, "could not reset the stored session states");
        }
        let mut driver = Driver {
            order: match self.sparkplug.history {
                SparkplugHistory::InOrder => HistoryOrder::InOrder,
                SparkplugHistory::LiveFirst => HistoryOrder::LiveFirst,
            },
            primary_host: self.sparkplug.primary_host_id.clone(),
            node,
            dialer: self.dialer,
            progress: self.queue.progress(),
            queue: self.queue,
            live: self.live,
            live_open: true,
            state: self.state,
            stats: self.stats,
            cancel,
            bd_seq: BdSeq::FIRST,
            bd_seq_unused: false,
            barrier: Barrier::new(),
            pings: VecDeque::new(),
            host: PrimaryHost::new(),
            rebirth: RebirthDebounce::default(),
            rebirth_at: None,
            cursors: None,
            host_went_offline: false,
            commands: self.commands,
            health_interval: self.health_interval,
            config: self.config,
        };
        driver.run().await;
    }
}

impl Driver {
    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        let mut failure_log = FailureLog::default();
        let broker = self.dialer.endpoint();
        while !self.cancel.is_cancelled() {
            let mut failed = None;
            match self.next_bd_seq().await {
                Err(error) => failed = Some(error),
                Ok(bd_seq) => {
                    self.bd_seq = bd_seq;
                    let (will_topic, will_payload) = self.node.ndeath(now_ms(), bd_seq);
                    let options = ConnectOptions {
                        client_id: &self.config.client_id,
                        keep_alive: self.config.keep_alive,
                        clean_session: true,
                        will_topic,
                        will_payload,
                        will_retain: false,
                        mqtt5: None,
                    };
                    let attempt = tokio::select! {
                        attempt = connection::connect(&self.dialer, options, CONNECT_TIMEOUT) => attempt,
                        () = self.cancel.cancelled() => break,
                    };
                    match attempt {
                        Ok((reader, writer, _)) => {
                            info!(%broker, bd_seq = bd_seq.value(), "sparkplug uplink connected");
                            backoff.reset();
                            failure_log.reset();
                            self.stats.connected();
                            self.state.send_replace(LinkState::Connected);
                            let ended = self.connected(reader, writer).await;
                            self.state.send_replace(LinkState::Connecting);
                            self.on_disconnected();
                            match ended {
                                Ended::Shutdown => return,
                                Ended::HostOffline => {
                                    info!("sparkplug uplink reconnecting to wait for the primary host");
                                }
                                Ended::Lost(error) => {
                                    self.stats.lost();
                                    self.stats.failed(&error);
                                    warn!(%error, "sparkplug uplink connection lost");
                                }
                            }
                        }
                        Err(error) => {
                            self.stats.connect_failed();
                            self.stats.failed(&error);
                            self.bd_seq_unused = matches!(&error, UplinkError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
                            failed = Some(error);
                        }
                    }
                }
            }
            if self.queue.is_closed() {
                return;
            }
            let delay = backoff.next_delay();
            self.stats.redial_in(delay, backoff.failures());
            if let Some(error) = failed {
                if failure_log.failed(Instant::now()).is_some() {
                    warn!(%error, %broker, next_attempt_in = ?delay, "sparkplug uplink cannot connect; retrying with backoff");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => break,
            }
        }
    }

    /// The bdSeq of the next CONNECT, committed before it is used. The last one again only when
    /// its attempt provably wrote no CONNECT (the dial was refused), so an outage of the broker
    /// does not count up one per redial.
    async fn next_bd_seq(&mut self) -> Result<BdSeq, UplinkError> {
        if std::mem::take(&mut self.bd_seq_unused) {
            return Ok(self.bd_seq);
        }
        let stored = self.queue.bd_seq().await?;
        let last = stored.and_then(|text| match BdSeq::parse_stored(&text) {
            Ok(bd_seq) => Some(bd_seq),
            Err(error) => {
                warn!(%error, "starting bdSeq again from 0");
                None
            }
        });
        let next = BdSeq::for_connect(last);
        self.queue.set_bd_seq(next.to_stored()).await?;
        Ok(next)
    }

    fn on_disconnected(&mut self) {
        let unconfirmed = self.barrier.on_connection_lost();
        if unconfirmed > 0 {
            info!(
                unconfirmed,
                "rows the broker did not confirm stay queued and go out again as history"
            );
        }
        self.pings.clear();
        self.host.on_disconnected();
        self.cursors = None;
        self.rebirth_at = None;
    }

    fn filters(&self) -> Vec<String> {
        let topics = self.node.topics();
        let mut filters = vec![topics.node(MessageType::NCmd), topics.dcmd_filter()];
        if let Some(host) = &self.primary_host {
            filters.push(crate::sparkplug::topic::NodeTopics::state(host));
        }
        filters
    }

    async fn connected(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        let filters = self
            .filters()
            .into_iter()
            .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
        let mut subscribe = Subscribe::new_many(filters);
        subscribe.pkid = SUBSCRIBE_PKID;
        if let Err(e) = writer.write(&[Packet::Subscribe(subscribe)]).await {
            return Ended::Lost(e);
        }
        let half = (self.config.keep_alive / 2).max(Duration::from_millis(100));
        let mut next_ping = Instant::now() + half;
        let mut next_health = Instant::now() + self.health_interval;
        let mut subscribed = false;
        let suback_due = Instant::now() + self.config.response_timeout;
        loop {
            if subscribed {
                if let Err(e) = self.pump(&mut writer).await {
                    return Ended::Lost(e);
                }
            }
            let now = Instant::now();
            let ping_due = self
                .pings
                .front()
                .map(|at| *at + self.config.response_timeout);
            let can_take = self.cursors.is_some() && self.barrier.unconfirmed() < WINDOW;
            let live_open = self.live_open;
            let step = tokio::select! {
                () = self.cancel.cancelled() => return self.close(reader, writer).await,
                packet = reader.read() => match packet {
                    Ok(first) => self.on_packets(first, &mut reader, &mut writer, &mut subscribed).await,
                    Err(e) => Err(e),
                },
                () = tokio::time::sleep_until(suback_due), if !subscribed => Err(UplinkError::Timeout("SUBACK")),
                changed = self.progress.changed(), if can_take => {
                    changed.map_err(|_| UplinkError::Queue(QueueError::Closed))
                }
                sample = self.live.rx.recv(), if live_open => match sample {
                    Some(first) => self.on_live(first, &mut writer).await,
                    None => { self.live_open = false; Ok(()) }
                },
                () = tokio::time::sleep_until(next_health) => {
                    next_health = Instant::now() + self.health_interval;
                    self.ndata(&mut writer).await
                }
                () = tokio::time::sleep_until(next_ping) => {
                    next_ping = Instant::now() + half;
                    self.ping(&mut writer).await
                }
                () = tokio::time::sleep_until(ping_due.unwrap_or(now)), if ping_due.is_some() => {
                    Err(UplinkError::Timeout("PINGRESP"))
                }
                () = tokio::time::sleep_until(self.rebirth_at.unwrap_or(now)), if self.rebirth_at.is_some() => {
                    self.rebirth_at = None;
                    if self.rebirth.due(Instant::now()) {
                        self.births(&mut writer).await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = step {
                return Ended::Lost(e);
            }
            if self.host_went_offline {
                self.host_went_offline = false;
                return self.host_offline(writer).await;
            }
        }
    }

    /// Health figures for the NBIRTH.
    fn health(&self) -> Health {
        let progress = *self.progress.borrow();
        let stats = self.queue.stats();
        Health {
            depth: progress.depth,
            oldest_age_ms: progress
                .oldest_ts_ms
                .map_or(0, |ts| u64::try_from(now_ms() - ts).unwrap_or(0)),
            dropped: stats.capacity_dropped + stats.expired,
            connects: self.stats.snapshot().connects,
        }
    }

    /// NDATA with the health figures that changed (while births are out).
    async fn ndata(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        if self.cursors.is_none() {
            return Ok(());
        }
        let health = self.health();
        match self.node.ndata(now_ms(), health) {
            Some(packet) => {
                writer.write(&[Packet::Publish(packet)]).await?;
                self.stats.published(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// NBIRTH and the DBIRTHs; sets the history boundary (on the first births of a connection)
    /// or keeps it (a rebirth).
    async fn births(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        let packets = self.node.births(now_ms(), self.bd_seq, self.health());
        let boundary = self.progress.borrow().last_seq;
        self.cursors.get_or_insert(Cursors {
            boundary,
            history: 0,
            live: boundary,
        });
        self.rebirth.births_sent(Instant::now());
        let n = packets.len();
        writer
            .write(&packets.into_iter().map(Packet::Publish).collect::<Vec<_>>())
            .await?;
        self.stats.published(n);
        debug!(
            bd_seq = self.bd_seq.value(),
            boundary, "sparkplug births published"
        );
        Ok(())
    }

    /// Sends queued rows while the window has room: history and live in the configured order,
    /// each window followed by a PINGREQ (the barrier's marker).
    async fn pump(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        let mut wrote = false;
        while let Some(mut cursors) = self.cursors {
            if self.barrier.unconfirmed() >= WINDOW {
                break;
            }
            let last_seq = self.progress.borrow().last_seq;
            let live_waiting = last_seq > cursors.live;
            let Some(source) = self.order.next(cursors.history_waiting(), live_waiting) else {
                break;
            };
            let after = match source {
                Source::History => cursors.history,
                Source::Live => cursors.live,
            };
            let mut rows = match self.queue.fetch(after, FETCH).await {
                Ok(rows) => rows,
                // A row that cannot be decoded can never be sent: skipped (not deleted, it stays
                // in the file for inspection), as the JSON profile does; the rest flows.
                Err(QueueError::Decode {
                    seq,
                    column,
                    reason,
                }) => {
                    error!(seq, column, %reason, "skipping an undecodable queue row");
                    self.stats.skipped_row();
                    match source {
                        Source::History => cursors.history = seq.min(cursors.boundary),
                        Source::Live => cursors.live = seq,
                    }
                    self.cursors = Some(cursors);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match source {
                Source::History => {
                    // Nothing fetched: nothing queued is left up to the boundary. (A short page
                    // proves nothing: an undecodable row ends it.)
                    cursors.history = match rows.last() {
                        Some(last) if last.seq < cursors.boundary => last.seq,
                        _ => cursors.boundary,
                    };
                    rows.retain(|r| r.seq <= cursors.boundary);
                }
                Source::Live => {
                    cursors.live = rows.last().map_or(last_seq, |r| r.seq);
                }
            }
            self.cursors = Some(cursors);
            // Rows past their point's `max_age` are dropped unsent, as the JSON profile does.
            let wall = now_ms();
            let (expired, rows): (Vec<StoredRow>, Vec<StoredRow>) = rows
                .into_iter()
                .partition(|r| r.expires_ms.is_some_and(|at| at <= wall));
            if !expired.is_empty() {
                self.queue
                    .expire(expired.iter().map(|r| r.seq).collect())
                    .await?;
            }
            if rows.is_empty() {
                continue;
            }
            let publish_status = self.order == HistoryOrder::InOrder || source == Source::Live;
            let sent = self
                .node
                .rows(now_ms(), &rows, cursors.boundary, publish_status);
            let n = sent.packets.len();
            writer
                .write(
                    &sent
                        .packets
                        .into_iter()
                        .map(Packet::Publish)
                        .collect::<Vec<_>>(),
                )
                .await?;
            debug!(
                rows = sent.rows.len(),
                messages = n,
                ?source,
                "sparkplug data written"
            );
            self.barrier.written(sent.rows);
            self.stats.published(n);
            wrote = true;
        }
        if wrote && self.barrier.needs_marker() {
            self.ping(writer).await?;
        }
        Ok(())
    }

    /// A PINGREQ: keep-alive and barrier marker at once.
    async fn ping(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        writer.write(&[Packet::PingReq]).await?;
        self.barrier.marker_written(Marker::Ping);
        self.pings.push_back(Instant::now());
        Ok(())
    }

    /// Live QoS 0 samples: `first` and every one already waiting, sent while births are out.
    async fn on_live(
        &mut self,
        first: crate::sample::Sample,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let mut samples = vec![first];
        while let Ok(sample) = self.live.rx.try_recv() {
            samples.push(sample);
        }
        if self.cursors.is_none() {
            self.stats.live_discarded(samples.len());
            return Ok(());
        }
        let packets = self.node.live(now_ms(), &samples);
        let n = packets.len();
        writer
            .write(&packets.into_iter().map(Packet::Publish).collect::<Vec<_>>())
            .await?;
        self.stats.published(n);
        Ok(())
    }

    /// Deletes rows the broker provably read.
    async fn delete(&mut self, rows: Vec<u64>) -> Result<(), UplinkError> {
        let n = rows.len();
        for seq in rows {
            self.queue.ack(seq).await?;
        }
        self.stats.acked(n);
        Ok(())
    }

    /// The primary host went offline: NDEATH, DISCONNECT, then reconnect and wait again.
    async fn host_offline(&mut self, writer: PacketWriter) -> Ended {
        let (topic, payload) = self.node.ndeath(now_ms(), self.bd_seq);
        let mut death = Publish::new(topic, QoS::AtLeastOnce, payload);
        death.pkid = NDEATH_PKID;
        if let Err(error) = writer_death_then_disconnect(writer, death).await {
            return Ended::Lost(error);
        }
        Ended::HostOffline
    }

    /// Graceful stop: NDEATH at QoS 1, its PUBACK awaited (it also confirms every row written
    /// before it), then DISCONNECT.
    async fn close(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        let (topic, payload) = self.node.ndeath(now_ms(), self.bd_seq);
        let mut death = Publish::new(topic, QoS::AtLeastOnce, payload);
        death.pkid = NDEATH_PKID;
        if let Err(error) = writer.write(&[Packet::Publish(death)]).await {
            warn!(%error, "could not publish the NDEATH");
            return Ended::Shutdown;
        }
        self.barrier
            .marker_written(Marker::Publish { pkid: NDEATH_PKID });
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        loop {
            let packet = tokio::select! {
                () = &mut grace => break,
                packet = reader.read() => packet,
            };
            match packet {
                Ok(Received::Packet(Packet::PubAck(ack))) if ack.pkid == NDEATH_PKID => {
                    if let Ok(rows) = self.barrier.on_puback(NDEATH_PKID) {
                        if let Err(error) = self.delete(rows).await {
                            warn!(%error, "could not delete the confirmed rows");
                        }
                    }
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "connection failed while publishing the NDEATH");
                    return Ended::Shutdown;
                }
            }
        }
        if let Err(error) = writer.disconnect().await {
            debug!(%error, "disconnect failed");
        }
        info!("sparkplug uplink closed");
        Ended::Shutdown
    }
}

async fn writer_death_then_disconnect(
    mut writer: PacketWriter,
    death: Publish,
) -> Result<(), UplinkError> {
    writer.write(&[Packet::Publish(death)]).await?;
    writer.disconnect().await
}
