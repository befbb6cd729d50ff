//! The uplink task: dial, run a connection, back off, repeat — until shutdown.
//!
//! ```text
//!            ┌──────── backoff (full jitter) ◄──────── link lost ───┐
//!            ▼                                                     │
//!   ──► Connecting ── CONNACK ──► Connected (birth, pump rows) ────┤
//!                                                                  └── cancel ──► Closing ──► done
//! ```
//!
//! While connected the task waits on one `select!`: a packet from the broker, a new commit in
//! the queue (only while the in-flight window has room), a QoS 0 live sample, the keep-alive
//! tick, and shutdown. Before each wait it refills the window from the queue, strictly after the
//! session's cursor. On shutdown it stops taking rows, publishes the offline status, waits up to
//! [`SHUTDOWN_GRACE`] for outstanding acknowledgements (rows not acknowledged by then stay queued
//! and are resent by the next run) and sends DISCONNECT.

use std::time::Duration;

use rumqttc::mqttbytes::v4::{Packet, PubAck};
use rumqttc::mqttbytes::QoS;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connection::{self, packet_name, ConnectOptions, PacketReader, PacketWriter};
use super::message::{self, OfflineReason};
use super::session::{Released, Session};
use super::{LinkState, UplinkError};
use crate::backoff::Backoff;
use crate::config::UplinkConfig;
use crate::queue::{LiveReceiver, Queue, QueueError, QueueProgress};
use crate::sample::now_ms;

/// Unacknowledged QoS 1/2 publishes at once. Large enough to keep a WAN link with a few hundred
/// ms of latency busy, small enough that a reconnect resends little.
pub const MAX_INFLIGHT: u16 = 64;
/// How long shutdown waits for outstanding acknowledgements before it disconnects anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Deadline for TCP connect + CONNECT/CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connected period ended.
enum Ended {
    Shutdown,
    Lost(UplinkError),
}

/// Runs the uplink until `cancel` fires. Never returns early on broker errors. `state` follows
/// the connection (for status lines).
pub async fn run(
    config: UplinkConfig,
    queue: Queue,
    live: LiveReceiver,
    state: watch::Sender<LinkState>,
    cancel: CancellationToken,
) {
    let mut link = Link {
        status_topic: message::status_topic(&config.topic_prefix),
        config,
        session: Session::new(MAX_INFLIGHT),
        progress: queue.progress(),
        queue,
        live,
        live_open: true,
        state,
        cancel,
    };
    link.run().await;
}

struct Link {
    config: UplinkConfig,
    status_topic: String,
    session: Session,
    queue: Queue,
    /// Wakes the link when rows are committed.
    progress: watch::Receiver<QueueProgress>,
    live: LiveReceiver,
    /// False once every producer of live samples is gone; the branch is then disabled.
    live_open: bool,
    state: watch::Sender<LinkState>,
    cancel: CancellationToken,
}

impl Link {
    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        while !self.cancel.is_cancelled() {
            let connected_at = now_ms();
            let options = ConnectOptions {
                client_id: &self.config.client_id,
                keep_alive: self.config.keep_alive,
                will_topic: self.status_topic.clone(),
                will_payload: message::death_payload(connected_at, OfflineReason::ConnectionLost),
            };
            let (host, port) = (self.config.host.clone(), self.config.port);
            let attempt = tokio::select! {
                attempt = connection::connect(&host, port, options, CONNECT_TIMEOUT) => attempt,
                () = self.cancel.cancelled() => break,
            };
            match attempt {
                Ok((reader, writer, _ack)) => {
                    info!(broker = %format!("{host}:{port}"), "uplink connected");
                    backoff.reset();
                    self.state.send_replace(LinkState::Connected);
                    let ended = self.connected(reader, writer).await;
                    self.state.send_replace(LinkState::Connecting);
                    match ended {
                        Ended::Shutdown => return,
                        Ended::Lost(error) => warn!(%error, "uplink connection lost"),
                    }
                }
                Err(error) if backoff.failures() == 0 => {
                    warn!(%error, broker = %format!("{host}:{port}"), "uplink cannot connect; retrying with backoff")
                }
                Err(error) => {
                    debug!(%error, failures = backoff.failures(), "uplink connect failed")
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => break,
            }
        }
    }

    async fn connected(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        self.session.on_connected();
        self.discard_stale_live();
        let birth = self
            .session
            .publish_status(self.status_topic.clone(), message::birth_payload(now_ms()));
        if let Err(e) = self.write_all(&mut writer, birth.map(|p| vec![p])).await {
            return Ended::Lost(e);
        }
        // A PINGREQ every half keep-alive; a missing PINGRESP by the next tick means the link is
        // half-open (the broker's side is gone but no RST reached us).
        let half = (self.config.keep_alive / 2).max(Duration::from_millis(100));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        let mut ping_outstanding = false;
        loop {
            if let Err(e) = self.refill(&mut writer).await {
                return Ended::Lost(e);
            }
            let step = tokio::select! {
                () = self.cancel.cancelled() => return self.close(reader, writer).await,
                packet = reader.read() => match packet {
                    Ok(Packet::PingResp) => { ping_outstanding = false; Ok(()) }
                    Ok(packet) => self.handle(packet, &mut writer).await,
                    Err(e) => Err(e),
                },
                changed = self.progress.changed(), if self.session.room() > 0 => {
                    changed.map_err(|_| UplinkError::Queue(QueueError::Closed))
                }
                sample = self.live.rx.recv(), if self.live_open => match sample {
                    Some(sample) => {
                        let topic = message::sample_topic(&self.config.topic_prefix, &sample);
                        let payload = message::sample_payload(&sample, None);
                        let publish = self.session.publish_live(topic, payload, sample.retain);
                        writer.write(&[publish]).await
                    }
                    None => { self.live_open = false; Ok(()) }
                },
                _ = ping.tick() => {
                    if ping_outstanding {
                        Err(UplinkError::Timeout("PINGRESP"))
                    } else {
                        ping_outstanding = true;
                        writer.write(&[Packet::PingReq]).await
                    }
                }
            };
            if let Err(e) = step {
                return Ended::Lost(e);
            }
        }
    }

    /// Sends queued rows after the session's cursor while the window has room.
    async fn refill(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        loop {
            let last_seq = self.progress.borrow_and_update().last_seq;
            let room = self.session.room();
            if room == 0 || last_seq <= self.session.cursor() {
                return Ok(());
            }
            let rows = match self.queue.fetch(self.session.cursor(), room).await {
                Ok(rows) => rows,
                // A row that cannot be decoded can never be published. It is skipped, not
                // deleted, so it stays in the file for inspection; everything after it flows.
                Err(QueueError::Decode {
                    seq,
                    column,
                    reason,
                }) => {
                    error!(seq, column, %reason, "skipping an undecodable queue row");
                    self.session.skip_to(seq);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if rows.is_empty() {
                // Everything up to last_seq was acknowledged meanwhile.
                self.session.skip_to(last_seq);
                return Ok(());
            }
            let mut packets = Vec::with_capacity(rows.len());
            for row in rows {
                let topic = message::sample_topic(&self.config.topic_prefix, &row.sample);
                let payload = message::sample_payload(&row.sample, Some(row.seq));
                packets.push(self.session.publish_sample(
                    row.seq,
                    topic,
                    payload,
                    row.sample.qos,
                    row.sample.retain,
                )?);
            }
            writer.write(&packets).await?;
        }
    }

    async fn handle(
        &mut self,
        packet: Packet,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        match packet {
            Packet::PubAck(ack) => {
                let released = self.session.on_puback(ack.pkid)?;
                self.release(released).await
            }
            Packet::PubRec(rec) => {
                let rel = self.session.on_pubrec(rec.pkid)?;
                writer.write(&[rel]).await
            }
            Packet::PubComp(comp) => {
                let released = self.session.on_pubcomp(comp.pkid)?;
                self.release(released).await
            }
            Packet::PingResp => Ok(()),
            // Nothing is subscribed in contract v1; acknowledge so the broker does not resend.
            Packet::Publish(publish) => {
                debug!(topic = %publish.topic, "ignoring unexpected incoming publish");
                match publish.qos {
                    QoS::AtLeastOnce => {
                        writer
                            .write(&[Packet::PubAck(PubAck::new(publish.pkid))])
                            .await
                    }
                    QoS::AtMostOnce | QoS::ExactlyOnce => Ok(()),
                }
            }
            other => Err(UplinkError::UnexpectedPacket(packet_name(&other))),
        }
    }

    async fn release(&self, released: Released) -> Result<(), UplinkError> {
        match released {
            Released::Sample(seq) => Ok(self.queue.ack(seq).await?),
            Released::Status => Ok(()),
        }
    }

    /// Graceful end of a connection on shutdown.
    async fn close(&mut self, mut reader: PacketReader, mut writer: PacketWriter) -> Ended {
        let death = self.session.publish_status(
            self.status_topic.clone(),
            message::death_payload(now_ms(), OfflineReason::Shutdown),
        );
        if let Err(error) = self.write_all(&mut writer, death.map(|p| vec![p])).await {
            warn!(%error, "could not publish the offline status");
            return Ended::Shutdown;
        }
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while self.session.inflight() > 0 {
            let step = tokio::select! {
                () = &mut grace => break,
                packet = reader.read() => match packet {
                    Ok(packet) => self.handle(packet, &mut writer).await,
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

    async fn write_all(
        &mut self,
        writer: &mut PacketWriter,
        packets: Result<Vec<Packet>, super::session::SessionError>,
    ) -> Result<(), UplinkError> {
        writer.write(&packets?).await
    }

    /// QoS 0 samples that waited while the link was down are stale: contract v1 sends QoS 0 only
    /// while connected.
    fn discard_stale_live(&mut self) {
        let mut discarded = 0usize;
        while self.live.rx.try_recv().is_ok() {
            discarded += 1;
        }
        if discarded > 0 {
            info!(
                discarded,
                "dropped QoS 0 samples taken while the uplink was down"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;

    use crate::queue::QueueOptions;

    /// A scripted broker end of one connection.
    struct FakeBroker {
        stream: TcpStream,
        buf: BytesMut,
    }

    impl FakeBroker {
        /// The next packet, or `None` when the client closed the connection.
        async fn next(&mut self) -> Option<Packet> {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(packet) => return Some(packet),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("client sent garbage: {e}"),
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        }

        async fn send(&mut self, packet: Packet) {
            let mut out = BytesMut::new();
            packet.write(&mut out, 1 << 20).unwrap();
            self.stream.write_all(&out).await.unwrap();
        }

        async fn accept(listener: &TcpListener) -> FakeBroker {
            let (stream, _) = listener.accept().await.unwrap();
            let mut broker = FakeBroker {
                stream,
                buf: BytesMut::new(),
            };
            match broker.next().await {
                Some(Packet::Connect(c)) => {
                    assert_eq!(c.keep_alive, 10);
                    let will = c.last_will.expect("a Last Will");
                    assert!(will.retain);
                    assert_eq!(will.topic, "p/status");
                }
                other => panic!("expected CONNECT, got {other:?}"),
            }
            broker
                .send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                )))
                .await;
            broker
        }
    }

    /// A half-open link (the broker stops answering, no RST) is torn down once a PINGRESP is
    /// missing, and the uplink dials again after its backoff. Timers run on paused time.
    #[tokio::test(start_paused = true)]
    async fn missing_pingresp_tears_the_link_down_and_redials() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, live, writer) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = UplinkConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            client_id: "t".into(),
            keep_alive: Duration::from_secs(10),
            topic_prefix: "p".into(),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(1),
        };
        let cancel = CancellationToken::new();
        let (state, _) = watch::channel(LinkState::default());
        let task = tokio::spawn(run(config, queue.clone(), live, state, cancel.clone()));

        let mut first = FakeBroker::accept(&listener).await;
        let connected = Instant::now();
        match first.next().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, "p/status");
                assert!(p.retain);
            }
            other => panic!("expected the birth, got {other:?}"),
        }
        // The broker goes silent: no PUBACK, no PINGRESP.
        assert_eq!(first.next().await, Some(Packet::PingReq));
        assert_eq!(
            connected.elapsed().as_secs(),
            5,
            "PINGREQ at half the keep-alive"
        );
        assert_eq!(first.next().await, None, "link torn down");
        assert_eq!(
            connected.elapsed().as_secs(),
            10,
            "one ping interval without PINGRESP"
        );

        let mut second = FakeBroker::accept(&listener).await;
        assert!(
            connected.elapsed() <= Duration::from_secs(11),
            "redial within the backoff"
        );
        assert!(
            matches!(second.next().await, Some(Packet::Publish(_))),
            "birth again"
        );

        cancel.cancel();
        task.await.unwrap();
        drop(queue);
        writer.close().await.unwrap();
    }
}
