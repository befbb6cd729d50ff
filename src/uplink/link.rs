//! The uplink task: dial, run a connection, back off, repeat — until shutdown.
//!
//! ```text
//!            ┌──────── backoff (full jitter) ◄──────── link lost ──────────┐
//!            ▼                                                            │
//!   ──► Connecting ── CONNACK ──► Resuming ──► Connected (birth, pump) ───┤
//!            │  (unknown broker session: clean CONNECT, DISCONNECT, redial) └── cancel ──► Closing
//! ```
//!
//! **Resuming.** `session_present = 1`: the rows the store holds with a session state (QoS 2,
//! or QoS 1 recorded by an older build) are resent — PUBLISH with the original packet id and
//! DUP=1, or PUBREL for rows past PUBREC — before anything new; unacknowledged QoS 1 rows follow
//! as new messages from the head of the queue. `session_present = 0`: those rows are reset to queued in the store
//! (committed first) and go out again as new messages, oldest first, same `seq`.
//!
//! **Unknown broker session.** The store records which broker session (`client_id@host:port`)
//! its packet ids belong to. When it does not match (new or quarantined queue file, another
//! broker or client id), the broker may hold QoS 2 ids we know nothing about, and reusing one
//! would make it swallow a new message as a duplicate. So the first connection is made with
//! `clean_session = 1` (the broker drops that session), the stored states are reset, the peer
//! recorded, and the link reconnects persistently at once.
//!
//! **Connected.** One `select!`: a packet from the broker (handled together with every packet
//! already buffered, so a burst of acknowledgements costs one commit), a new commit in the queue
//! (only while the window has room and the rate limit allows), the rate limit's next token, a
//! QoS 0 live sample, the keep-alive tick, the response deadline, an incoming command's settlement,
//! and shutdown. Before each wait it refills the window: take queued rows after the cursor (read
//! ahead, 4,096 rows or four windows per fetch, since a fetch waits for the writer's commit), then
//! write them — for a batch with QoS 2 rows only after their packet ids were committed
//! ([`Queue::mark_published`]). QoS 1 ids are not recorded at all: a broker keeps no state for
//! an incoming QoS 1 id after its PUBACK, so a QoS 1 row stays queued until its PUBACK, and a
//! new connection (session present or not) sends it again under a fresh id, same `seq` — the
//! duplicate a resend under its original id would be too. A fresh id never collides with a
//! QoS 2 id the broker holds: those are restored into the session before any id is handed out
//! (`docs/specs/queue.md` §3.2). A PUBREC is committed ([`Queue::mark_received`]) before its
//! PUBREL is written.
//!
//! **Paused.** When such a commit fails (a full disk), the link does not drop the connection
//! ([`super::stall`]): the PUBLISHes whose ids were not recorded are not written (their rows go
//! back to the read-ahead), PUBRELs whose PUBREC was not recorded are held, no new rows are
//! taken, and the writes are tried again on a timer while keep-alive and acknowledgements go on.
//! A failed reset of the stored session (`session_present = 0`) pauses the same way, as does the
//! queue when it keeps too many acknowledgements it could not delete yet.
//!
//! **Incoming commands.** Every incoming PUBLISH is offered to the link's [`Inflow`], as the
//! on-site broker's client does ([`super::inbound`]); the PUBLISHes of one read go to the command
//! intake as one batch, each with an [`AckToken`](super::inbound::AckToken); the intake commits
//! them to the command inbox and acks them, and a PUBACK is written once its message and every
//! earlier one were acked ([`AckOrder`](super::inbound::AckOrder)). The link keeps reading
//! meanwhile: commands are never a reason to stop reading the socket (the PUBACKs of our own
//! rows arrive on it) nor to renew the connection. On a full disk the intake holds the commands
//! and tries their commit again, so their PUBACKs wait while the link goes on as when it is
//! paused. Only a token dropped unacknowledged — the intake gave it up (more than it may hold, a
//! closed queue) — would hold back every later PUBACK of the connection for good, so it tears
//! the link down: the broker redelivers it on the next connection, whose CONNACK does not reset
//! the backoff. An oversized PUBLISH is skipped as it streams in and handed over without its
//! payload ([`connection`]).
//!
//! **Half-open links.** A PINGREQ goes out every keep-alive; any PINGRESP, PUBACK, PUBREC,
//! PUBCOMP or SUBACK missing for `response_timeout` tears the link down (a silent NAT or proxy
//! is found in that time, not after 1.5 × keep-alive).
//!
//! **Closing.** On shutdown it stops taking rows, publishes the offline status, waits up to
//! [`SHUTDOWN_GRACE`] for outstanding acknowledgements (rows not acknowledged by then stay in the
//! store with their session state and are resumed by the next run) and sends DISCONNECT.
//!
//! **Counting.** Connects, losses, publishes, resends, acknowledgements and the window's fill
//! go to [`UplinkStats`] (relaxed atomic adds per batch) for the metrics endpoint.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::Packet;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{packet_name, PacketReader, PacketWriter, Received};
use super::inbound::{Inbound, Inflow};
use super::presence::{self, Presence};
use super::rate::RateLimit;
use super::session::{PubRecAction, Released, Session};
use super::share::Share;
use super::stall::Stall;
use super::stats::UplinkStats;
use super::transport::Dialer;
use super::{LinkState, UplinkError};
use crate::config::{DrainOrder, UplinkConfig};
use crate::queue::{wire, LiveReceiver, Queue, QueueError, QueueProgress, StoredRow};
use crate::sample::{now_ms, Sample};

/// How long shutdown waits for outstanding acknowledgements before it disconnects anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the connected loop waits for, besides packets, commits of the queue it can take,
/// live samples, presence and the ping.
struct Waits {
    /// The oldest unanswered packet's response deadline.
    deadline: Option<Instant>,
    /// The drain rate's next token, while a backlog waits for it.
    pace: Option<Instant>,
    /// Whether a commit can be taken into the window now.
    can_take: bool,
    /// The next retry of a failed session write.
    retry_at: Option<Instant>,
    /// The end of a quota pause (MQTT 5).
    quota_until: Option<Instant>,
}

/// How a connected period ended.
enum Ended {
    Shutdown,
    Lost(UplinkError),
}

/// Everything the uplink task is given.
pub struct Uplink {
    pub config: UplinkConfig,
    pub dialer: Dialer,
    pub queue: Queue,
    pub live: LiveReceiver,
    /// Receives the PUBLISHes of its subscriptions with manual acknowledgement (commands).
    pub inbound: Option<Inbound>,
    /// Certificates and health reports.
    pub presence: Presence,
    /// Follows the connection (for status lines).
    pub state: watch::Sender<LinkState>,
    /// Counters for the metrics endpoint.
    pub stats: Arc<UplinkStats>,
}

impl Uplink {
    /// Runs the uplink until `cancel` fires. Never returns early on broker errors.
    pub async fn run(self, cancel: CancellationToken) {
        let Uplink {
            config,
            dialer,
            queue,
            live,
            inbound,
            presence,
            state,
            stats,
        } = self;
        let now = Instant::now();
        let mut link = Link {
            status_topic: wire::status_topic(&config.topic_prefix),
            health_topic: presence::health_topic(&config.topic_prefix),
            topics: wire::Topics::new(&config.topic_prefix),
            presence,
            presence_open: PresenceOpen {
                gateway: true,
                health: true,
            },
            session: Session::new(config.inflight_window(), config.response_timeout),
            rate: RateLimit::new(config.drain_rate(), now),
            config,
            dialer,
            progress: queue.progress(),
            queue,
            live,
            live_open: true,
            down_since_ms: None,
            inflow: Inflow::new(inbound),
            fresh_start: None,
            ahead: std::collections::VecDeque::new(),
            live_lane: None,
            handed_max: 0,
            resend_up_to: 0,
            stall: Stall::default(),
            held: Vec::new(),
            reset_due: false,
            mqtt5: None,
            state,
            stats,
            cancel,
        };
        link.run().await;
    }
}

/// Which of the presence inputs still have a sender; a closed one's branch is disabled.
#[derive(Debug, Clone, Copy)]
struct PresenceOpen {
    /// The gateway info (a change republishes the birth).
    gateway: bool,
    /// The health reports.
    health: bool,
}

struct Link {
    config: UplinkConfig,
    dialer: Dialer,
    status_topic: String,
    health_topic: String,
    /// Sample topics, rendered once per point.
    topics: wire::Topics,
    presence: Presence,
    presence_open: PresenceOpen,
    session: Session,
    rate: RateLimit,
    queue: Queue,
    /// Wakes the link when rows are committed.
    progress: watch::Receiver<QueueProgress>,
    live: LiveReceiver,
    /// False once every producer of live samples is gone; the branch is then disabled.
    live_open: bool,
    /// Wall time (ms) of the last lost connection or failed connect: QoS 0 samples taken up to
    /// then waited out an outage and are stale at the next connect. `None` before any failure,
    /// so the samples of the first polls, taken while the first connect is under way, go out.
    down_since_ms: Option<i64>,
    /// Incoming PUBLISHes: to the command intake, or acknowledged and dropped.
    inflow: Inflow,
    /// Whether the next connection must first clear an unknown broker session; `None` until
    /// the store was asked.
    fresh_start: Option<bool>,
    /// Committed, never-sent rows fetched ahead of the window, in `seq` order, all after the
    /// session's cursor. Emptied at every connection (the store is the truth).
    ahead: std::collections::VecDeque<StoredRow>,
    /// `drain: live_first` while this connection's backlog is being sent (see `lanes.rs`).
    live_lane: Option<lanes::LiveLane>,
    /// The newest `seq` handed out in this process.
    handed_max: u64,
    /// On a resumed session, the newest `seq` handed out before it: a QoS 1 row up to it that
    /// goes out again (as new, its id was not recorded) counts as resent.
    resend_up_to: u64,
    /// Set while a session write failed (see "Paused" in the module doc).
    stall: Stall,
    /// Rows past PUBREC (`seq`, packet id) whose PUBREL waits for "PUBREC received" on disk.
    held: Vec<(u64, u16)>,
    /// The stored session states must still be reset (`session_present = 0`, commit failed).
    reset_due: bool,
    /// The MQTT 5 state of the current connection; `None` under MQTT 3.1.1.
    mqtt5: Option<mqtt5::Mqtt5Link>,
    state: watch::Sender<LinkState>,
    stats: Arc<UplinkStats>,
    cancel: CancellationToken,
}

impl Link {
    fn peer(&self) -> String {
        format!("{}@{}", self.config.client_id, self.dialer.endpoint())
    }

    /// The first writes of a connection: what the stored session must resend, the birth, the
    /// command subscription and the live samples taken during the connect.
    async fn greet(
        &mut self,
        writer: &mut PacketWriter,
        session_present: bool,
        now: Instant,
    ) -> Result<(), UplinkError> {
        self.session.on_connected();
        self.ahead.clear();
        self.resend_up_to = if session_present { self.handed_max } else { 0 };
        self.live_lane = match self.config.drain {
            DrainOrder::InOrder => None,
            DrainOrder::LiveFirst { live_share } => Some(lanes::LiveLane::new(
                Share::new(self.config.inflight_window(), live_share),
                self.progress.borrow().last_seq,
            )),
        };
        self.stall.on_connected();
        self.held.clear();
        self.reset_due = false;
        let fresh = self.discard_stale_live();
        let mut packets = self.resume(session_present, now).await?;
        let resent = packets.len();
        let birth = self.presence.birth(now_ms());
        packets.push(
            self.session
                .publish_status(self.status_topic.clone(), birth, now),
        );
        if !self.inflow.filters().is_empty() {
            packets.push(self.session.subscribe(self.inflow.filters(), now));
        }
        let live = fresh.len();
        for sample in fresh {
            let topic = self.topics.sample(&sample);
            let payload = wire::sample_payload(&sample, None);
            packets.push(self.session.publish_live(topic, payload, sample.retain));
        }
        writer.write(&packets).await?;
        self.stats.resent(resent);
        self.stats.published(live);
        Ok(())
    }

    async fn connected(
        &mut self,
        mut reader: PacketReader,
        mut writer: PacketWriter,
        session_present: bool,
    ) -> Ended {
        let now = Instant::now();
        if let Err(e) = self.greet(&mut writer, session_present, now).await {
            return Ended::Lost(mqtt5::why_lost(&mut reader, e).await);
        }
        // A PINGREQ every keep-alive; its PINGRESP is due within the response timeout. A
        // deadline rather than an `Interval`: no timer stays armed while the link waits for a
        // commit, so paused-time tests do not jump the clock then.
        let every = self.ping_every();
        let mut next_ping = now + every;
        loop {
            let refilled = self.refill(&mut writer).await;
            self.stats.set_inflight(self.session.inflight());
            self.stats.alias_saved(writer.take_alias_savings());
            if let Err(e) = refilled {
                return Ended::Lost(mqtt5::why_lost(&mut reader, e).await);
            }
            let now = Instant::now();
            let Waits {
                deadline,
                pace,
                can_take,
                retry_at,
                quota_until,
            } = self.waits(now);
            let step = tokio::select! {
                () = self.cancel.cancelled() => return self.close(reader, writer).await,
                packet = reader.read() => match packet {
                    Ok(packet) => self.on_packets(packet, &mut reader, &mut writer).await,
                    Err(e) => Err(e),
                },
                changed = self.progress.changed(), if can_take => {
                    changed.map_err(|_| UplinkError::Queue(QueueError::Closed))
                }
                () = tokio::time::sleep_until(pace.unwrap_or(now)), if pace.is_some() => Ok(()),
                () = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {
                    self.retry(&mut writer).await
                }
                () = tokio::time::sleep_until(quota_until.unwrap_or(now)), if quota_until.is_some() => {
                    self.resend_deferred(&mut writer).await
                }
                sample = self.live.rx.recv(), if self.live_open => match sample {
                    Some(sample) => self.publish_live(&sample, &mut writer).await,
                    None => { self.live_open = false; Ok(()) }
                },
                () = tokio::time::sleep_until(next_ping) => {
                    next_ping += every;
                    match self.session.ping(Instant::now()) {
                        Some(packet) => writer.write(&[packet]).await,
                        None => Ok(()),
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {
                    Err(UplinkError::Timeout(self.session.overdue(Instant::now()).unwrap_or("a response")))
                }
                changed = self.presence.gateway.changed(), if self.presence_open.gateway => {
                    if changed.is_err() {
                        self.presence_open.gateway = false;
                        Ok(())
                    } else {
                        self.rebirth(&mut writer).await
                    }
                }
                report = self.presence.health.recv(), if self.presence_open.health => match report {
                    Some(payload) => {
                        let packet = self.session.publish_live(self.health_topic.clone(), payload, false);
                        writer.write(&[packet]).await
                    }
                    None => { self.presence_open.health = false; Ok(()) }
                },
                // After a shutdown's abandonments the cancel branch closes the connection
                // gracefully next, and the broker redelivers those commands.
                settled = self.inflow.settled(&self.cancel) => match settled {
                    Ok(pubacks) => writer.write(&pubacks).await,
                    Err(error) => Err(error),
                },
            };
            if let Err(e) = step {
                return Ended::Lost(mqtt5::why_lost(&mut reader, e).await);
            }
        }
    }

    /// What the connection's loop waits for next, at `now`.
    fn waits(&mut self, now: Instant) -> Waits {
        let backlog =
            !self.ahead.is_empty() || self.progress.borrow().last_seq > self.session.cursor();
        let paused = self.stall.is_paused() || self.quota_paused();
        let pace = if backlog && self.session.room() > 0 && !paused {
            self.rate.next_ready(now)
        } else {
            None
        };
        Waits {
            deadline: self.session.deadline(),
            pace,
            can_take: self.session.room() > 0 && pace.is_none() && !paused,
            retry_at: self.stall.retry_at(),
            quota_until: self.mqtt5.as_ref().and_then(|m| m.quota_until),
        }
    }

    /// A live (QoS 0) sample, straight from its poll.
    async fn publish_live(
        &mut self,
        sample: &Sample,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let topic = self.topics.sample(sample);
        let payload = wire::sample_payload(sample, None);
        let publish = self.session.publish_live(topic, payload, sample.retain);
        writer.write(&[publish]).await?;
        self.stats.published(1);
        Ok(())
    }

    /// The device map changed (reload): the birth says so at once.
    async fn rebirth(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        let birth = self.presence.birth(now_ms());
        let packet = self
            .session
            .publish_status(self.status_topic.clone(), birth, Instant::now());
        writer.write(&[packet]).await
    }

    /// Handles `first` and every complete packet already buffered behind it as one batch.
    async fn on_packets(
        &mut self,
        first: Received,
        reader: &mut PacketReader,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let batch = reader.batch(first)?;
        let now = Instant::now();
        let mut received = Vec::new();
        let mut out = Vec::new();
        for packet in batch {
            if let Received::Refused(refusal) = packet {
                self.on_refused(refusal, now).await?;
                continue;
            }
            let Some(packet) = self.inflow.take(packet, &mut out) else {
                continue;
            };
            match packet {
                Packet::PubAck(ack) => {
                    let released = self.session.on_puback(ack.pkid)?;
                    self.forget_sent(ack.pkid);
                    self.release(released).await?;
                }
                Packet::PubRec(rec) => match self.session.on_pubrec(rec.pkid, now)? {
                    PubRecAction::Persist { seq, pubrel } => {
                        received.push((seq, rec.pkid));
                        out.push(pubrel);
                    }
                    PubRecAction::Send(pubrel) => out.push(pubrel),
                    PubRecAction::Wait => {}
                },
                Packet::PubComp(comp) => {
                    let released = self.session.on_pubcomp(comp.pkid)?;
                    self.forget_sent(comp.pkid);
                    self.release(released).await?;
                }
                Packet::PingResp => self.session.on_pingresp(),
                Packet::SubAck(ack) => {
                    let codes: Vec<String> =
                        ack.return_codes.iter().map(|c| format!("{c:?}")).collect();
                    self.session.on_suback(ack.pkid, &codes)?;
                    debug!("uplink subscriptions granted");
                }
                other => return Err(UplinkError::UnexpectedPacket(packet_name(&other))),
            }
        }
        // The PUBRELs of first PUBRECs go out only once "PUBREC received" is on disk.
        if !received.is_empty() {
            let seqs = received.iter().map(|(seq, _)| *seq).collect();
            match self.queue.mark_received(seqs).await {
                Ok(()) => self.flowed(now),
                Err(QueueError::Commit(error)) => {
                    for (seq, pkid) in received {
                        self.session.hold(pkid);
                        self.held.push((seq, pkid));
                        out.retain(|p| !matches!(p, Packet::PubRel(rel) if rel.pkid == pkid));
                    }
                    self.pause(&error, now);
                }
                Err(e) => return Err(e.into()),
            }
        }
        writer.write(&out).await?;
        self.inflow.hand_over(&self.cancel).await;
        Ok(())
    }

    async fn release(&mut self, released: Released) -> Result<(), UplinkError> {
        match released {
            Released::Row(seq) => {
                self.live_released(seq);
                self.queue.ack(seq).await?;
                self.stats.acked(1);
                Ok(())
            }
            Released::Rows(seqs) => {
                for &seq in &seqs {
                    self.live_released(seq);
                    self.queue.ack(seq).await?;
                }
                self.stats.acked(seqs.len());
                Ok(())
            }
            Released::Status => Ok(()),
        }
    }

    /// Graceful end of a connection on shutdown.
    async fn close(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        // Commands the handler finished before the shutdown are acknowledged now, so the
        // broker does not redeliver them to the next run.
        // Abandoned ones are redelivered to the next run.
        let mut packets = self.inflow.settled_now();
        packets.push(self.session.publish_status(
            self.status_topic.clone(),
            self.presence.death(now_ms()),
            Instant::now(),
        ));
        if let Err(error) = writer.write(&packets).await {
            warn!(%error, "could not publish the offline status");
            return Ended::Shutdown;
        }
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while self.session.inflight() > 0 {
            let step = tokio::select! {
                () = &mut grace => break,
                packet = reader.read() => match packet {
                    Ok(packet) => self.on_packets(packet, &mut reader, &mut writer).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(error) = step {
                warn!(%error, "connection failed while finishing in-flight publishes");
                return Ended::Shutdown;
            }
        }
        if self.session.inflight() > 0 {
            info!(
                unacknowledged = self.session.inflight(),
                "shutdown grace elapsed; unacknowledged rows stay queued for the next start"
            );
        }
        if let Err(error) = writer.disconnect().await {
            debug!(%error, "disconnect failed");
        }
        info!("uplink closed");
        Ended::Shutdown
    }

    /// QoS 0 samples that waited while the link was down are stale: contract v1 sends QoS 0 only
    /// while connected. Those taken since the last failure, during the connect that succeeded
    /// (at start: the first polls), are returned to be sent.
    fn discard_stale_live(&mut self) -> Vec<Sample> {
        let mut discarded = 0usize;
        let mut fresh = Vec::new();
        while let Ok(sample) = self.live.rx.try_recv() {
            match self.down_since_ms {
                Some(down) if sample.ts_ms <= down => discarded += 1,
                _ => fresh.push(sample),
            }
        }
        // Likewise a health report that waited for the connection.
        while self.presence.health.try_recv().is_ok() {}
        if discarded > 0 {
            self.stats.live_discarded(discarded);
            info!(
                discarded,
                "dropped QoS 0 samples taken while the uplink was down"
            );
        }
        fresh
    }
}

mod batched;
mod dial;
mod lanes;
mod mqtt5;
mod window;

#[cfg(test)]
mod tests;
