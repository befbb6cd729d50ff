//! What the broker delivers to the edge node: PINGRESPs (the delete barrier's confirmations),
//! the SUBACK, the primary host's STATE, NCMD (Rebirth) and DCMD (writes, handed to the command
//! pipeline).

use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Driver, UplinkError, SUBSCRIBE_PKID};
use crate::sparkplug::command::{self, RebirthDecision, Request, Target};
use crate::sparkplug::state::GateAction;
use crate::sparkplug::{payload, HostState, MessageType, Topic};
use crate::uplink::connection::{self, PacketReader, PacketWriter, Received};
use crate::uplink::inbound::Incoming;

impl Driver {
    /// Every packet of one read: PINGRESPs confirm rows (the delete barrier), the SUBACK
    /// starts the births, PUBLISHes are acknowledged and handled.
    pub(super) async fn on_packets(
        &mut self,
        first: Received,
        reader: &mut PacketReader,
        writer: &mut PacketWriter,
        subscribed: &mut bool,
    ) -> Result<(), UplinkError> {
        let mut out = Vec::new();
        for received in reader.batch(first)? {
            let packet = match received {
                Received::Packet(packet) => packet,
                // Only MQTT 5 refuses with a reason code; this profile speaks MQTT 3.1.1.
                Received::Refused(_) => return Err(UplinkError::UnexpectedPacket("PUBACK")),
                Received::Request(..) => return Err(UplinkError::UnexpectedPacket("PUBLISH")),
                Received::Oversized(publish) => {
                    warn!(topic = %publish.topic, size = publish.payload_len, "oversized message from the broker ignored");
                    if publish.qos != QoS::AtMostOnce {
                        out.push(Packet::PubAck(PubAck::new(publish.pkid)));
                    }
                    continue;
                }
            };
            match packet {
                Packet::PingResp => {
                    self.pings.pop_front();
                    match self.barrier.on_pingresp() {
                        Ok(rows) => self.delete(rows).await?,
                        Err(error) => {
                            return Err(UplinkError::UnexpectedPacket(barrier_name(error)))
                        }
                    }
                }
                Packet::SubAck(ack) if ack.pkid == SUBSCRIBE_PKID && !*subscribed => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure));
                    if refused {
                        return Err(UplinkError::Refused(
                            "subscription to NCMD/DCMD refused".into(),
                        ));
                    }
                    *subscribed = true;
                    if self.primary_host.is_none() {
                        self.births(writer).await?;
                    } else {
                        info!("sparkplug uplink waiting for the primary host's online STATE");
                    }
                }
                Packet::PubAck(_) | Packet::SubAck(_) => {}
                Packet::Publish(publish) => {
                    if publish.qos != QoS::AtMostOnce {
                        out.push(Packet::PubAck(PubAck::new(publish.pkid)));
                    }
                    self.on_publish(&publish, writer).await?;
                }
                other => {
                    return Err(UplinkError::UnexpectedPacket(connection::packet_name(
                        &other,
                    )))
                }
            }
        }
        writer.write(&out).await
    }

    /// An incoming PUBLISH: the host's STATE, an NCMD or a DCMD.
    pub(super) async fn on_publish(
        &mut self,
        publish: &Publish,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let topic = publish.topic.clone();
        match Topic::parse(&topic) {
            Ok(Topic::State { host }) if self.primary_host.as_deref() == Some(host) => {
                match HostState::parse(&publish.payload) {
                    Ok(state) => self.on_state(state, writer).await,
                    Err(error) => {
                        warn!(%topic, %error, "primary host STATE ignored");
                        Ok(())
                    }
                }
            }
            Ok(Topic::Edge {
                message: MessageType::NCmd,
                ..
            }) => {
                self.on_command(Target::Node, &publish.payload, publish.retain, writer)
                    .await
            }
            Ok(Topic::Edge {
                message: MessageType::DCmd,
                device: Some(device),
                ..
            }) => {
                let device = device.to_owned();
                self.on_command(
                    Target::Device(&device),
                    &publish.payload,
                    publish.retain,
                    writer,
                )
                .await
            }
            _ => {
                debug!(%topic, "message on an unexpected topic ignored");
                Ok(())
            }
        }
    }

    async fn on_state(
        &mut self,
        state: HostState,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        match self.host.on_state(state) {
            GateAction::Birth => {
                info!(
                    timestamp = state.timestamp,
                    "primary host online; publishing births"
                );
                self.births(writer).await
            }
            GateAction::Disconnect => {
                info!(
                    timestamp = state.timestamp,
                    "primary host offline; NDEATH and reconnect"
                );
                self.host_went_offline = true;
                Ok(())
            }
            GateAction::Ignore(why) => {
                debug!(
                    ?why,
                    online = state.online,
                    timestamp = state.timestamp,
                    "STATE changes nothing"
                );
                Ok(())
            }
        }
    }

    async fn on_command(
        &mut self,
        target: Target<'_>,
        bytes: &[u8],
        retained: bool,
        writer: &mut PacketWriter,
    ) -> Result<(), UplinkError> {
        let command = match payload::decode_command(bytes) {
            Ok(command) => command,
            Err(error) => {
                warn!(%error, "sparkplug command refused");
                self.stats.skipped_row();
                return Ok(());
            }
        };
        let mut writes = Vec::new();
        let results = command::interpret(target, &command, self.node.aliases(), |d, p| {
            self.node.datatype_of(d, p)
        });
        for result in results {
            match result {
                Ok(Request::Rebirth) => match self.rebirth.request(Instant::now()) {
                    RebirthDecision::Now if self.cursors.is_some() => {
                        info!("rebirth requested by a host");
                        self.births(writer).await?;
                    }
                    RebirthDecision::Now | RebirthDecision::Coalesced => {}
                    RebirthDecision::At(at) => self.rebirth_at = Some(at),
                },
                Ok(Request::Nothing) => {}
                Ok(Request::Write(write)) => writes.push(write),
                Err(refusal) => warn!(%refusal, "sparkplug command metric refused"),
            }
        }
        self.hand_over(writes, retained).await;
        Ok(())
    }

    /// DCMD writes to the command pipeline, as the JSON commands `<prefix>/<device>/<point>/set`
    /// it checks and carries out (writable, type, range, age, device state, one at a time). They
    /// come without an acknowledgement token: the PUBLISH was acknowledged already (a clean
    /// session redelivers nothing), and Sparkplug has no result topic (the pipeline's result
    /// rows are settled without a message; the host sees the new value in DDATA).
    async fn hand_over(&mut self, writes: Vec<command::WriteRequest>, retained: bool) {
        let Some(inbound) = &self.commands else {
            if !writes.is_empty() {
                warn!(
                    count = writes.len(),
                    "sparkplug DCMD writes refused: no command path"
                );
            }
            return;
        };
        let batch: Vec<Incoming> = writes
            .into_iter()
            .map(|write| {
                let payload = match write.ts_ms {
                    Some(ts) => format!(r#"{{"value":{},"ts":{ts}}}"#, write.value.to_json()),
                    None => format!(r#"{{"value":{}}}"#, write.value.to_json()),
                };
                Incoming {
                    topic: format!(
                        "{}/{}/{}/set",
                        self.config.topic_prefix, write.device, write.point
                    ),
                    payload: bytes::Bytes::from(payload),
                    dup: false,
                    retained,
                    oversized: None,
                    ack: None,
                    request: None,
                }
            })
            .collect();
        inbound.hand_over(batch, &self.cancel).await;
    }
}

fn barrier_name(_: crate::sparkplug::barrier::BarrierError) -> &'static str {
    "PINGRESP"
}
