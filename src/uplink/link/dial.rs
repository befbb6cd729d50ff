//! The link's outer loop: dial, serve the connection ([`Link::connected`](super::Link)), redial
//! with backoff until cancelled. A persistent session first learns from the queue whether the
//! broker's stored session is ours (the peer recorded with it); an unknown one is cleared by a
//! clean connection before the persistent one. A server's DISCONNECT that asks to slow down
//! (MQTT 5) redials at the backoff's ceiling; every failure to connect is logged at the pace
//! of [`FailureLog`], the console shows the same attempt and delay.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{mqtt5, Ended, Link};
use crate::backoff::{unlogged_suffix, Backoff, FailureLog};
use crate::config::SessionMode;
use crate::sample::now_ms;
use crate::uplink::connection::{self, Accepted, ConnectOptions, Mqtt5Connect};
use crate::uplink::connection::{PacketReader, PacketWriter};
use crate::uplink::{LinkState, UplinkError};

/// Deadline for TCP connect, TLS handshake and CONNECT/CONNACK; also bounds each write.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A duration as MQTT 5's 32-bit seconds.
fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// The pace of redials and of their log lines.
struct Redial {
    backoff: Backoff,
    failure_log: FailureLog,
}

impl Link {
    pub(super) async fn run(&mut self) {
        let mut redial = Redial {
            backoff: Backoff::new(self.config.reconnect_initial, self.config.reconnect_max),
            failure_log: FailureLog::default(),
        };
        let persistent = self.config.session == SessionMode::Persistent;
        while !self.cancel.is_cancelled() {
            if persistent && self.fresh_start.is_none() && !self.learn_session_owner().await {
                return;
            }
            let fresh_start = self.fresh_start == Some(true);
            let options = self.connect_options(persistent, fresh_start);
            let attempt = tokio::select! {
                attempt = connection::connect(&self.dialer, options, CONNECT_TIMEOUT) => attempt,
                () = self.cancel.cancelled() => break,
            };
            let broker = self.dialer.endpoint();
            let mut failed = None;
            let mut longest = false;
            match attempt {
                Ok((_reader, writer, _ack)) if fresh_start => {
                    match self.start_fresh_session(writer).await {
                        Ok(()) => {
                            info!(%broker, "uplink cleared an unknown broker session; reconnecting with a persistent session");
                            self.fresh_start = Some(false);
                            continue;
                        }
                        Err(error) => {
                            self.stats.failed(&error);
                            warn!(%error, "uplink could not start a fresh session")
                        }
                    }
                }
                Ok((reader, writer, ack)) => {
                    let resumed = persistent && ack.session_present;
                    match self.serve(reader, writer, ack, resumed, &mut redial).await {
                        Ended::Shutdown => return,
                        Ended::Lost(error) => {
                            self.stats.lost();
                            self.down_since_ms = Some(now_ms());
                            self.stats.failed(&error);
                            longest = mqtt5::server_disconnect(&error);
                        }
                    }
                }
                Err(error) => {
                    self.stats.connect_failed();
                    self.stats.failed(&error);
                    self.down_since_ms = Some(now_ms());
                    failed = Some(error);
                }
            }
            if self.queue.is_closed() {
                return;
            }
            let delay = self.redial_delay(&mut redial, longest, failed, &broker);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => break,
            }
        }
    }

    /// Asks the queue whose session the broker holds; false: the queue cannot say, stop.
    async fn learn_session_owner(&mut self) -> bool {
        match self.queue.session_peer().await {
            Ok(stored) => {
                self.fresh_start = Some(stored != Some(self.peer()));
                true
            }
            Err(error) => {
                error!(%error, "uplink cannot read the session owner from the queue; stopping");
                false
            }
        }
    }

    fn connect_options(&self, persistent: bool, fresh_start: bool) -> ConnectOptions<'_> {
        ConnectOptions {
            client_id: &self.config.client_id,
            keep_alive: self.config.keep_alive,
            clean_session: !persistent || fresh_start,
            will_topic: self.status_topic.clone(),
            will_payload: self.presence.will(now_ms()),
            will_retain: true,
            mqtt5: self.config.protocol.mqtt5().map(|v5| Mqtt5Connect {
                session_expiry: if persistent {
                    secs(v5.session_expiry)
                } else {
                    0
                },
                will_delay: secs(v5.will_delay),
            }),
        }
    }

    /// The clean connection made to drop an unknown broker session: reset the stored states,
    /// record the peer, disconnect.
    async fn start_fresh_session(&mut self, writer: PacketWriter) -> Result<(), UplinkError> {
        self.queue.reset_session().await?;
        self.queue.set_session_peer(self.peer()).await?;
        writer.disconnect().await
    }

    /// One accepted connection, from the CONNACK's limits to its end.
    async fn serve(
        &mut self,
        mut reader: PacketReader,
        writer: PacketWriter,
        ack: Accepted,
        resumed: bool,
        redial: &mut Redial,
    ) -> Ended {
        let broker = self.dialer.endpoint();
        info!(%broker, session_present = ack.session_present, "uplink connected");
        self.apply_limits(ack.limits.clone());
        reader.set_max_packet(self.inflow.max_packet());
        // After a teardown for an unacknowledged command the redelivered command may fail
        // again (a full disk): only a connection that did not end that way resets the
        // backoff, so such a failure redials at the backoff's pace.
        if !self.inflow.on_connected() {
            redial.backoff.reset();
        }
        redial.failure_log.reset();
        self.stats.connected();
        self.state.send_replace(LinkState::Connected);
        let ended = self.connected(reader, writer, resumed).await;
        self.state.send_replace(LinkState::Connecting);
        ended
    }

    /// The wait before the next dial (the backoff's ceiling when the broker asked to slow
    /// down), shown on the console and logged for a failed connect.
    fn redial_delay(
        &self,
        redial: &mut Redial,
        longest: bool,
        failed: Option<UplinkError>,
        broker: &str,
    ) -> Duration {
        let backoff = &mut redial.backoff;
        let delay = if longest {
            backoff.next_delay();
            self.config.reconnect_max
        } else {
            backoff.next_delay()
        };
        // The console shows the same attempt and delay as the log line below.
        self.stats.redial_in(delay, backoff.failures());
        if let Some(error) = failed {
            match redial.failure_log.failed(Instant::now()) {
                Some(unlogged) => warn!(
                    %error, %broker, attempt = backoff.failures(), next_attempt_in = ?delay,
                    "uplink cannot connect; retrying with backoff, next attempt in {delay:.1?}{}",
                    unlogged_suffix(unlogged)
                ),
                None => debug!(%error, attempt = backoff.failures(), "uplink connect failed"),
            }
        }
        delay
    }
}
