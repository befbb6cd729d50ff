//! MQTT 5 request properties of a command: where to answer besides `…/set/result`, and how long
//! the command lives. Pure.
//!
//! - **Response Topic.** The requester chose it, so it is checked before it is stored: not empty,
//!   no wildcard (`+`, `#`), no NUL character, at most [`MAX_RESPONSE_TOPIC`] bytes. An invalid
//!   one is ignored with a counted, logged reason ([`Invalid`]); the command is carried out and
//!   answered on `…/set/result` as always (an answer the broker would refuse must not cost the
//!   connection). Correlation Data without a Response Topic has nowhere to go and is dropped.
//! - **Message Expiry Interval.** The broker forwards the lifetime the message has left
//!   (MQTT 5 §3.3.2.3.3); it becomes a deadline (`expires_ms`, receipt + remaining), stored with
//!   the command, and a command carried out after it is refused `expired` ([`expiry_refusal`]).
//!   It adds to the `ts` check (`plan::check_age`), never replaces it: the stricter wins.

use std::fmt;

use crate::queue::CommandRequest;
use crate::uplink::inbound::Request;

use super::result::{ErrorCode, Refusal};

/// Longest response topic taken. MQTT allows 65 535 bytes; a requester's reply topic is a few
/// dozen, and the answer's PUBLISH must still fit the broker's packet size with the result.
pub const MAX_RESPONSE_TOPIC: usize = 1024;

/// Why a response topic is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Empty,
    Wildcard,
    Nul,
    TooLong,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Empty => "it is empty",
            Invalid::Wildcard => "it holds a wildcard (+ or #)",
            Invalid::Nul => "it holds a NUL character",
            Invalid::TooLong => "it is longer than 1024 bytes",
        })
    }
}

/// Checks a response topic.
pub fn check_topic(topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        Err(Invalid::Empty)
    } else if topic.contains(['+', '#']) {
        Err(Invalid::Wildcard)
    } else if topic.contains('\0') {
        Err(Invalid::Nul)
    } else if topic.len() > MAX_RESPONSE_TOPIC {
        Err(Invalid::TooLong)
    } else {
        Ok(())
    }
}

/// What is stored of `request`, received at `received_ms`; with the reason an invalid response
/// topic was dropped.
pub fn stored(request: Option<&Request>, received_ms: i64) -> (CommandRequest, Option<Invalid>) {
    let Some(request) = request else {
        return (CommandRequest::default(), None);
    };
    let expires_ms = request
        .expiry
        .map(|secs| received_ms.saturating_add(i64::from(secs).saturating_mul(1000)));
    let (response_topic, invalid) = match request.response_topic.as_deref().map(check_topic) {
        Some(Ok(())) => (request.response_topic.clone(), None),
        Some(Err(invalid)) => (None, Some(invalid)),
        None => (None, None),
    };
    let correlation = response_topic
        .as_ref()
        .and(request.correlation.as_ref())
        .map(|c| c.to_vec());
    let stored = CommandRequest {
        response_topic,
        correlation,
        expires_ms,
    };
    (stored, invalid)
}

/// `expired` when the command's Message Expiry ran out before `now_ms`. A remaining lifetime
/// of 0 is already over.
pub fn expiry_refusal(request: &CommandRequest, now_ms: i64) -> Option<Refusal> {
    let expires = request.expires_ms?;
    (now_ms >= expires).then(|| {
        Refusal::new(
            ErrorCode::Expired,
            format!(
                "the command's MQTT message expiry ran out {} ms ago; nothing was written",
                now_ms - expires
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(topic: Option<&str>, correlation: Option<&[u8]>, expiry: Option<u32>) -> Request {
        Request {
            response_topic: topic.map(str::to_owned),
            correlation: correlation.map(Bytes::copy_from_slice),
            expiry,
        }
    }

    #[test]
    fn response_topics_with_wildcards_or_nothing_are_refused() {
        assert_eq!(check_topic("reply/to/me"), Ok(()));
        assert_eq!(check_topic(""), Err(Invalid::Empty));
        assert_eq!(check_topic("reply/+"), Err(Invalid::Wildcard));
        assert_eq!(check_topic("reply/#"), Err(Invalid::Wildcard));
        assert_eq!(check_topic("a\0b"), Err(Invalid::Nul));
        assert_eq!(check_topic(&"a".repeat(1025)), Err(Invalid::TooLong));
    }

    #[test]
    fn an_invalid_topic_drops_topic_and_correlation_but_keeps_the_expiry() {
        let (kept, invalid) = stored(Some(&request(Some("r/#"), Some(b"c"), Some(3))), 1000);
        assert_eq!(invalid, Some(Invalid::Wildcard));
        assert_eq!(
            kept,
            CommandRequest {
                response_topic: None,
                correlation: None,
                expires_ms: Some(4000),
            }
        );
        let (kept, invalid) = stored_ok("r/1", b"\x00\x01");
        assert_eq!(invalid, None);
        assert_eq!(kept.correlation.as_deref(), Some(&b"\x00\x01"[..]));
    }

    fn stored_ok(topic: &str, correlation: &[u8]) -> (CommandRequest, Option<Invalid>) {
        stored(Some(&request(Some(topic), Some(correlation), None)), 0)
    }

    #[test]
    fn correlation_without_a_topic_is_dropped() {
        let (kept, _) = stored(Some(&request(None, Some(b"c"), None)), 0);
        assert!(kept.is_empty());
    }

    #[test]
    fn expiry_refuses_once_the_lifetime_is_over() {
        let (kept, _) = stored(Some(&request(None, None, Some(0))), 5000);
        assert!(expiry_refusal(&kept, 5000).is_some());
        let (kept, _) = stored(Some(&request(None, None, Some(2))), 5000);
        assert!(expiry_refusal(&kept, 6999).is_none());
        assert!(expiry_refusal(&kept, 7000).is_some());
        assert!(expiry_refusal(&CommandRequest::default(), i64::MAX).is_none());
    }
}
