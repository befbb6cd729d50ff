//! One MQTT 3.1.1 connection over a [`Stream`], framed with rumqttc's packet codec
//! (`rumqttc::mqttbytes::v4`). Only the codec is used: rumqttc's event loop cannot tell which
//! publish a PUBACK belongs to and drops pending publishes on a clean session, so the session
//! logic is our own ([`super::session`]). Like [`super::transport`], nothing here knows about the
//! queue, so a second connection (the local broker of issue 6) reuses it.
//!
//! The connection is split in a reader and a writer so the link task can wait for incoming
//! packets while it writes. [`PacketReader::read`] is cancel-safe (its only await is
//! `read_buf`, which either appended bytes to the buffer or did nothing), so it can sit in a
//! `select!` that other branches win. Writes are bounded by a deadline: a peer that stops reading
//! (a stalled WAN link) fails the write instead of blocking the task forever.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, LastWill, Packet};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::transport::{Dialer, Stream};
use super::UplinkError;

/// Largest packet accepted from the broker: commands (issue 5) are small JSON documents; the
/// bound keeps a misbehaving peer from growing the buffer.
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest packet we write; MQTT's own limit is 256 MiB, samples are tiny.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

pub struct PacketReader {
    half: ReadHalf<Stream>,
    buf: BytesMut,
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
            retain: true,
        });
        if let Some((user, password)) = credentials {
            connect.set_login(user, password);
        }
        writer.write(&[Packet::Connect(connect)]).await?;
        match reader.read().await? {
            Packet::ConnAck(ack) if ack.code == mqttbytes::v4::ConnectReturnCode::Success => {
                Ok((reader, writer, ack))
            }
            Packet::ConnAck(ack) => Err(UplinkError::Refused(format!("{:?}", ack.code))),
            other => Err(UplinkError::UnexpectedPacket(packet_name(&other))),
        }
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .map_err(|_| UplinkError::Timeout("connect"))?
}

impl PacketReader {
    /// Next packet from the broker. Cancel-safe.
    pub async fn read(&mut self) -> Result<Packet, UplinkError> {
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
    pub fn buffered(&mut self) -> Result<Option<Packet>, UplinkError> {
        match Packet::read(&mut self.buf, MAX_INCOMING_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(needed)) => {
                self.buf.reserve(needed);
                Ok(None)
            }
            Err(e) => Err(UplinkError::Protocol(e)),
        }
    }
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
