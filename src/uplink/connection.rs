//! One MQTT 3.1.1 connection over a [`Stream`], framed with rumqttc's packet codec
//! (`rumqttc::mqttbytes::v4`). Only the codec is used: rumqttc's event loop cannot tell which
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

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, LastWill, Packet};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::transport::{Dialer, Stream};
use super::UplinkError;

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
}

/// What the reader took off the wire.
#[derive(Debug)]
pub enum Received {
    Packet(Packet),
    /// A PUBLISH over [`MAX_INCOMING_PACKET`]: its header, the payload discarded unread.
    Oversized(OversizedPublish),
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
}

/// Dials the broker, sends CONNECT and waits for a successful CONNACK, all within `deadline`.
pub async fn connect(
    dialer: &Dialer,
    options: ConnectOptions<'_>,
    deadline: Duration,
) -> Result<(PacketReader, PacketWriter, ConnAck), UplinkError> {
    let attempt = async {
        let credentials = dialer.credentials()?;
        let stream = dialer.dial().await?;
        let (read, write) = tokio::io::split(stream);
        let mut reader = PacketReader {
            half: read,
            buf: BytesMut::with_capacity(4096),
            max: MAX_INCOMING_PACKET,
            skip: 0,
        };
        let mut writer = PacketWriter {
            half: write,
            buf: BytesMut::with_capacity(4096),
            deadline,
        };
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
                Ok((reader, writer, ack))
            }
            Received::Packet(Packet::ConnAck(ack)) => {
                Err(UplinkError::Refused(format!("{:?}", ack.code)))
            }
            Received::Packet(other) => Err(UplinkError::UnexpectedPacket(packet_name(&other))),
            Received::Oversized(_) => Err(UplinkError::UnexpectedPacket("PUBLISH")),
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
        match Packet::read(&mut self.buf, self.max) {
            Ok(packet) => {
                // A whole pushed configuration grew the buffer: give the memory back once it
                // is read rather than keep it for the connection's life.
                if self.buf.is_empty() && self.buf.capacity() > MAX_INCOMING_PACKET {
                    self.buf = BytesMut::with_capacity(4096);
                }
                Ok(Some(Received::Packet(packet)))
            }
            Err(mqttbytes::Error::InsufficientBytes(needed)) => {
                self.buf.reserve(needed);
                Ok(None)
            }
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                match oversized_header(&self.buf)? {
                    None => Ok(None),
                    Some((publish, header_len)) => {
                        self.skip = publish.payload_len;
                        self.buf.advance(header_len);
                        tracing::debug!(size, topic = %publish.topic, "skipping an oversized publish");
                        Ok(Some(Received::Oversized(publish)))
                    }
                }
            }
            Err(e) => Err(UplinkError::Protocol(e)),
        }
    }
}

/// The header of an oversized packet at the start of `buf` and its length (fixed and variable
/// header), or `None` until all of it is in. Only a PUBLISH may be oversized.
fn oversized_header(buf: &[u8]) -> Result<Option<(OversizedPublish, usize)>, UplinkError> {
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
    let variable = 2 + topic_len + pkid_len;
    let Some(payload_len) = remaining.checked_sub(variable as u64) else {
        return protocol(mqttbytes::Error::BoundaryCrossed(topic_len));
    };
    let Some(variable_header) = buf.get(at + 2..at + variable) else {
        return Ok(None);
    };
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
        if packets.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for packet in packets {
            packet
                .write(&mut self.buf, MAX_OUTGOING_PACKET)
                .map_err(UplinkError::Protocol)?;
        }
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
