//! One MQTT 3.1.1 or MQTT 5 connection over a [`Stream`], framed with rumqttc's packet codecs
//! (`rumqttc::mqttbytes::v4`, and `v5` through [`mqtt5`]). Both hand out and take the same
//! (v4) packets; what only MQTT 5 says comes as its own [`Received`] variant ([`Refusal`]), as
//! [`UplinkError::ServerDisconnect`], or in [`Accepted::limits`]. Only the codec is used: rumqttc's event loop cannot tell which
//! publish a PUBACK belongs to and drops pending publishes on a clean session, so the session
//! logic is our own ([`super::session`]). Like [`super::transport`], nothing here knows about the
//! queue, so a second connection (the on-site broker's, [`crate::local`]) reuses it.
//!
//! The connection is split in a reader and a writer so the link task can wait for incoming
//! packets while it writes. [`PacketReader::read`] is cancel-safe (its only await is
//! `read_buf`, which either appended bytes to the buffer or did nothing), so it can sit in a
//! `select!` that other branches win. Writes are bounded by a deadline: a peer that stops reading
//! (a stalled WAN link) fails the write instead of blocking the task forever.
//!
//! # Oversized PUBLISHes
//! A PUBLISH longer than [`MAX_INCOMING_PACKET`] is not an error of the connection: renewing
//! it would only make the broker deliver the same message again, forever. The reader parses its
//! fixed and variable header (topic, packet id, flags), hands it over as
//! [`Received::Oversized`], and discards the payload as it streams in, never holding more of it
//! than one socket read. Any other packet over the limit is a protocol error (a broker sends
//! nothing else that large).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Connect, LastWill, Packet, Publish};
use rumqttc::mqttbytes::{self, QoS};
use rumqttc::v5::mqttbytes as v5bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::alias::Aliases;
use super::limits::BrokerLimits;
use super::transport::{Dialer, Stream};
use super::UplinkError;

mod mqtt5;

/// Largest packet read whole from the broker. Commands are at most 16 KiB of payload (larger
/// ones are refused unread), so 64 KiB leaves room for the longest topic while a misbehaving
/// peer cannot grow the buffer; a longer PUBLISH is skipped as it streams in.
pub const MAX_INCOMING_PACKET: usize = 64 * 1024;
/// Largest packet we write; MQTT's own limit is 256 MiB, samples are tiny.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

pub struct PacketReader {
    half: ReadHalf<Stream>,
    buf: BytesMut,
    /// Largest packet read whole ([`MAX_INCOMING_PACKET`] unless set).
    max: usize,
    /// Bytes of an oversized PUBLISH's payload still to be discarded as they arrive.
    skip: u64,
    /// Whether the connection speaks MQTT 5.
    mqtt5: bool,
}

/// What the reader took off the wire.
#[derive(Debug)]
pub enum Received {
    Packet(Packet),
    /// A PUBLISH over [`MAX_INCOMING_PACKET`]: its header, the payload discarded unread.
    Oversized(OversizedPublish),
    /// MQTT 5 only: a PUBACK or PUBREC whose reason code is not a success.
    Refused(Refusal),
    /// MQTT 5 only: a PUBLISH with request properties (a Response Topic, Correlation Data, a
    /// Message Expiry Interval); one without any comes as a [`Received::Packet`].
    Request(Publish, Request),
}

/// What an MQTT 5 PUBLISH asks of its receiver, as the broker forwarded it. Nothing here is
/// validated: it is the requester's (`commands/request.rs` checks it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Response Topic: where the requester waits for the answer.
    pub response_topic: Option<String>,
    /// Correlation Data, echoed with the answer.
    pub correlation: Option<Bytes>,
    /// Message Expiry Interval: the seconds of lifetime the message has left (§3.3.2.3.3).
    pub expiry: Option<u32>,
}

/// A PUBACK or PUBREC refusing the message of `pkid` (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub pkid: u16,
    /// `PUBACK` or `PUBREC`.
    pub packet: &'static str,
    /// The reason code (0x80 and above, see [`super::reason`]).
    pub code: u8,
    /// The broker's Reason String, if it sent one.
    pub reason: Option<String>,
}

/// A successful CONNACK.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub session_present: bool,
    /// MQTT 5: what the broker announced; `None` under MQTT 3.1.1.
    pub limits: Option<BrokerLimits>,
}

/// The header of a PUBLISH too large to read (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedPublish {
    pub topic: String,
    pub pkid: u16,
    pub qos: QoS,
    pub dup: bool,
    pub retain: bool,
    /// Payload bytes, discarded.
    pub payload_len: u64,
}

pub struct PacketWriter {
    half: WriteHalf<Stream>,
    buf: BytesMut,
    deadline: Duration,
    /// MQTT 5: the connection's topic aliases and the broker's Maximum Packet Size.
    mqtt5: Option<(Aliases, Option<u32>)>,
}

/// What the CONNECT carries besides the client id.
pub struct ConnectOptions<'a> {
    pub client_id: &'a str,
    pub keep_alive: Duration,
    /// `true`: the broker discards any session of this client id now and at disconnect.
    pub clean_session: bool,
    pub will_topic: String,
    pub will_payload: bytes::Bytes,
    /// The will is published at QoS 1; retained (the JSON status) or not (Sparkplug's NDEATH).
    pub will_retain: bool,
    /// Speak MQTT 5 with these settings; `None`: MQTT 3.1.1.
    pub mqtt5: Option<Mqtt5Connect>,
}

/// What an MQTT 5 CONNECT carries besides [`ConnectOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mqtt5Connect {
    /// Session Expiry Interval, seconds (0: the session ends with the connection).
    pub session_expiry: u32,
    /// Will Delay Interval, seconds.
    pub will_delay: u32,
}

/// Dials the broker, sends CONNECT and waits for a successful CONNACK, all within `deadline`.
pub async fn connect(
    dialer: &Dialer,
    options: ConnectOptions<'_>,
    deadline: Duration,
) -> Result<(PacketReader, PacketWriter, Accepted), UplinkError> {
    let attempt = async {
        let credentials = dialer.credentials()?;
        let stream = dialer.dial().await?;
        let (read, write) = tokio::io::split(stream);
        let v5 = options.mqtt5;
        let mut reader = PacketReader {
            half: read,
            buf: BytesMut::with_capacity(4096),
            max: MAX_INCOMING_PACKET,
            skip: 0,
            mqtt5: v5.is_some(),
        };
        let mut writer = PacketWriter {
            half: write,
            buf: BytesMut::with_capacity(4096),
            deadline,
            mqtt5: None,
        };
        if let Some(v5) = v5 {
            let connect = mqtt5::connect(options, v5.session_expiry, v5.will_delay, credentials);
            writer.write_raw(&connect).await?;
            let ack = reader.read_connack().await?;
            mqtt5::accepted(&ack)?;
            let limits = BrokerLimits::from_connack(ack.properties.as_ref());
            writer.mqtt5 = Some((Aliases::new(limits.topic_alias_max), limits.max_packet));
            let accepted = Accepted {
                session_present: ack.session_present,
                limits: Some(limits),
            };
            return Ok((reader, writer, accepted));
        }
        let mut connect = Connect::new(options.client_id);
        connect.keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = options.clean_session;
        connect.last_will = Some(LastWill {
            topic: options.will_topic,
            message: options.will_payload,
            qos: QoS::AtLeastOnce,
            retain: options.will_retain,
        });
        if let Some((user, password)) = credentials {
            connect.set_login(user, password);
        }
        writer.write(&[Packet::Connect(connect)]).await?;
        match reader.read().await? {
            Received::Packet(Packet::ConnAck(ack))
                if ack.code == mqttbytes::v4::ConnectReturnCode::Success =>
            {
                let accepted = Accepted {
                    session_present: ack.session_present,
                    limits: None,
                };
                Ok((reader, writer, accepted))
            }
            Received::Packet(Packet::ConnAck(ack)) => {
                Err(UplinkError::Refused(format!("{:?}", ack.code)))
            }
            Received::Packet(other) => Err(UplinkError::UnexpectedPacket(packet_name(&other))),
            Received::Oversized(_) | Received::Refused(_) | Received::Request(..) => {
                Err(UplinkError::UnexpectedPacket("PUBLISH"))
            }
        }
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .map_err(|_| UplinkError::Timeout("connect"))?
}

/// Most packets handled as one batch ([`PacketReader::batch`]): one commit for their PUBRECs,
/// one hand-over of their commands.
pub const MAX_BATCH: usize = 1024;

impl PacketReader {
    /// Whether the connection speaks MQTT 5.
    pub fn speaks_mqtt5(&self) -> bool {
        self.mqtt5
    }

    /// Reads PUBLISHes up to `max` bytes whole (a connection that takes whole configuration
    /// files); never below [`MAX_INCOMING_PACKET`].
    pub fn set_max_packet(&mut self, max: usize) {
        self.max = max.max(MAX_INCOMING_PACKET);
    }

    /// `first` and every complete packet already buffered behind it, at most [`MAX_BATCH`]
    /// (the rest waits for the next [`PacketReader::read`], which takes the buffer first).
    pub fn batch(&mut self, first: Received) -> Result<Vec<Received>, UplinkError> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.buffered()? {
                Some(packet) => batch.push(packet),
                None => break,
            }
        }
        Ok(batch)
    }

    /// Next packet from the broker. Cancel-safe.
    pub async fn read(&mut self) -> Result<Received, UplinkError> {
        loop {
            if let Some(packet) = self.buffered()? {
                return Ok(packet);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(UplinkError::Closed);
            }
        }
    }

    /// A packet that is already complete in the buffer, without waiting for the socket: lets
    /// the link handle a burst of acknowledgements as one batch (one commit).
    pub fn buffered(&mut self) -> Result<Option<Received>, UplinkError> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len() as u64);
            self.buf.advance(n as usize);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if self.mqtt5 {
            return self.buffered_v5();
        }
        match Packet::read(&mut self.buf, self.max) {
            Ok(packet) => {
                self.shrink();
                Ok(Some(Received::Packet(packet)))
            }
            Err(mqttbytes::Error::InsufficientBytes(needed)) => {
                self.buf.reserve(needed);
                Ok(None)
            }
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => self.oversized(size),
            Err(e) => Err(UplinkError::Protocol(e)),
        }
    }

    /// [`PacketReader::buffered`] with the MQTT 5 codec.
    fn buffered_v5(&mut self) -> Result<Option<Received>, UplinkError> {
        // rumqttc cannot read a DISCONNECT of fewer than 2 bytes after its fixed header, which
        // MQTT 5 allows (§3.14.2.1: no reason code means 0x00, no properties mean none).
        if let [0xE0, len @ (0 | 1), rest @ ..] = &self.buf[..] {
            let code = match (len, rest.first()) {
                (0, _) => 0,
                (_, Some(&code)) => code,
                (_, None) => return Ok(None),
            };
            self.buf.advance(2 + usize::from(*len));
            return Err(UplinkError::ServerDisconnect {
                code,
                meaning: super::reason::meaning(code),
                reference: None,
                reason: None,
            });
        }
        let max = u32::try_from(self.max).unwrap_or(u32::MAX);
        let before = self.buf.len();
        match v5bytes::v5::Packet::read(&mut self.buf, Some(max)) {
            Ok(packet) => {
                self.shrink();
                mqtt5::incoming(packet).map(Some)
            }
            Err(v5bytes::Error::InsufficientBytes(needed)) if self.buf.len() == before => {
                self.buf.reserve(needed);
                Ok(None)
            }
            // The frame was whole (and is consumed): its contents are short.
            Err(v5bytes::Error::InsufficientBytes(_)) => {
                Err(UplinkError::Protocol5(v5bytes::Error::MalformedPacket))
            }
            Err(v5bytes::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
                self.oversized(pkt_size)
            }
            Err(e) => Err(UplinkError::Protocol5(e)),
        }
    }

    /// A whole pushed configuration grew the buffer: give the memory back once it is read
    /// rather than keep it for the connection's life.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > MAX_INCOMING_PACKET {
            self.buf = BytesMut::with_capacity(4096);
        }
    }

    /// The packet at the start of the buffer is over the limit: skip it if it is a PUBLISH.
    fn oversized(&mut self, size: usize) -> Result<Option<Received>, UplinkError> {
        match oversized_header(&self.buf, self.mqtt5)? {
            None => Ok(None),
            Some((publish, header_len)) => {
                self.skip = publish.payload_len;
                self.buf.advance(header_len);
                tracing::debug!(size, topic = %publish.topic, "skipping an oversized publish");
                Ok(Some(Received::Oversized(publish)))
            }
        }
    }

    /// The CONNACK of an MQTT 5 connection.
    async fn read_connack(&mut self) -> Result<v5bytes::v5::ConnAck, UplinkError> {
        loop {
            let max = u32::try_from(self.max).unwrap_or(u32::MAX);
            match v5bytes::v5::Packet::read(&mut self.buf, Some(max)) {
                Ok(v5bytes::v5::Packet::ConnAck(ack)) => return Ok(ack),
                Ok(v5bytes::v5::Packet::Disconnect(d)) => {
                    let code = d.reason_code as u8;
                    return Err(UplinkError::Refused(format!(
                        "{code:#04x} {}",
                        super::reason::meaning(code)
                    )));
                }
                Ok(_) => return Err(UplinkError::UnexpectedPacket("a packet before CONNACK")),
                Err(v5bytes::Error::InsufficientBytes(needed)) => self.buf.reserve(needed),
                Err(e) => return Err(UplinkError::Protocol5(e)),
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(UplinkError::Closed);
            }
        }
    }
}

/// The header of an oversized packet at the start of `buf` and its length (fixed and variable
/// header), or `None` until all of it is in. Only a PUBLISH may be oversized.
fn oversized_header(
    buf: &[u8],
    mqtt5: bool,
) -> Result<Option<(OversizedPublish, usize)>, UplinkError> {
    let protocol = |e| Err(UplinkError::Protocol(e));
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: u64 = 0;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        remaining |= u64::from(byte & 0x7F) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return protocol(mqttbytes::Error::MalformedRemainingLength);
        }
    }
    if byte1 >> 4 != 3 {
        return protocol(mqttbytes::Error::PayloadSizeLimitExceeded(
            usize::try_from(remaining).unwrap_or(usize::MAX),
        ));
    }
    let qos = match (byte1 >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        q => return protocol(mqttbytes::Error::InvalidQoS(q)),
    };
    let Some(len) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let topic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let pkid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let mut variable = 2 + topic_len + pkid_len;
    if mqtt5 {
        // The properties follow the packet id: their length (a variable byte integer) and them.
        let mut props: usize = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = buf.get(at + variable) else {
                return Ok(None);
            };
            props |= usize::from(byte & 0x7F) << shift;
            variable += 1;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return protocol(mqttbytes::Error::MalformedRemainingLength);
            }
        }
        variable += props;
    }
    let Some(payload_len) = remaining.checked_sub(variable as u64) else {
        return protocol(mqttbytes::Error::BoundaryCrossed(topic_len));
    };
    let Some(variable_header) = buf.get(at + 2..at + 2 + topic_len + pkid_len) else {
        return Ok(None);
    };
    if buf.len() < at + variable {
        return Ok(None);
    }
    let (topic, pkid) = variable_header.split_at(topic_len);
    let pkid = match pkid {
        [hi, lo] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    };
    let publish = OversizedPublish {
        topic: String::from_utf8_lossy(topic).into_owned(),
        pkid,
        qos,
        dup: byte1 & 0x08 != 0,
        retain: byte1 & 0x01 != 0,
        payload_len,
    };
    Ok(Some((publish, at + variable)))
}

impl PacketWriter {
    /// Encodes `packets` and writes them in one go.
    pub async fn write(&mut self, packets: &[Packet]) -> Result<(), UplinkError> {
        self.write_expiring(packets, &[]).await
    }

    /// Like [`PacketWriter::write`]; under MQTT 5 the PUBLISH `packets[i]` carries the Message
    /// Expiry Interval `expiries[i]` (ignored under MQTT 3.1.1, which has none).
    pub async fn write_expiring(
        &mut self,
        packets: &[Packet],
        expiries: &[Option<u32>],
    ) -> Result<(), UplinkError> {
        self.write_v5(packets, expiries, &[]).await
    }

    /// Like [`PacketWriter::write_expiring`]; under MQTT 5 the PUBLISH `packets[i]` also
    /// carries the Correlation Data `correlations[i]` (an answer to a request).
    pub async fn write_v5(
        &mut self,
        packets: &[Packet],
        expiries: &[Option<u32>],
        correlations: &[Option<Bytes>],
    ) -> Result<(), UplinkError> {
        if packets.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for (i, packet) in packets.iter().enumerate() {
            match self.mqtt5.as_mut() {
                None => {
                    packet
                        .write(&mut self.buf, MAX_OUTGOING_PACKET)
                        .map_err(UplinkError::Protocol)?;
                }
                Some((aliases, max_packet)) => {
                    let expiry = expiries.get(i).copied().flatten();
                    let correlation = correlations.get(i).cloned().flatten();
                    let max = max_packet.unwrap_or(MAX_OUTGOING_PACKET as u32);
                    mqtt5::outgoing(packet, expiry, correlation, aliases)?
                        .write(&mut self.buf, Some(max))
                        .map_err(UplinkError::Protocol5)?;
                }
            }
        }
        self.flush_buf().await
    }

    /// Topic bytes saved by aliases since the last call (MQTT 5).
    pub fn take_alias_savings(&mut self) -> u64 {
        self.mqtt5
            .as_mut()
            .map_or(0, |(aliases, _)| aliases.take_saved())
    }

    /// An MQTT 5 packet as it is (the CONNECT).
    async fn write_raw(&mut self, packet: &v5bytes::v5::Packet) -> Result<(), UplinkError> {
        self.buf.clear();
        packet
            .write(&mut self.buf, None)
            .map_err(UplinkError::Protocol5)?;
        self.flush_buf().await
    }

    async fn flush_buf(&mut self) -> Result<(), UplinkError> {
        let write = async {
            self.half.write_all(&self.buf).await?;
            // TLS buffers records; flushing puts them on the wire now.
            self.half.flush().await
        };
        tokio::time::timeout(self.deadline, write)
            .await
            .map_err(|_| UplinkError::Timeout("write"))??;
        Ok(())
    }

    /// Sends DISCONNECT (so the broker discards the Last Will) and closes the stream.
    pub async fn disconnect(mut self) -> Result<(), UplinkError> {
        self.write(&[Packet::Disconnect]).await?;
        tokio::time::timeout(self.deadline, self.half.shutdown())
            .await
            .map_err(|_| UplinkError::Timeout("close"))??;
        Ok(())
    }
}

pub fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_mqtt5_publish_header_skips_its_properties() {
        // PUBLISH QoS 1, topic "t/x", pkid 5, properties: message expiry (5 bytes), payload 1000.
        let mut packet = vec![0x32];
        let remaining = 2 + 3 + 2 + 1 + 5 + 1000;
        packet.extend([0x80 | (remaining & 0x7F) as u8, (remaining >> 7) as u8]);
        packet.extend([0, 3, b't', b'/', b'x', 0, 5, 5, 0x02, 0, 0, 0, 60]);
        let (publish, header) = oversized_header(&packet, true).unwrap().unwrap();
        assert_eq!((publish.topic.as_str(), publish.pkid), ("t/x", 5));
        assert_eq!((publish.payload_len, header), (1000, packet.len()));
        assert!(oversized_header(&packet[..packet.len() - 1], true)
            .unwrap()
            .is_none());
    }
}
