//! Modbus requests and replies, and their RTU framing (pure).
//!
//! [`Request`] and [`Response`] are the protocol data units the bus owner deals in, whatever the
//! transport: the RTU link frames them with [`encode_rtu`] and [`parse_rtu_response`], the TCP
//! link with the MBAP header of [`super::mbap`]; both check every reply with [`interpret`].
//!
//! Why RTU framing is ours and not tokio-modbus': its RTU codec silently skips bytes with a bad
//! CRC (so CRC errors cannot be counted per device), and a reply that arrives after its request
//! timed out is handed to the next request (a late reply from the *same* unit and function even
//! passes its header check, giving wrong data). Here every received frame is checked against the
//! request it answers (unit, function, byte count, echo of a write); one that answers something
//! else is a [`ParsedFrame::Frame`] the caller discards as stale, and a CRC mismatch is a
//! [`ParsedFrame::BadCrc`], counted by the link as [`super::link::LinkError::Crc`].
//!
//! Frame: `unit | function | data | crc16 (low byte first)`. The response length follows from
//! the function code: exceptions are 5 bytes, reads carry a byte count, writes echo 8 bytes.

use crate::config::Table;

/// Protocol limit of a write of registers (FC 16).
pub const MAX_WRITE_REGISTERS: usize = 123;
/// Protocol limit of a write of coils (FC 15).
pub const MAX_WRITE_COILS: usize = 1968;
/// Longest RTU frame (the spec's 256 bytes).
pub const MAX_RTU_FRAME: usize = 256;

/// One request on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC 1, 2, 3 or 4 by table.
    Read {
        table: Table,
        start: u16,
        count: u16,
    },
    /// FC 5.
    WriteCoil { address: u16, value: bool },
    /// FC 6.
    WriteRegister { address: u16, value: u16 },
    /// FC 15.
    WriteCoils { address: u16, values: Vec<bool> },
    /// FC 16.
    WriteRegisters { address: u16, values: Vec<u16> },
}

impl Request {
    pub fn function_code(&self) -> u8 {
        match self {
            Request::Read { table, .. } => match table {
                Table::Coil => 1,
                Table::DiscreteInput => 2,
                Table::Holding => 3,
                Table::Input => 4,
            },
            Request::WriteCoil { .. } => 5,
            Request::WriteRegister { .. } => 6,
            Request::WriteCoils { .. } => 15,
            Request::WriteRegisters { .. } => 16,
        }
    }

    /// The PDU bytes (function code and data).
    pub fn pdu(&self) -> Vec<u8> {
        let mut pdu = vec![self.function_code()];
        match self {
            Request::Read { start, count, .. } => {
                pdu.extend_from_slice(&start.to_be_bytes());
                pdu.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteCoil { address, value } => {
                pdu.extend_from_slice(&address.to_be_bytes());
                pdu.extend_from_slice(&(if *value { 0xFF00u16 } else { 0 }).to_be_bytes());
            }
            Request::WriteRegister { address, value } => {
                pdu.extend_from_slice(&address.to_be_bytes());
                pdu.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteCoils { address, values } => {
                let packed = pack_bits(values);
                pdu.extend_from_slice(&address.to_be_bytes());
                pdu.extend_from_slice(&(values.len() as u16).to_be_bytes());
                pdu.push(packed.len() as u8);
                pdu.extend_from_slice(&packed);
            }
            Request::WriteRegisters { address, values } => {
                pdu.extend_from_slice(&address.to_be_bytes());
                pdu.extend_from_slice(&(values.len() as u16).to_be_bytes());
                pdu.push((values.len() * 2) as u8);
                for v in values {
                    pdu.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        pdu
    }

    /// Whether the request fits the protocol's limits (checked before anything is sent).
    pub fn is_within_limits(&self) -> bool {
        match self {
            Request::Read { table, count, .. } => {
                let max = if table.is_bits() { 2000 } else { 125 };
                (1..=max).contains(count)
            }
            Request::WriteCoil { .. } | Request::WriteRegister { .. } => true,
            Request::WriteCoils { values, .. } => (1..=MAX_WRITE_COILS).contains(&values.len()),
            Request::WriteRegisters { values, .. } => {
                (1..=MAX_WRITE_REGISTERS).contains(&values.len())
            }
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Bits(Vec<bool>),
    Words(Vec<u16>),
    /// A write was acknowledged.
    Written,
}

/// A Modbus exception code from the device (1 illegal function, 2 illegal data address, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("modbus exception {0} ({name})", name = exception_name(*.0))]
pub struct Exception(pub u8);

fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown",
    }
}

/// What a device answered: data, or an exception (which is an answer, not a failure).
pub type Reply = Result<Response, Exception>;

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The RTU frame of `request` to `unit`.
pub fn encode_rtu(unit: u8, request: &Request) -> Vec<u8> {
    let mut frame = vec![unit];
    frame.extend_from_slice(&request.pdu());
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// Result of looking at the start of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedFrame {
    /// Not enough bytes yet; at least this many are needed in total.
    Incomplete(usize),
    /// A frame with a valid CRC, `len` bytes long: unit, function code, and the bytes between
    /// the function code and the CRC.
    Frame {
        len: usize,
        unit: u8,
        function: u8,
        data: Vec<u8>,
    },
    /// `len` bytes that look like a frame but whose CRC does not match.
    BadCrc { len: usize },
    /// The function code is not one a response can carry: the buffer is garbage.
    Garbage,
}

/// Splits the first response frame off `buf` (see [`ParsedFrame`]).
pub fn parse_rtu_response(buf: &[u8]) -> ParsedFrame {
    if buf.len() < 2 {
        return ParsedFrame::Incomplete(5);
    }
    let function = buf[1];
    let len = match function {
        f if f & 0x80 != 0 && (1..=0x7F).contains(&(f & 0x7F)) => 5,
        1..=4 => match buf.get(2) {
            None => return ParsedFrame::Incomplete(5),
            Some(&n) => 3 + usize::from(n) + 2,
        },
        5 | 6 | 15 | 16 => 8,
        _ => return ParsedFrame::Garbage,
    };
    if buf.len() < len {
        return ParsedFrame::Incomplete(len);
    }
    let body = &buf[..len - 2];
    let crc = u16::from_le_bytes([buf[len - 2], buf[len - 1]]);
    if crc16(body) != crc {
        return ParsedFrame::BadCrc { len };
    }
    ParsedFrame::Frame {
        len,
        unit: buf[0],
        function,
        data: body[2..].to_vec(),
    }
}

/// Why a frame does not answer the request it was read for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("reply from unit {got}, expected {expected}")]
    Unit { expected: u8, got: u8 },
    #[error("reply with function {got}, expected {expected}")]
    Function { expected: u8, got: u8 },
    #[error("reply of {got} data bytes, expected {expected}")]
    Length { expected: usize, got: usize },
    #[error("write echo does not match the request")]
    Echo,
}

/// Interprets a frame's data as the answer to `request` sent to `unit`.
pub fn interpret(
    request: &Request,
    unit: u8,
    frame_unit: u8,
    function: u8,
    data: &[u8],
) -> Result<Reply, Mismatch> {
    if frame_unit != unit {
        return Err(Mismatch::Unit {
            expected: unit,
            got: frame_unit,
        });
    }
    let fc = request.function_code();
    if function == fc | 0x80 {
        return Ok(Err(Exception(data.first().copied().unwrap_or(0))));
    }
    if function != fc {
        return Err(Mismatch::Function {
            expected: fc,
            got: function,
        });
    }
    match request {
        Request::Read { table, count, .. } => {
            let count = usize::from(*count);
            let expected = if table.is_bits() {
                count.div_ceil(8)
            } else {
                count * 2
            };
            // The byte count the reply declares, and the bytes it carries: over RTU the frame
            // is cut by the first, over TCP by the MBAP length, so either may lie.
            let declared = data.first().map_or(0, |&n| usize::from(n));
            if declared != expected {
                return Err(Mismatch::Length {
                    expected,
                    got: declared,
                });
            }
            let bytes = data.get(1..).unwrap_or(&[]);
            if bytes.len() != expected {
                return Err(Mismatch::Length {
                    expected,
                    got: bytes.len(),
                });
            }
            Ok(Ok(if table.is_bits() {
                Response::Bits(unpack_bits(bytes, count))
            } else {
                Response::Words(
                    bytes
                        .chunks_exact(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]]))
                        .collect(),
                )
            }))
        }
        _ => {
            // Writes echo address and value (FC 5/6) or address and count (FC 15/16).
            let pdu = request.pdu();
            if data.len() == 4 && pdu.get(1..5) == Some(data) {
                Ok(Ok(Response::Written))
            } else {
                Err(Mismatch::Echo)
            }
        }
    }
}

pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
        })
        .collect()
}

pub fn unpack_bits(bytes: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|i| {
            bytes
                .get(i / 8)
                .is_some_and(|byte| byte >> (i % 8) & 1 == 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_of_a_known_frame() {
        // Read holding registers 0..2 of unit 1: the spec's example frame 01 03 00 00 00 02 C4 0B.
        let frame = encode_rtu(
            1,
            &Request::Read {
                table: Table::Holding,
                start: 0,
                count: 2,
            },
        );
        assert_eq!(frame, [0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B]);
    }

    fn response(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut frame = vec![unit];
        frame.extend_from_slice(pdu);
        let crc = crc16(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame
    }

    #[test]
    fn parses_and_checks_a_read_reply() {
        let read = Request::Read {
            table: Table::Holding,
            start: 0,
            count: 2,
        };
        let frame = response(1, &[3, 4, 0x12, 0x34, 0xAB, 0xCD]);
        let ParsedFrame::Frame {
            len,
            unit,
            function,
            data,
        } = parse_rtu_response(&frame)
        else {
            panic!("a frame");
        };
        assert_eq!(len, frame.len());
        assert_eq!(
            interpret(&read, 1, unit, function, &data),
            Ok(Ok(Response::Words(vec![0x1234, 0xABCD])))
        );
        // The same frame does not answer a request to unit 2, nor a read of 3 registers.
        assert!(interpret(&read, 2, unit, function, &data).is_err());
        let longer = Request::Read {
            table: Table::Holding,
            start: 0,
            count: 3,
        };
        assert!(interpret(&longer, 1, unit, function, &data).is_err());
        // Incomplete, then a flipped bit is a CRC error.
        assert_eq!(parse_rtu_response(&frame[..4]), ParsedFrame::Incomplete(9));
        let mut bad = frame.clone();
        bad[3] ^= 1;
        assert_eq!(parse_rtu_response(&bad), ParsedFrame::BadCrc { len: 9 });
    }

    #[test]
    fn exceptions_and_write_echoes() {
        let write = Request::WriteRegister {
            address: 7,
            value: 0x0102,
        };
        let echo = response(5, &[6, 0, 7, 1, 2]);
        let ParsedFrame::Frame {
            unit,
            function,
            data,
            ..
        } = parse_rtu_response(&echo)
        else {
            panic!("a frame");
        };
        assert_eq!(
            interpret(&write, 5, unit, function, &data),
            Ok(Ok(Response::Written))
        );
        let exception = response(5, &[0x86, 2]);
        let ParsedFrame::Frame {
            unit,
            function,
            data,
            ..
        } = parse_rtu_response(&exception)
        else {
            panic!("a frame");
        };
        assert_eq!(
            interpret(&write, 5, unit, function, &data),
            Ok(Err(Exception(2)))
        );
        assert_eq!(
            Exception(2).to_string(),
            "modbus exception 2 (illegal data address)"
        );
    }

    proptest! {
        #[test]
        fn bits_pack_and_unpack(bits in proptest::collection::vec(any::<bool>(), 0..40)) {
            prop_assert_eq!(unpack_bits(&pack_bits(&bits), bits.len()), bits);
        }

        #[test]
        fn parser_never_panics_and_frames_fit(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse_rtu_response(&bytes) {
                ParsedFrame::Frame { len, .. } | ParsedFrame::BadCrc { len } => prop_assert!(len <= bytes.len()),
                ParsedFrame::Incomplete(n) => prop_assert!(n > bytes.len() && n <= MAX_RTU_FRAME + 4),
                ParsedFrame::Garbage => {}
            }
        }
    }
}
