//! What the command path of one origin counts, for the metrics endpoint
//! ([`crate::metrics::CommandCollector`]): relaxed atomic adds, read at scrape time; no decision
//! depends on them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one origin (`cloud` or `local`) since start.
#[derive(Debug)]
pub struct CommandStats {
    pub origin: &'static str,
    /// PUBLISHes on a command topic handed to the intake.
    pub received: AtomicU64,
    /// Committed to the inbox.
    pub stored: AtomicU64,
    /// Redeliveries (DUP, or retained copies) of commands the inbox holds or whose id was
    /// taken: acknowledged, not stored again.
    pub redelivered: AtomicU64,
    /// Refused with `busy` (the inbox was full).
    pub busy: AtomicU64,
    /// Retained commands refused (`retained`), or dropped as a copy of an id already refused.
    pub retained: AtomicU64,
    /// PUBLISHes too large to read, discarded unread (answered `bad_payload` on a command topic).
    pub oversized: AtomicU64,
    /// PUBLISHes on a topic that names no command, acknowledged and dropped.
    pub ignored: AtomicU64,
    /// MQTT 5 Response Topics ignored as invalid (the command is answered on `…/set/result`).
    pub bad_response_topic: AtomicU64,
    /// Answers committed by the handler (every code, stored answers repeated included).
    pub answered: AtomicU64,
    /// Commands waiting in the inbox, as last seen by the intake or the handler.
    pub waiting: AtomicU64,
}

impl CommandStats {
    pub fn new(origin: &'static str) -> CommandStats {
        CommandStats {
            origin,
            received: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            retained: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            bad_response_topic: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    pub(super) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
