//! Modbus TCP framing (pure): the MBAP header around the PDUs of [`super::frame`].
//!
//! ```text
//! transaction id (2) | protocol id (2, always 0) | length (2: unit + PDU) | unit (1) | PDU
//! ```
//!
//! # Why ours and not tokio-modbus'
//! tokio-modbus' TCP client decodes a read reply by the byte count the reply carries and never
//! compares it with the count requested: a reply with one register more (byte count 2N+2, MBAP
//! length consistent) is taken whole, and its registers decoded as if they were the points'.
//! Wrapping it cannot fix that for bit reads (it pads bits to whole bytes, so a bit count is
//! lost before we see it) nor for a wrong byte count field (it has already parsed by it), and a
//! late reply after a timeout stays off by one (upstream #324). Framing MBAP here is forty
//! lines, and every reply then goes through the same checks as an RTU one
//! ([`super::frame::interpret`]: unit, function code, byte count against the request's count,
//! write echo), plus the transaction id: a frame that answers an earlier request is
//! [`ParsedAdu::Frame`] with another id, which the link skips as stale instead of taking it.
//!
//! A frame whose header is impossible (protocol id not 0, a length that holds no function code
//! or more than the largest PDU) is [`ParsedAdu::Garbage`]: the stream cannot be trusted to be
//! in step any more, and the link reconnects.

use super::frame::Request;

/// The MBAP header's bytes before the unit id.
const HEADER: usize = 6;
/// Largest PDU (function code and data) Modbus allows.
pub const MAX_PDU: usize = 253;
/// Largest frame: header, unit id, PDU.
pub const MAX_ADU: usize = HEADER + 1 + MAX_PDU;

/// The frame of `request` to `unit` with `transaction` id.
pub fn encode(transaction: u16, unit: u8, request: &Request) -> Vec<u8> {
    let pdu = request.pdu();
    let mut frame = Vec::with_capacity(HEADER + 1 + pdu.len());
    frame.extend_from_slice(&transaction.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    // A PDU within the protocol's limits (checked before sending) is at most 253 bytes.
    let length = u16::try_from(pdu.len() + 1).unwrap_or(u16::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(unit);
    frame.extend_from_slice(&pdu);
    frame
}

/// Result of looking at the start of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedAdu {
    /// Not enough bytes yet; at least this many are needed in total.
    Incomplete(usize),
    /// A whole frame, `len` bytes: its transaction id, unit, function code and the bytes after
    /// the function code.
    Frame {
        len: usize,
        transaction: u16,
        unit: u8,
        function: u8,
        data: Vec<u8>,
    },
    /// An impossible header: the stream is out of step.
    Garbage(String),
}

/// Splits the first frame off `buf` (see [`ParsedAdu`]).
pub fn parse_response(buf: &[u8]) -> ParsedAdu {
    let Some(header) = buf.get(..HEADER) else {
        return ParsedAdu::Incomplete(HEADER + 2);
    };
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if protocol != 0 {
        return ParsedAdu::Garbage(format!("mbap protocol id {protocol}, expected 0"));
    }
    if !(2..=MAX_PDU + 1).contains(&length) {
        return ParsedAdu::Garbage(format!(
            "mbap length {length}, expected 2 to {}",
            MAX_PDU + 1
        ));
    }
    let len = HEADER + length;
    let Some(frame) = buf.get(..len) else {
        return ParsedAdu::Incomplete(len);
    };
    ParsedAdu::Frame {
        len,
        transaction,
        unit: frame[HEADER],
        function: frame[HEADER + 1],
        data: frame[HEADER + 2..].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Table;
    use crate::modbus::frame::{interpret, Mismatch, Response};
    use proptest::prelude::*;

    const READ: Request = Request::Read {
        table: Table::Holding,
        start: 0,
        count: 2,
    };

    fn reply(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut frame = transaction.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(pdu);
        frame
    }

    /// What `buf` answers to READ sent to unit 1 with transaction 7.
    fn answer(buf: &[u8]) -> Result<crate::modbus::frame::Reply, String> {
        match parse_response(buf) {
            ParsedAdu::Frame {
                transaction: 7,
                unit,
                function,
                data,
                ..
            } => interpret(&READ, 1, unit, function, &data).map_err(|m| m.to_string()),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn a_request_frame_is_the_spec_example() {
        // Read holding registers 0..2 of unit 1, transaction 7.
        assert_eq!(encode(7, 1, &READ), [0, 7, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2]);
    }

    #[test]
    fn a_reply_is_checked_against_its_request() {
        let good = reply(7, 1, &[3, 4, 0x12, 0x34, 0xAB, 0xCD]);
        assert_eq!(answer(&good), Ok(Ok(Response::Words(vec![0x1234, 0xABCD]))));
        assert_eq!(parse_response(&good[..9]), ParsedAdu::Incomplete(13));
        // One register more, byte count and length consistent: what tokio-modbus takes.
        let extra = reply(7, 1, &[3, 6, 0, 1, 0, 2, 0, 3]);
        assert_eq!(
            answer(&extra),
            Err(Mismatch::Length {
                expected: 4,
                got: 6
            }
            .to_string())
        );
        // The byte count says 4, three bytes follow.
        assert!(answer(&reply(7, 1, &[3, 4, 0, 1, 0])).is_err());
        // The byte count says 2, four bytes follow.
        assert!(answer(&reply(7, 1, &[3, 2, 0, 1, 0, 2])).is_err());
        // Another function code, another unit, no byte count at all.
        assert!(answer(&reply(7, 1, &[4, 4, 0, 1, 0, 2])).is_err());
        assert!(answer(&reply(7, 2, &[3, 4, 0, 1, 0, 2])).is_err());
        assert!(answer(&reply(7, 1, &[3])).is_err());
        // An exception is an answer.
        assert_eq!(
            answer(&reply(7, 1, &[0x83, 2])),
            Ok(Err(crate::modbus::Exception(2)))
        );
    }

    #[test]
    fn impossible_headers_are_garbage() {
        let mut bad_protocol = reply(7, 1, &[3, 4, 0, 1, 0, 2]);
        bad_protocol[3] = 1;
        assert!(matches!(
            parse_response(&bad_protocol),
            ParsedAdu::Garbage(_)
        ));
        assert!(matches!(
            parse_response(&[0, 7, 0, 0, 0, 1, 1]),
            ParsedAdu::Garbage(_)
        ));
        assert!(matches!(
            parse_response(&[0, 7, 0, 0, 1, 0, 1]),
            ParsedAdu::Garbage(_)
        ));
    }

    proptest! {
        #[test]
        fn parser_never_panics_and_frames_fit(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse_response(&bytes) {
                ParsedAdu::Frame { len, data, .. } => {
                    prop_assert!(len <= bytes.len() && len <= MAX_ADU);
                    prop_assert_eq!(data.len() + 8, len);
                }
                ParsedAdu::Incomplete(n) => prop_assert!(n > bytes.len() && n <= MAX_ADU),
                ParsedAdu::Garbage(_) => {}
            }
        }

        /// Whatever the bytes, a reply taken as data has exactly the requested count.
        #[test]
        fn an_accepted_read_has_the_requested_count(
            count in 1u16..=130,
            bits in any::<bool>(),
            pdu in proptest::collection::vec(any::<u8>(), 1..260),
        ) {
            let table = if bits { Table::Coil } else { Table::Holding };
            let request = Request::Read { table, start: 0, count };
            let frame = reply(7, 1, &pdu);
            if let ParsedAdu::Frame { unit, function, data, .. } = parse_response(&frame) {
                match interpret(&request, 1, unit, function, &data) {
                    Ok(Ok(Response::Words(words))) => prop_assert_eq!(words.len(), usize::from(count)),
                    Ok(Ok(Response::Bits(b))) => prop_assert_eq!(b.len(), usize::from(count)),
                    Ok(Ok(Response::Written)) => prop_assert!(false, "a read answered as a write"),
                    Ok(Err(_)) | Err(_) => {}
                }
            }
        }
    }
}
