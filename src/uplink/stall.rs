//! The link's pause while the queue cannot commit what the next packets depend on (a full
//! disk): no clock and no I/O here, the link feeds `now` and logs what it is told.
//!
//! # Why pause, not reconnect
//! The queue's invariant is that QoS 2 session state is on disk before the packet that depends
//! on it is written (`src/queue/mod.rs`, invariant 3). When that commit fails, the packet must
//! wait; dropping the connection would not make the disk any emptier, but every reconnect would
//! resend the whole session (DUP PUBLISHes, PUBRELs) and fail again at once. So the link stays
//! connected (keep-alive goes on), takes no new rows, holds the PUBRELs whose "PUBREC received"
//! is not on disk (the broker keeps those messages) and tries the writes again after a delay
//! that doubles from [`RETRY_FIRST`] to [`RETRY_MAX`].
//!
//! # Logging
//! One warning when a pause starts, one line when rows have flowed for [`QUIET`] since the last
//! failure: a disk that frees a little now and then (a commit goes through, the next fails)
//! makes one pair of lines, not one per try.

use std::time::Duration;

use tokio::time::Instant;

/// First wait before a failed session write is tried again.
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long rows must flow after the last failure before a pause counts as over (the queue's
/// drop bursts use the same).
pub const QUIET: Duration = crate::queue::capacity::BURST_QUIET;

/// An open pause episode (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Episode {
    started: Instant,
    last_failure: Instant,
    failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// When to try again; `None` while rows may be taken.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    delay: Duration,
    episode: Option<Episode>,
}

/// What the link logs after a [`Stall::flowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// From the first failure to now.
    pub paused: Duration,
    /// Failed tries in the episode.
    pub failures: u64,
}

impl Default for Stall {
    fn default() -> Self {
        Stall {
            retry_at: None,
            delay: RETRY_FIRST,
            episode: None,
        }
    }
}

impl Stall {
    /// Whether the link must take no new rows now.
    pub fn is_paused(&self) -> bool {
        self.retry_at.is_some()
    }

    /// When to try again, while paused.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// A session write failed (or the queue asks for a pause): take no rows until the delay
    /// passed. Returns whether this starts an episode (log it).
    pub fn failed(&mut self, now: Instant) -> bool {
        self.retry_at = Some(now + self.delay);
        self.delay = (self.delay * 2).min(RETRY_MAX);
        match &mut self.episode {
            Some(episode) => {
                episode.last_failure = now;
                episode.failures += 1;
                false
            }
            None => {
                self.episode = Some(Episode {
                    started: now,
                    last_failure: now,
                    failures: 1,
                });
                true
            }
        }
    }

    /// The retry time came: the link tries the writes again (a failure calls
    /// [`Stall::failed`] again, with the longer delay).
    pub fn retrying(&mut self) {
        self.retry_at = None;
    }

    /// A new connection: nothing of the old one is held; the episode and the delay go on.
    pub fn on_connected(&mut self) {
        self.retry_at = None;
    }

    /// A session write went through, or rows were sent: the next failure waits the first delay
    /// again. Returns what to log when this ends an episode.
    pub fn flowed(&mut self, now: Instant) -> Option<Resumed> {
        self.delay = RETRY_FIRST;
        let episode = self.episode?;
        if self.retry_at.is_some() || now.saturating_duration_since(episode.last_failure) < QUIET {
            return None;
        }
        self.episode = None;
        Some(Resumed {
            paused: now.saturating_duration_since(episode.started),
            failures: episode.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_maximum_and_resets_once_rows_flow() {
        let t0 = Instant::now();
        let mut s = Stall::default();
        assert!(!s.is_paused());
        assert!(s.failed(t0), "the first failure starts an episode");
        assert_eq!(s.retry_at(), Some(t0 + RETRY_FIRST));
        let mut waits = Vec::new();
        for _ in 0..6 {
            s.retrying();
            assert!(!s.failed(t0), "one episode");
            waits.push(s.retry_at().unwrap() - t0);
        }
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
        s.retrying();
        assert_eq!(s.flowed(t0), None, "not quiet yet");
        assert!(!s.failed(t0));
        assert_eq!(s.retry_at(), Some(t0 + RETRY_FIRST), "reset by the flow");
    }

    #[test]
    fn an_episode_ends_once_rows_flowed_for_the_quiet_period() {
        let t0 = Instant::now();
        let mut s = Stall::default();
        s.failed(t0);
        s.retrying();
        // A commit goes through, the next fails: still the same episode, nothing to log.
        assert_eq!(s.flowed(t0 + Duration::from_secs(1)), None);
        assert!(!s.failed(t0 + Duration::from_secs(2)));
        s.retrying();
        assert_eq!(s.flowed(t0 + Duration::from_secs(3)), None);
        let end = t0 + Duration::from_secs(2) + QUIET;
        assert_eq!(
            s.flowed(end),
            Some(Resumed {
                paused: end - t0,
                failures: 2
            })
        );
        assert_eq!(s.flowed(end), None, "logged once");
        assert!(s.failed(end), "the next failure starts a new episode");
    }

    #[test]
    fn a_paused_link_never_ends_its_episode() {
        let t0 = Instant::now();
        let mut s = Stall::default();
        s.failed(t0);
        assert_eq!(s.flowed(t0 + QUIET * 3), None, "still waiting to retry");
        s.on_connected();
        assert!(!s.is_paused(), "a new connection starts taking rows");
        assert!(s.flowed(t0 + QUIET * 3).is_some());
    }
}
