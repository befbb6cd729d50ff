//! Links: how a bus owner puts one request on the wire and gets its reply (I/O).
//!
//! - [`TcpLink`]: Modbus TCP with MBAP framing of our own ([`super::mbap`]), one connection per
//!   bus. Every reply is checked against its request like an RTU one (transaction id, unit,
//!   function code, byte count and register or bit count, write echo): a frame with another
//!   transaction id answers an earlier request and is skipped as stale; a frame that answers
//!   this request wrongly is a protocol error, never a value, and the connection is dropped (a
//!   peer that sent it cannot be trusted to be in step). After a timeout the connection is
//!   dropped too (a half-open connection, or a device that answers much later) and the next
//!   request opens a new one.
//! - [`RtuLink`]: Modbus RTU framing of our own ([`super::frame`]) over a serial port (`rtu`) or
//!   a TCP stream (`rtu_over_tcp`). Stale replies are handled twice over: bytes waiting before a
//!   request are discarded, and a complete frame that does not answer the request (another unit,
//!   function or length: the late reply of an earlier, timed-out request) is counted as stale
//!   and skipped while the deadline lasts. A CRC error is returned as [`LinkError::Crc`]; the
//!   rest of that garbled reply is discarded before the next request.
//!
//! # When a transport is reopened
//! - **A broken transport** (an i/o error or end of stream on read, write or flush) is dropped
//!   on every kind of link, and the next exchange opens it again. On a serial port this is a
//!   USB RS-485 adapter unplugged (the kernel then fails every call on the old handle with
//!   `EIO`/`ENXIO`, forever) and plugged back in. A failed open fails that exchange at once
//!   ([`LinkError::OpenSerial`], [`LinkError::Connect`]): the owner counts it as an error and
//!   backs the device off, so a missing port is retried at backoff pace, never in a busy loop.
//! - **A line fault** (timeout, CRC error, garbled or foreign reply) reopens a TCP stream
//!   (late replies, a half-open connection) but keeps a serial port: on a shared RS-485 line a
//!   dead device times out on every poll, and reopening the port for that would cost every
//!   other device on it, and would not discard bytes still on the wire anyway
//!   ([`Opener::REOPEN_AFTER_LINE_FAULT`]).
//!
//! `serial_line` buses follow the same rule in their own task (see [`super::serial_line`]).
//!
//! Timeouts are the owner's: it wraps [`Link::transact`] in `tokio::time::timeout` and calls
//! [`Link::abandon`] when one fires. Connecting is part of `transact`, so it is under the same
//! deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, ParsedFrame, Reply, Request};
use super::mbap::{self, ParsedAdu};
use crate::config::{Parity, SerialSettings, StopBits};

/// Why an exchange failed (an exception is not a failure: it is a [`Reply`]).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot open serial port {port}: {reason}")]
    OpenSerial { port: String, reason: String },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("crc error in the reply")]
    Crc,
    #[error("modbus protocol error: {0}")]
    Protocol(String),
    #[error("request exceeds the protocol limits")]
    TooLarge,
}

impl LinkError {
    /// The transport itself failed (i/o error, end of stream) and must be reopened, as opposed
    /// to a fault of the line or of a device behind it.
    pub fn is_broken_transport(&self) -> bool {
        matches!(self, LinkError::Io(_))
    }
}

/// Counts that only the link can see, reported with each exchange.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkNotes {
    /// Frames received that answered an earlier request (skipped).
    pub stale_frames: u32,
}

/// One request at a time on one wire.
pub trait Link: Send {
    /// Sends `request` to `unit` and waits for its reply (connecting first if needed).
    fn transact(
        &mut self,
        unit: u8,
        request: &Request,
        notes: &mut LinkNotes,
    ) -> impl Future<Output = Result<Reply, LinkError>> + Send;

    /// The owner gave up waiting on the current exchange (timeout): whatever the link was in
    /// the middle of must not leak into the next exchange.
    fn abandon(&mut self);
}

/// Modbus TCP (MBAP framing, see the module docs).
pub struct TcpLink {
    host: String,
    port: u16,
    /// `None` until connected and after any failure (see the module docs).
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The transaction id of the last request.
    transaction: u16,
}

impl TcpLink {
    pub fn new(host: String, port: u16) -> Self {
        TcpLink {
            host,
            port,
            stream: None,
            buf: Vec::with_capacity(mbap::MAX_ADU),
            transaction: 0,
        }
    }
}

pub(crate) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, LinkError> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| LinkError::Resolve(format!("{host}:{port}")))?
        .next()
        .ok_or_else(|| LinkError::Resolve(format!("{host}:{port}")))
}

impl Link for TcpLink {
    async fn transact(
        &mut self,
        unit: u8,
        request: &Request,
        notes: &mut LinkNotes,
    ) -> Result<Reply, LinkError> {
        if !request.is_within_limits() {
            return Err(LinkError::TooLarge);
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpOpener {
                    host: self.host.clone(),
                    port: self.port,
                }
                .open()
                .await?;
                self.stream.insert(stream)
            }
        };
        // Bytes left from an abandoned exchange must not be framed as this reply.
        stream.discard_pending();
        self.buf.clear();
        self.transaction = self.transaction.wrapping_add(1);
        let result = exchange_tcp(
            stream,
            &mut self.buf,
            self.transaction,
            unit,
            request,
            notes,
        )
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn abandon(&mut self) {
        self.stream = None;
    }
}

async fn exchange_tcp(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    transaction: u16,
    unit: u8,
    request: &Request,
    notes: &mut LinkNotes,
) -> Result<Reply, LinkError> {
    stream
        .write_all(&mbap::encode(transaction, unit, request))
        .await?;
    loop {
        match mbap::parse_response(buf) {
            ParsedAdu::Incomplete(_) => read_more(stream, buf).await?,
            ParsedAdu::Frame {
                len,
                transaction: t,
                ..
            } if t != transaction => {
                // The late reply of an earlier request.
                notes.stale_frames += 1;
                buf.drain(..len);
            }
            ParsedAdu::Frame {
                unit: frame_unit,
                function,
                data,
                ..
            } => {
                return frame::interpret(request, unit, frame_unit, function, &data).map_err(
                    |mismatch| LinkError::Protocol(format!("malformed reply: {mismatch}")),
                )
            }
            ParsedAdu::Garbage(reason) => return Err(LinkError::Protocol(reason)),
        }
    }
}

/// Appends what the transport has next to `buf` (at most one frame's worth); the end of the
/// stream is an i/o error.
async fn read_more<T: AsyncRead + Unpin>(
    transport: &mut T,
    buf: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let mut chunk = [0u8; mbap::MAX_ADU];
    let n = transport.read(&mut chunk).await?;
    if n == 0 {
        return Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// A byte stream an RTU link can run on.
pub trait RtuTransport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Discards bytes already received and not read (a late reply); returns how many.
    fn discard_pending(&mut self) -> usize;
}

/// Reads and drops what `try_read` has without waiting; returns how many bytes.
fn discard_with(mut try_read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> usize {
    let mut buf = [0u8; 256];
    let mut total = 0;
    while let Ok(n @ 1..) = try_read(&mut buf) {
        total += n;
    }
    total
}

impl RtuTransport for TcpStream {
    fn discard_pending(&mut self) -> usize {
        discard_with(|buf| self.try_read(buf))
    }
}

impl RtuTransport for tokio_serial::SerialStream {
    fn discard_pending(&mut self) -> usize {
        discard_with(|buf| self.try_read(buf))
    }
}

impl RtuTransport for tokio::io::DuplexStream {
    fn discard_pending(&mut self) -> usize {
        use drain::poll_once_read;
        poll_once_read(self)
    }
}

/// Drains an in-memory stream without blocking (for tests on paused time).
mod drain {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, ReadBuf};

    pub fn poll_once_read<T: AsyncRead + Unpin>(stream: &mut T) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        let mut total = 0;
        loop {
            let mut raw = [0u8; 256];
            let mut buf = ReadBuf::new(&mut raw);
            match Pin::new(&mut *stream).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => total += buf.filled().len(),
                _ => return total,
            }
        }
    }
}

/// How an [`RtuLink`] (re)opens its transport.
pub trait Opener: Send {
    type Transport: RtuTransport;
    /// Whether a line fault (timeout, CRC error, unexpected bytes) also reopens the transport
    /// (TCP: yes; serial: no, see the module docs). A broken transport is always reopened.
    const REOPEN_AFTER_LINE_FAULT: bool;
    fn open(&mut self) -> impl Future<Output = Result<Self::Transport, LinkError>> + Send;
}

/// `rtu`: a serial port.
pub struct SerialOpener(pub SerialSettings);

impl Opener for SerialOpener {
    type Transport = tokio_serial::SerialStream;
    const REOPEN_AFTER_LINE_FAULT: bool = false;

    async fn open(&mut self) -> Result<Self::Transport, LinkError> {
        open_serial(&self.0)
    }
}

/// Opens a serial port with the bus's settings.
pub fn open_serial(settings: &SerialSettings) -> Result<tokio_serial::SerialStream, LinkError> {
    let builder = tokio_serial::new(settings.port.as_str(), settings.baud_rate)
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(match settings.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .stop_bits(match settings.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        })
        .flow_control(tokio_serial::FlowControl::None);
    let mut stream =
        tokio_serial::SerialStream::open(&builder).map_err(|error| LinkError::OpenSerial {
            port: settings.port.clone(),
            reason: error.to_string(),
        })?;
    // Exclusive access is the default; a second gateway on the same port fails loudly instead
    // of interleaving frames.
    let _ = stream.set_exclusive(true);
    Ok(stream)
}

/// `rtu_over_tcp`: a TCP connection to a serial device server.
pub struct TcpOpener {
    pub host: String,
    pub port: u16,
}

impl Opener for TcpOpener {
    type Transport = TcpStream;
    const REOPEN_AFTER_LINE_FAULT: bool = true;

    async fn open(&mut self) -> Result<TcpStream, LinkError> {
        let addr = resolve(&self.host, self.port).await?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| LinkError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// An already open transport (tests, probes over a given stream).
pub struct Given<T>(pub Option<T>);

impl<T: RtuTransport> Opener for Given<T> {
    type Transport = T;
    const REOPEN_AFTER_LINE_FAULT: bool = false;

    async fn open(&mut self) -> Result<T, LinkError> {
        self.0.take().ok_or_else(|| {
            LinkError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "the transport was closed",
            ))
        })
    }
}

/// A serial adapter for tests that is unplugged and plugged back in: hands out the in-memory
/// streams given to [`Plugs::plug`], fails to open while it holds none (as opening a vanished
/// `/dev/ttyUSB0` does), and records when each open was tried. `REOPEN` is its
/// [`Opener::REOPEN_AFTER_LINE_FAULT`] (`false`: a serial port; `true`: a TCP stream).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Plugs<const REOPEN: bool = false> {
    streams: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<tokio::io::DuplexStream>>>,
    opens: std::sync::Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
}

#[cfg(test)]
impl<const REOPEN: bool> Plugs<REOPEN> {
    /// Plugs in a port: the next open gets `stream`.
    pub fn plug(&self, stream: tokio::io::DuplexStream) {
        self.streams.lock().unwrap().push_back(stream);
    }

    /// When each open was tried, successful or not.
    pub fn opens(&self) -> Vec<tokio::time::Instant> {
        self.opens.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl<const REOPEN: bool> Opener for Plugs<REOPEN> {
    type Transport = tokio::io::DuplexStream;
    const REOPEN_AFTER_LINE_FAULT: bool = REOPEN;

    async fn open(&mut self) -> Result<Self::Transport, LinkError> {
        self.opens.lock().unwrap().push(tokio::time::Instant::now());
        self.streams
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| LinkError::OpenSerial {
                port: "plugs".to_owned(),
                reason: "No such file or directory".to_owned(),
            })
    }
}

/// Modbus RTU framing over any byte stream.
pub struct RtuLink<O: Opener> {
    opener: O,
    transport: Option<O::Transport>,
    buf: Vec<u8>,
}

impl<O: Opener> RtuLink<O> {
    pub fn new(opener: O) -> Self {
        RtuLink {
            opener,
            transport: None,
            buf: Vec::with_capacity(frame::MAX_RTU_FRAME),
        }
    }

    /// Forgets the unfinished exchange; drops the transport if it is `broken` or the opener
    /// wants a fresh one after any fault (see the module docs).
    fn failed(&mut self, broken: bool) {
        self.buf.clear();
        if broken || O::REOPEN_AFTER_LINE_FAULT {
            self.transport = None;
        }
    }

    /// Whether a transport is open (tests).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.transport.is_some()
    }
}

impl<O: Opener> Link for RtuLink<O> {
    async fn transact(
        &mut self,
        unit: u8,
        request: &Request,
        notes: &mut LinkNotes,
    ) -> Result<Reply, LinkError> {
        if !request.is_within_limits() {
            return Err(LinkError::TooLarge);
        }
        let transport = match &mut self.transport {
            Some(t) => t,
            None => {
                let t = self.opener.open().await?;
                self.transport.insert(t)
            }
        };
        // A late reply to an abandoned request, or line noise, must not be read as this reply.
        transport.discard_pending();
        self.buf.clear();
        let result = exchange(transport, &mut self.buf, unit, request, notes).await;
        if let Err(error) = &result {
            self.failed(error.is_broken_transport());
        }
        result
    }

    fn abandon(&mut self) {
        // A timeout: the line was quiet; nothing says the transport is broken.
        self.failed(false);
    }
}

async fn exchange<T: RtuTransport>(
    transport: &mut T,
    buf: &mut Vec<u8>,
    unit: u8,
    request: &Request,
    notes: &mut LinkNotes,
) -> Result<Reply, LinkError> {
    transport
        .write_all(&frame::encode_rtu(unit, request))
        .await?;
    transport.flush().await?;
    loop {
        match frame::parse_rtu_response(buf) {
            ParsedFrame::Incomplete(_) => read_more(transport, buf).await?,
            ParsedFrame::Frame {
                len,
                unit: frame_unit,
                function,
                data,
            } => match frame::interpret(request, unit, frame_unit, function, &data) {
                Ok(reply) => return Ok(reply),
                Err(_) => {
                    // An answer to something else: the late reply of an earlier request.
                    notes.stale_frames += 1;
                    buf.drain(..len);
                }
            },
            ParsedFrame::BadCrc { .. } => return Err(LinkError::Crc),
            ParsedFrame::Garbage => {
                return Err(LinkError::Protocol(format!(
                    "unexpected bytes {:02x?}",
                    &buf[..buf.len().min(8)]
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Table;
    use crate::modbus::frame::Response;
    use std::time::Duration;

    fn reply_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut frame = vec![unit];
        frame.extend_from_slice(pdu);
        let crc = frame::crc16(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame
    }

    const READ: Request = Request::Read {
        table: Table::Holding,
        start: 0,
        count: 1,
    };

    /// A slave on `far` that answers each read request with the next of `values` (one
    /// register), or stays silent for a `None`; returns `far` when the list is done.
    fn slave(
        mut far: tokio::io::DuplexStream,
        values: Vec<Option<u16>>,
    ) -> tokio::task::JoinHandle<tokio::io::DuplexStream> {
        tokio::spawn(async move {
            for value in values {
                let mut req = [0u8; 8];
                far.read_exact(&mut req).await.unwrap();
                if let Some(value) = value {
                    let [hi, lo] = value.to_be_bytes();
                    far.write_all(&reply_frame(1, &[3, 2, hi, lo]))
                        .await
                        .unwrap();
                }
            }
            far
        })
    }

    async fn read(link: &mut impl Link) -> Result<Reply, LinkError> {
        link.transact(1, &READ, &mut LinkNotes::default()).await
    }

    /// The unplugged USB adapter: a timeout (a dead device on a shared line) keeps the port,
    /// an i/o error drops it, a failed open is an error of that exchange, and the port is
    /// opened again once it is back.
    #[tokio::test(start_paused = true)]
    async fn a_serial_port_is_reopened_after_an_io_error_but_kept_after_a_timeout() {
        let plugs = Plugs::<false>::default();
        let (near, far) = tokio::io::duplex(1024);
        plugs.plug(near);
        let mut link = RtuLink::new(plugs.clone());
        let answering = slave(far, vec![Some(42), None]);
        assert_eq!(
            read(&mut link).await.unwrap(),
            Ok(Response::Words(vec![42]))
        );
        let timed_out = tokio::time::timeout(Duration::from_millis(100), read(&mut link)).await;
        assert!(timed_out.is_err());
        link.abandon();
        assert!(link.is_open(), "a timeout keeps the serial port");
        assert_eq!(plugs.opens().len(), 1);

        // Unplugged: the other end is gone, the exchange fails and the handle is dropped.
        drop(answering.await.unwrap());
        assert!(matches!(read(&mut link).await, Err(LinkError::Io(_))));
        assert!(!link.is_open());
        // Still unplugged: every exchange tries to open the port once and fails.
        assert!(matches!(
            read(&mut link).await,
            Err(LinkError::OpenSerial { .. })
        ));
        assert!(matches!(
            read(&mut link).await,
            Err(LinkError::OpenSerial { .. })
        ));
        assert_eq!(plugs.opens().len(), 3);

        // Plugged back in.
        let (near, far) = tokio::io::duplex(1024);
        plugs.plug(near);
        let answering = slave(far, vec![Some(43)]);
        assert_eq!(
            read(&mut link).await.unwrap(),
            Ok(Response::Words(vec![43]))
        );
        assert_eq!(plugs.opens().len(), 4);
        drop(answering.await.unwrap());
    }

    /// A CRC error is a line fault: a serial port is kept, a TCP stream reopened.
    #[tokio::test]
    async fn a_line_fault_reopens_only_a_tcp_stream() {
        async fn crc_error<const REOPEN: bool>() -> usize {
            let plugs = Plugs::<REOPEN>::default();
            let (near, mut far) = tokio::io::duplex(1024);
            plugs.plug(near);
            let mut link = RtuLink::new(plugs.clone());
            let garbling = tokio::spawn(async move {
                let mut req = [0u8; 8];
                far.read_exact(&mut req).await.unwrap();
                let mut bad = reply_frame(1, &[3, 2, 0, 42]);
                bad[4] ^= 0x10;
                far.write_all(&bad).await.unwrap();
                far
            });
            assert!(matches!(read(&mut link).await, Err(LinkError::Crc)));
            assert_eq!(link.is_open(), !REOPEN);
            drop(garbling.await.unwrap());
            plugs.opens().len()
        }
        assert_eq!(crc_error::<false>().await, 1);
        assert_eq!(crc_error::<true>().await, 1);
    }

    #[tokio::test]
    async fn a_stale_frame_is_skipped_and_counted() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut link = RtuLink::new(Given(Some(near)));
        let slave = tokio::spawn(async move {
            let mut req = [0u8; 8];
            far.read_exact(&mut req).await.unwrap();
            // First the late answer to an earlier read of two registers, then the real one.
            far.write_all(&reply_frame(1, &[3, 4, 0, 9, 0, 9]))
                .await
                .unwrap();
            far.write_all(&reply_frame(1, &[3, 2, 0, 42]))
                .await
                .unwrap();
            far
        });
        let mut notes = LinkNotes::default();
        let reply = link.transact(1, &READ, &mut notes).await.unwrap();
        assert_eq!(reply, Ok(Response::Words(vec![42])));
        assert_eq!(notes.stale_frames, 1);
        drop(slave.await.unwrap());
    }

    /// A Modbus TCP device on a loopback port that answers each read with the next of
    /// `replies` (each a PDU, sent with the given transaction id offset), one connection at a
    /// time; returns how many connections it accepted.
    async fn tcp_device(replies: Vec<(u16, Vec<u8>)>) -> (u16, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut replies = replies.into_iter();
            let mut connections = 0;
            'accept: while replies.len() > 0 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    break;
                };
                connections += 1;
                loop {
                    let mut request = [0u8; 12];
                    if stream.read_exact(&mut request).await.is_err() {
                        continue 'accept;
                    }
                    let Some((offset, pdu)) = replies.next() else {
                        break 'accept;
                    };
                    let transaction = u16::from_be_bytes([request[0], request[1]]) - offset;
                    let mut frame = transaction.to_be_bytes().to_vec();
                    frame.extend_from_slice(&[0, 0]);
                    frame.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
                    frame.push(request[6]);
                    frame.extend_from_slice(&pdu);
                    stream.write_all(&frame).await.unwrap();
                }
            }
            connections
        });
        (port, task)
    }

    /// Replies that do not answer the request (one register more, another function code, a
    /// byte count that lies) are protocol errors, never values, and cost the connection; a
    /// reply with an earlier transaction id is skipped as stale and the real one taken.
    #[tokio::test]
    async fn a_tcp_reply_is_checked_against_its_request_and_transaction() {
        let (port, device) = tcp_device(vec![
            (0, vec![3, 2, 0, 42]),
            (0, vec![3, 4, 0, 66, 0, 66]),
            (0, vec![4, 2, 0, 66]),
            (0, vec![3, 2, 0]),
            (1, vec![3, 2, 0, 66]),
        ])
        .await;
        let mut link = TcpLink::new("127.0.0.1".into(), port);
        let mut notes = LinkNotes::default();
        assert_eq!(
            link.transact(1, &READ, &mut notes).await.unwrap(),
            Ok(Response::Words(vec![42]))
        );
        for _ in 0..3 {
            let error = link.transact(1, &READ, &mut notes).await.unwrap_err();
            assert!(matches!(error, LinkError::Protocol(_)), "{error}");
            assert!(
                link.stream.is_none(),
                "a malformed reply drops the connection"
            );
        }
        // A stale frame, then nothing: the owner's timeout ends the wait, no value taken.
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            link.transact(1, &READ, &mut notes),
        )
        .await;
        assert!(waited.is_err(), "{waited:?}");
        assert_eq!(notes.stale_frames, 1);
        link.abandon();
        drop(link);
        assert_eq!(device.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_crc_error_is_an_error_and_the_next_request_is_clean() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut link = RtuLink::new(Given(Some(near)));
        let slave = tokio::spawn(async move {
            let mut req = [0u8; 8];
            far.read_exact(&mut req).await.unwrap();
            let mut bad = reply_frame(1, &[3, 2, 0, 42]);
            bad[4] ^= 0x10;
            far.write_all(&bad).await.unwrap();
            far.read_exact(&mut req).await.unwrap();
            far.write_all(&reply_frame(1, &[3, 2, 0, 43]))
                .await
                .unwrap();
            far
        });
        let mut notes = LinkNotes::default();
        assert!(matches!(
            link.transact(1, &READ, &mut notes).await,
            Err(LinkError::Crc)
        ));
        assert_eq!(
            link.transact(1, &READ, &mut notes).await.unwrap(),
            Ok(Response::Words(vec![43]))
        );
        drop(slave.await.unwrap());
    }
}
