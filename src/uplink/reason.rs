//! MQTT 5 reason codes: what the uplink does about the ones a broker answers a PUBLISH or
//! closes a connection with. Pure; the link acts on the verdicts. Each code's name and meaning
//! are in the one table of [`crate::queue::reason`] (re-exported here as [`meaning`]).
//!
//! # A row's fate (PUBACK, and PUBREC, which ends a QoS 2 flow when it refuses)
//! - 0x00 success, 0x10 no matching subscribers: the broker has the message; the row is
//!   deleted ([`Verdict::Delivered`]).
//! - 0x80 unspecified, 0x83 implementation specific, 0x87 not authorized, 0x90 topic name
//!   invalid, 0x91 packet identifier in use, 0x99 payload format invalid: the broker will
//!   refuse the same message again, so a resend would only loop; the row is set aside as
//!   *rejected* with the code ([`Verdict::Rejected`]), never blocking the rows behind it.
//! - 0x97 quota exceeded: the broker may take it later; the row stays queued and is sent again
//!   after a pause ([`Verdict::Retry`]).
//!
//! The uplink itself rejects with 0x95 packet too large a row whose PUBLISH would exceed the
//! broker's Maximum Packet Size: it is never sent.
//!
//! # A server's DISCONNECT
//! [`after_disconnect`] says how long the link waits before it dials again: at once (the
//! backoff's start) for most codes, the backoff's ceiling for 0x8E session taken over (another
//! gateway with our client id: two gateways must not fight over one session), for 0x96 /
//! 0x97 (the broker asks us to slow down), and for 0x9A retain not supported / 0x9B QoS not
//! supported (the retained QoS 1 status certificates are the contract: such a broker closes
//! every connection, and redialling faster would only loop).

pub use crate::queue::reason::meaning;

/// The code of a packet too large for the broker's Maximum Packet Size.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// Quota exceeded: retried after a pause.
pub const QUOTA_EXCEEDED: u8 = 0x97;

/// What an acknowledgement's reason code means for the message's row(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The broker has it: delete the row.
    Delivered,
    /// The broker refuses it for good: set the row aside with this code.
    Rejected(u8),
    /// The broker cannot take it now: keep the row and send it again after a pause.
    Retry(u8),
}

/// The verdict of a PUBACK's or a PUBREC's reason code.
pub fn verdict(code: u8) -> Verdict {
    match code {
        0x00 | 0x10 => Verdict::Delivered,
        QUOTA_EXCEEDED => Verdict::Retry(code),
        _ => Verdict::Rejected(code),
    }
}

/// How the link waits after a server's DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDisconnect {
    /// The usual backoff.
    Backoff,
    /// The backoff's ceiling: the broker asked to slow down, or another client took the session.
    Longest,
}

/// What to do after a DISCONNECT with `code` from the server.
pub fn after_disconnect(code: u8) -> AfterDisconnect {
    match code {
        0x8E | 0x96 | 0x97 | 0x9A | 0x9B => AfterDisconnect::Longest,
        _ => AfterDisconnect::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_success_and_no_subscribers_delete_and_only_quota_retries() {
        assert_eq!(verdict(0x00), Verdict::Delivered);
        assert_eq!(verdict(0x10), Verdict::Delivered);
        assert_eq!(verdict(0x97), Verdict::Retry(0x97));
        for code in [0x80, 0x83, 0x87, 0x90, 0x91, 0x99] {
            assert_eq!(verdict(code), Verdict::Rejected(code), "{code:#x}");
        }
        assert_eq!(meaning(0x87), "not authorized");
    }

    #[test]
    fn a_taken_session_and_rate_limits_back_off_longest() {
        for code in [0x8E, 0x96, 0x97, 0x9A, 0x9B] {
            assert_eq!(after_disconnect(code), AfterDisconnect::Longest);
        }
        for code in [0x00, 0x8B, 0x9C, 0x9D, 0x80] {
            assert_eq!(after_disconnect(code), AfterDisconnect::Backoff);
        }
    }

    proptest! {
        /// No failure code ever deletes a row; every code has a verdict and a meaning.
        #[test]
        fn a_failure_code_never_deletes(code in 0x80u8..=0xFF) {
            prop_assert_ne!(verdict(code), Verdict::Delivered);
            prop_assert!(!meaning(code).is_empty());
        }
    }
}
