//! The local broker client task (I/O): one MQTT 3.1.1 connection to the on-site broker, built
//! from the uplink's parts ([`Dialer`], [`connection`], [`Session`], [`Inflow`], [`Backoff`])
//! without the queue.
//!
//! ```text
//!   ──► connecting ── CONNACK ──► connected: birth, retained copies, SUBSCRIBE P/+/+/set ──┐
//!          ▲                        samples QoS 0 (retain per point), statuses and      │
//!          │                        results QoS 1, commands in (manual ack), pings      │
//!          └──── backoff (1 s doubling to 30 s, jitter) ◄──── lost ────────────────────┘
//!                                                     cancel ──► death, DISCONNECT
//! ```
//!
//! # Guarantees and non-guarantees
//! - **Live, not durable.** Samples are published at QoS 0 as they are read, with the point's
//!   retain flag and without `seq` (they were never queued). While the broker is down they are
//!   discarded; the task keeps reading its feed all the same, so the statuses and retained
//!   values it republishes at the next connect are current.
//! - **Status.** Birth (retained, QoS 1) at every connect and when the device map changes; a
//!   retained Last Will and a graceful death on `P/status` of the local broker, always the
//!   retained offline form (the on-site HMIs want to see that the gateway is down). Device
//!   statuses retained, QoS 1.
//! - **Commands.** `P/+/+/set` subscribed at QoS 1 with a persistent session; the PUBLISHes of
//!   each read go to the command intake of origin `local` exactly as the uplink's go to the
//!   cloud's (`uplink::inbound`): committed to the command inbox, then acknowledged in receive
//!   order; oversized ones are skipped unread and answered `bad_payload`. Results go out QoS 1
//!   on the same broker; those made while it is down are kept (at most
//!   [`PENDING_RESULTS`]) and published at the next connect. A failed inbox commit (a full
//!   disk) only delays their acknowledgements: the intake holds them and tries again. Only
//!   commands the intake gives up (more than it may hold) are left unacknowledged; that tears
//!   the connection down so the broker redelivers them, and the next CONNACK does not reset the
//!   backoff.
//! - **Independent of the cloud.** Nothing here waits on the queue or the uplink, and nothing
//!   there waits on this task: its inputs are offered with `try_send`.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::Packet;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::feed::{FeedReceiver, LocalEvent};
use super::retained::Retained;
use crate::backoff::{unlogged_suffix, Backoff, FailureLog};
use crate::commands::topic;
use crate::config::{LocalConfig, OfflineStatus, Qos};
use crate::queue::wire::{sample_payload, sample_topic, status_topic};
use crate::sample::{now_ms, Sample};
use crate::status::gateway::{self, GatewayInfo, OfflineReason};
use crate::uplink::connection::{
    self, packet_name, ConnectOptions, PacketReader, PacketWriter, Received,
};
use crate::uplink::inbound::{Inbound, Inflow};
use crate::uplink::session::Session;
use crate::uplink::{Dialer, UplinkError};

/// First reconnect delay; doubles (full jitter) up to [`RECONNECT_MAX`].
pub const RECONNECT_INITIAL: Duration = Duration::from_secs(1);
/// An on-site broker that restarts is back in seconds; a wrong password is not fixed faster by
/// hammering it.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Deadline for connecting and for each write; a LAN broker answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer (PINGRESP, PUBACK, SUBACK) missing this long means a dead connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the death certificate's PUBACK.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Results kept while the broker is down, published at the next connect (oldest dropped
/// first): the answers of a full command inbox's worth of on-site commands would not fit, but
/// the on-site clients waiting for a few answers get them.
pub const PENDING_RESULTS: usize = 1024;

/// Everything the task is given.
pub struct LocalClient {
    pub config: LocalConfig,
    pub dialer: Dialer,
    pub feed: FeedReceiver,
    /// What the birth says; a change republishes it.
    pub gateway: watch::Receiver<Arc<GatewayInfo>>,
    /// The command intake of origin `local`: its filter is subscribed at every connect.
    pub commands: Inbound,
}

enum Ended {
    Shutdown,
    Lost(UplinkError),
}

struct Client {
    config: LocalConfig,
    dialer: Dialer,
    feed: FeedReceiver,
    gateway: watch::Receiver<Arc<GatewayInfo>>,
    /// Incoming PUBLISHes, to the command intake of origin `local`.
    inflow: Inflow,
    session: Session,
    retained: Retained,
    /// Results made while the broker was down, for the next connect.
    pending_results: VecDeque<(String, Bytes)>,
    /// Whether the gateway info still has a sender (its branch is disabled once it has not).
    gateway_open: bool,
}

impl LocalClient {
    /// Runs until `cancel` fires; never returns early on broker errors.
    pub async fn run(self, cancel: CancellationToken) {
        let mut client = Client {
            config: self.config,
            dialer: self.dialer,
            feed: self.feed,
            gateway: self.gateway,
            inflow: Inflow::new(Some(self.commands)),
            // Only certificates, statuses and results are tracked: the window is irrelevant.
            session: Session::new(1, RESPONSE_TIMEOUT),
            retained: Retained::default(),
            pending_results: VecDeque::new(),
            gateway_open: true,
        };
        client.run(cancel).await;
    }
}

impl Client {
    fn topic(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.config.topic_prefix)
    }

    async fn run(&mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
        let mut failure_log = FailureLog::default();
        let broker = self.dialer.endpoint();
        loop {
            let options = ConnectOptions {
                client_id: &self.config.client_id,
                keep_alive: self.config.keep_alive,
                clean_session: false,
                will_topic: status_topic(&self.config.topic_prefix),
                will_payload: gateway::death(
                    now_ms(),
                    OfflineReason::ConnectionLost,
                    OfflineStatus::Retain,
                ),
                will_retain: true,
                mqtt5: None,
            };
            let attempt = tokio::select! {
                attempt = connection::connect(&self.dialer, options, CONNECT_TIMEOUT) => attempt,
                () = cancel.cancelled() => return,
            };
            let mut failed = None;
            match attempt {
                Ok((reader, writer, ack)) => {
                    info!(%broker, session_present = ack.session_present, "local broker connected");
                    // Not after a teardown for an unacknowledged command: it may fail again.
                    if !self.inflow.on_connected() {
                        backoff.reset();
                    }
                    failure_log.reset();
                    match self.connected(reader, writer, &cancel).await {
                        Ended::Shutdown => return,
                        Ended::Lost(error) => {
                            warn!(%broker, %error, "local broker connection lost")
                        }
                    }
                }
                Err(error) => failed = Some(error),
            }
            let delay = backoff.next_delay();
            if let Some(error) = failed {
                match failure_log.failed(Instant::now()) {
                    Some(unlogged) => warn!(
                        %broker, %error, attempt = backoff.failures(), next_attempt_in = ?delay,
                        "cannot connect to the local broker; retrying with backoff, next attempt in \
                         {delay:.1?}{} (the cloud path is not affected)",
                        unlogged_suffix(unlogged)
                    ),
                    None => {
                        debug!(%broker, %error, attempt = backoff.failures(), "local broker connect failed")
                    }
                }
            }
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            // Keep reading the feed while waiting: stale samples go; statuses, retained values
            // and results are kept for the next connection.
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    () = cancel.cancelled() => return,
                    Some(sample) = self.feed.samples.recv() => { self.remember_sample(&sample); }
                    Some(event) = self.feed.events.recv() => {
                        let (topic, payload, retain) = self.remember_event(event);
                        if !retain {
                            self.keep_result(topic, payload);
                        }
                    }
                }
            }
        }
    }

    /// A result that cannot be published now, for the next connect.
    fn keep_result(&mut self, topic: String, payload: Bytes) {
        if self.pending_results.len() == PENDING_RESULTS {
            self.pending_results.pop_front();
            warn!("too many command results wait for the local broker; dropping the oldest");
        }
        self.pending_results.push_back((topic, payload));
    }

    /// Keeps a retained sample's payload for the next connect; returns it.
    fn remember_sample(&mut self, sample: &Sample) -> Bytes {
        let payload = sample_payload(sample, None);
        if sample.retain {
            self.retained.keep(
                format!("{}/{}", sample.device, sample.point),
                payload.clone(),
            );
        }
        payload
    }

    /// Keeps a device status for the next connect; returns the packet parts to publish now.
    fn remember_event(&mut self, event: LocalEvent) -> (String, Bytes, bool) {
        match event {
            LocalEvent::DeviceStatus { device, payload } => {
                let suffix = format!("{device}/status");
                let payload = Bytes::from(payload);
                self.retained.keep(suffix.clone(), payload.clone());
                (self.topic(&suffix), payload, true)
            }
            LocalEvent::Result {
                device,
                point,
                payload,
            } => (
                topic::result_topic(&self.config.topic_prefix, &device, &point),
                Bytes::from(payload),
                false,
            ),
        }
    }

    async fn connected(
        &mut self,
        mut reader: PacketReader,
        mut writer: PacketWriter,
        cancel: &CancellationToken,
    ) -> Ended {
        let now = Instant::now();
        self.session.on_connected();
        // What waited for the connection: samples are stale, the rest is in `retained`.
        while let Ok(sample) = self.feed.samples.try_recv() {
            self.remember_sample(&sample);
        }
        while let Ok(event) = self.feed.events.try_recv() {
            let (topic, payload, retain) = self.remember_event(event);
            if !retain {
                self.keep_result(topic, payload);
            }
        }
        let birth = self.gateway.borrow_and_update().birth(now_ms());
        let mut packets =
            vec![self
                .session
                .publish_status(status_topic(&self.config.topic_prefix), birth, now)];
        let copies: Vec<(String, Bytes)> = self
            .retained
            .iter()
            .map(|(suffix, payload)| (self.topic(suffix), payload.clone()))
            .collect();
        for (topic, payload) in copies {
            let qos = if topic.ends_with("/status") {
                Qos::AtLeastOnce
            } else {
                Qos::AtMostOnce
            };
            packets.push(self.session.publish_other(topic, payload, qos, true, now));
        }
        for (topic, payload) in std::mem::take(&mut self.pending_results) {
            packets.push(
                self.session
                    .publish_other(topic, payload, Qos::AtLeastOnce, false, now),
            );
        }
        packets.push(self.session.subscribe(self.inflow.filters(), now));
        if let Err(error) = writer.write(&packets).await {
            return Ended::Lost(error);
        }
        let half = (self.config.keep_alive / 2).max(Duration::from_millis(100));
        let mut next_ping = now + half;
        loop {
            let now = Instant::now();
            let deadline = self.session.deadline();
            let step = tokio::select! {
                () = cancel.cancelled() => return self.close(reader, writer).await,
                packet = reader.read() => match packet {
                    Ok(packet) => self.on_packets(packet, &mut reader, &mut writer, cancel).await,
                    Err(error) => Err(error),
                },
                Some(sample) = self.feed.samples.recv() => {
                    let payload = self.remember_sample(&sample);
                    let topic = sample_topic(&self.config.topic_prefix, &sample);
                    let packet = self.session.publish_live(topic, payload, sample.retain);
                    writer.write(&[packet]).await
                }
                Some(event) = self.feed.events.recv() => {
                    let (topic, payload, retain) = self.remember_event(event);
                    let packet = self.session.publish_other(topic, payload, Qos::AtLeastOnce, retain, Instant::now());
                    writer.write(&[packet]).await
                }
                changed = self.gateway.changed(), if self.gateway_open => {
                    if changed.is_err() {
                        self.gateway_open = false;
                        Ok(())
                    } else {
                        let birth = self.gateway.borrow_and_update().birth(now_ms());
                        let packet = self.session.publish_status(status_topic(&self.config.topic_prefix), birth, Instant::now());
                        writer.write(&[packet]).await
                    }
                }
                () = tokio::time::sleep_until(next_ping) => {
                    next_ping += half;
                    match self.session.ping(Instant::now()) {
                        Some(packet) => writer.write(&[packet]).await,
                        None => Ok(()),
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {
                    Err(UplinkError::Timeout(self.session.overdue(Instant::now()).unwrap_or("a response")))
                }
                // After a shutdown's abandonments the cancel branch closes next.
                settled = self.inflow.settled(cancel) => match settled {
                    Ok(pubacks) => writer.write(&pubacks).await,
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = step {
                return Ended::Lost(error);
            }
        }
    }

    /// Handles `first` and every complete packet already buffered behind it; the commands among
    /// them go to the intake as one batch.
    async fn on_packets(
        &mut self,
        first: Received,
        reader: &mut PacketReader,
        writer: &mut PacketWriter,
        cancel: &CancellationToken,
    ) -> Result<(), UplinkError> {
        let mut out = Vec::new();
        for received in reader.batch(first)? {
            let Some(packet) = self.inflow.take(received, &mut out) else {
                continue;
            };
            match packet {
                Packet::PubAck(ack) => {
                    self.session.on_puback(ack.pkid)?;
                }
                Packet::PingResp => self.session.on_pingresp(),
                Packet::SubAck(ack) => {
                    let codes: Vec<String> =
                        ack.return_codes.iter().map(|c| format!("{c:?}")).collect();
                    if let Err(error) = self.session.on_suback(ack.pkid, &codes) {
                        // The ACL refuses the command topics: values and status still flow.
                        warn!(%error, "the local broker refused the command subscription");
                    }
                }
                other => return Err(UplinkError::UnexpectedPacket(packet_name(&other))),
            }
        }
        writer.write(&out).await?;
        self.inflow.hand_over(cancel).await;
        Ok(())
    }

    async fn close(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        let death = self.session.publish_status(
            status_topic(&self.config.topic_prefix),
            gateway::death(now_ms(), OfflineReason::Shutdown, OfflineStatus::Retain),
            Instant::now(),
        );
        if writer.write(&[death]).await.is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while self.session.status_pending() {
                    match reader.read().await {
                        Ok(Received::Packet(Packet::PubAck(ack))) => {
                            let _ = self.session.on_puback(ack.pkid);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
            .await;
        }
        if let Err(error) = writer.disconnect().await {
            debug!(%error, "local disconnect failed");
        }
        info!("local broker client closed");
        Ended::Shutdown
    }
}
