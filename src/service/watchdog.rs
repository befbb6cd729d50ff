//! When to probe the pipeline and how long a probe may take, derived from systemd's
//! `WATCHDOG_USEC` (pure).

use std::time::Duration;

/// Probes per watchdog period. systemd kills the service when no `WATCHDOG=1` arrived for a whole
/// period; probing four times per period leaves room for one or two slow probes (a long fsync on
/// an SD card, a loaded CPU) before a healthy gateway would be killed.
const PROBES_PER_PERIOD: u32 = 4;

/// How often the status line is refreshed when systemd asked for no watchdog.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest tick: a `WATCHDOG_USEC` of a few microseconds must not turn the supervisor into a
/// busy loop.
const MIN_TICK: Duration = Duration::from_millis(1);

/// The supervisor's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogPlan {
    /// The period systemd enforces (`WatchdogSec=`), if it asked for pings.
    pub period: Option<Duration>,
    /// Time between probes (and status refreshes).
    pub tick: Duration,
    /// How long one probe may take before the pipeline counts as stalled. Equal to `tick`, so
    /// probes never overlap: with one tick of wait and one of probing, two pings are at most
    /// half a period apart while the pipeline is healthy.
    pub probe_deadline: Duration,
}

impl WatchdogPlan {
    /// `period` is what [`sd_notify::watchdog_enabled`] returned.
    pub fn new(period: Option<Duration>) -> WatchdogPlan {
        let tick = match period {
            Some(period) => (period / PROBES_PER_PERIOD).max(MIN_TICK),
            None => STATUS_INTERVAL,
        };
        WatchdogPlan {
            period,
            tick,
            probe_deadline: tick,
        }
    }

    /// Whether systemd expects `WATCHDOG=1` pings.
    pub fn pings(&self) -> bool {
        self.period.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thirty_second_watchdog_probes_every_seven_and_a_half_seconds() {
        let plan = WatchdogPlan::new(Some(Duration::from_secs(30)));
        assert!(plan.pings());
        assert_eq!(plan.tick, Duration::from_millis(7500));
        assert_eq!(plan.probe_deadline, plan.tick);
    }

    #[test]
    fn no_watchdog_refreshes_the_status_only() {
        let plan = WatchdogPlan::new(None);
        assert!(!plan.pings());
        assert_eq!(plan.tick, STATUS_INTERVAL);
    }

    #[test]
    fn tiny_periods_do_not_spin() {
        let plan = WatchdogPlan::new(Some(Duration::from_micros(3)));
        assert_eq!(plan.tick, MIN_TICK);
    }

    proptest! {
        /// A healthy gateway pings at most tick + probe deadline after the previous ping; that
        /// must stay well inside the period systemd enforces.
        #[test]
        fn healthy_pings_stay_within_half_the_period(usec in 4_000u64..=u64::from(u32::MAX) * 1000) {
            let period = Duration::from_micros(usec);
            let plan = WatchdogPlan::new(Some(period));
            prop_assert!(plan.tick + plan.probe_deadline <= period / 2 + Duration::from_micros(1));
            prop_assert!(plan.tick >= MIN_TICK);
        }
    }
}
