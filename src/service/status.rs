//! What the supervisor saw in one round, whether that counts as progress, and the `STATUS=` line
//! systemd shows for it (pure).

use std::fmt;
use std::time::Duration;

use crate::uplink::LinkState;

/// Outcome of one round trip through the queue writer ([`crate::queue::Queue::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The writer answered and could take the write lock.
    Answered,
    /// No answer within the probe deadline: the writer is busy with something that does not end
    /// (a commit stuck in fsync, a lock held by another process) or its channel is full.
    TimedOut(Duration),
    /// The writer answered with an error (typically "database is locked" after its busy timeout).
    Failed(String),
    /// The writer thread is gone.
    Closed,
}

/// One round's observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub probe: Probe,
    pub link: LinkState,
    /// Rows committed and not yet acknowledged by the broker.
    pub depth: u64,
    /// Rows the broker refused for good, held in the queue file for an operator.
    pub rejected: u64,
    /// Device poller tasks (one per bus) still running, out of the number started.
    pub pollers_running: usize,
    pub pollers_started: usize,
    /// Devices whose last poll succeeded (after at least one good poll), out of all configured.
    pub devices_online: usize,
    pub devices: usize,
    /// Whether the uplink task is still running (it only ends on shutdown, or by a panic).
    pub uplink_running: bool,
}

/// Whether the watchdog may be fed. A down broker or a silent device is *not* a stall: the
/// gateway is built to ride those out, and a restart would fix neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Progressing,
    Stalled(Stall),
}

/// Why the pipeline counts as wedged; the first one found is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stall {
    WriterTimedOut(Duration),
    WriterFailed(String),
    WriterGone,
    PollersStopped { running: usize, started: usize },
    UplinkStopped,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::WriterTimedOut(deadline) => {
                write!(f, "queue writer did not answer within {deadline:?}")
            }
            Stall::WriterFailed(error) => {
                write!(f, "queue writer cannot lock the database: {error}")
            }
            Stall::WriterGone => write!(f, "queue writer stopped"),
            Stall::PollersStopped { running, started } => {
                write!(f, "only {running} of {started} bus pollers running")
            }
            Stall::UplinkStopped => write!(f, "uplink task stopped"),
        }
    }
}

impl Snapshot {
    pub fn health(&self) -> Health {
        let stall = match &self.probe {
            Probe::TimedOut(deadline) => Some(Stall::WriterTimedOut(*deadline)),
            Probe::Failed(error) => Some(Stall::WriterFailed(error.clone())),
            Probe::Closed => Some(Stall::WriterGone),
            Probe::Answered if self.pollers_running < self.pollers_started => {
                Some(Stall::PollersStopped {
                    running: self.pollers_running,
                    started: self.pollers_started,
                })
            }
            Probe::Answered if !self.uplink_running => Some(Stall::UplinkStopped),
            Probe::Answered => None,
        };
        match stall {
            Some(stall) => Health::Stalled(stall),
            None => Health::Progressing,
        }
    }

    /// The `STATUS=` text: link state, queue depth (and the rejected rows held, when there are
    /// some: nothing sends them again by itself) and devices online, prefixed with the stall
    /// reason when the watchdog is being starved, so `systemctl status fieldrelay` says why.
    pub fn status_line(&self) -> String {
        let link = match self.link {
            LinkState::Connected => "uplink connected",
            LinkState::Connecting => "uplink disconnected, reconnecting",
        };
        let rows = if self.depth == 1 { "row" } else { "rows" };
        let devices = if self.devices == 1 {
            "device"
        } else {
            "devices"
        };
        let rejected = match self.rejected {
            0 => String::new(),
            n => format!(", {n} rejected (fieldrelay queue stats)"),
        };
        let running = format!(
            "{link}; {depth} {rows} queued{rejected}; {online}/{total} {devices} online",
            depth = self.depth,
            online = self.devices_online,
            total = self.devices,
        );
        match self.health() {
            Health::Progressing => running,
            Health::Stalled(stall) => format!("stalled: {stall}; {running}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Snapshot {
        Snapshot {
            probe: Probe::Answered,
            link: LinkState::Connected,
            depth: 12,
            rejected: 0,
            pollers_running: 1,
            pollers_started: 1,
            devices_online: 2,
            devices: 2,
            uplink_running: true,
        }
    }

    #[test]
    fn healthy_pipeline_with_a_down_broker_still_progresses() {
        let snapshot = Snapshot {
            link: LinkState::Connecting,
            depth: 50_000,
            ..healthy()
        };
        assert_eq!(snapshot.health(), Health::Progressing);
        assert_eq!(
            snapshot.status_line(),
            "uplink disconnected, reconnecting; 50000 rows queued; 2/2 devices online"
        );
    }

    #[test]
    fn status_line_of_a_healthy_gateway() {
        // Two devices on one bus: one poller, and the line counts devices.
        assert_eq!(
            healthy().status_line(),
            "uplink connected; 12 rows queued; 2/2 devices online"
        );
        let one = Snapshot {
            depth: 1,
            devices_online: 0,
            devices: 1,
            ..healthy()
        };
        assert_eq!(
            one.status_line(),
            "uplink connected; 1 row queued; 0/1 device online"
        );
        let rejected = Snapshot {
            rejected: 3,
            ..healthy()
        };
        assert_eq!(
            rejected.status_line(),
            "uplink connected; 12 rows queued, 3 rejected (fieldrelay queue stats); \
             2/2 devices online"
        );
    }

    #[test]
    fn a_writer_that_does_not_answer_is_a_stall() {
        let snapshot = Snapshot {
            probe: Probe::TimedOut(Duration::from_millis(250)),
            ..healthy()
        };
        assert_eq!(
            snapshot.health(),
            Health::Stalled(Stall::WriterTimedOut(Duration::from_millis(250)))
        );
        assert_eq!(
            snapshot.status_line(),
            "stalled: queue writer did not answer within 250ms; \
             uplink connected; 12 rows queued; 2/2 devices online"
        );
    }

    #[test]
    fn writer_errors_and_a_gone_writer_are_stalls() {
        let failed = Snapshot {
            probe: Probe::Failed("database is locked".into()),
            ..healthy()
        };
        assert!(failed
            .status_line()
            .starts_with("stalled: queue writer cannot lock the database: database is locked;"));
        let gone = Snapshot {
            probe: Probe::Closed,
            ..healthy()
        };
        assert_eq!(gone.health(), Health::Stalled(Stall::WriterGone));
    }

    #[test]
    fn a_dead_task_is_a_stall_even_when_the_writer_answers() {
        let poller_died = Snapshot {
            pollers_running: 0,
            ..healthy()
        };
        assert_eq!(
            poller_died.health(),
            Health::Stalled(Stall::PollersStopped {
                running: 0,
                started: 1
            })
        );
        assert!(poller_died
            .status_line()
            .starts_with("stalled: only 0 of 1 bus pollers running; "));
        let uplink_died = Snapshot {
            uplink_running: false,
            ..healthy()
        };
        assert_eq!(uplink_died.health(), Health::Stalled(Stall::UplinkStopped));
    }

    #[test]
    fn the_writer_is_reported_before_the_tasks() {
        let both = Snapshot {
            probe: Probe::Closed,
            uplink_running: false,
            ..healthy()
        };
        assert_eq!(both.health(), Health::Stalled(Stall::WriterGone));
    }
}
