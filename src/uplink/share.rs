//! The window's split between fresh rows and a backlog under `uplink.drain: live_first`. Pure:
//! the link counts and fetches, this decides how many rows of each lane go out.
//!
//! At a connection, the rows already committed are the *backlog*; rows committed after it are
//! *live*. Each lane goes out in `seq` order. While backlog rows wait, live rows may hold at
//! most [`Share::live_cap`] slots of the window (`live_share` percent, at least one), and take
//! free slots before the backlog does; the backlog gets every other slot. With no backlog
//! waiting, live rows may use the whole window. No slot stays idle while a lane has a row that
//! may take it, so the backlog drains at the full window when nothing fresh comes in.
//!
//! A live row therefore waits for at most one free slot (about a round trip ÷ window on a busy
//! link), never for the backlog; a flood of live rows cannot starve the backlog below
//! `100 - live_share` percent of the window.

/// How many of the free slots each lane gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub live: usize,
    pub backlog: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    live_cap: usize,
}

impl Share {
    /// `percent` of a window of `max_inflight`, rounded up, at least one slot.
    pub fn new(max_inflight: u16, percent: u8) -> Share {
        let slots = (usize::from(max_inflight) * usize::from(percent)).div_ceil(100);
        Share {
            live_cap: slots.clamp(1, usize::from(max_inflight).max(1)),
        }
    }

    /// Most live rows in flight while backlog rows wait.
    pub fn live_cap(&self) -> usize {
        self.live_cap
    }

    /// Splits `room` free slots: `live_inflight` live rows are in flight, `live_ready` live rows
    /// are ready to go, and whether backlog rows wait.
    pub fn split(
        &self,
        room: usize,
        live_inflight: usize,
        live_ready: usize,
        backlog_waits: bool,
    ) -> Split {
        let live_room = if backlog_waits {
            self.live_cap.saturating_sub(live_inflight)
        } else {
            room
        };
        let live = live_ready.min(live_room).min(room);
        Split {
            live,
            backlog: if backlog_waits { room - live } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_quarter_of_64_is_16_and_a_tiny_share_still_one_slot() {
        assert_eq!(Share::new(64, 25).live_cap(), 16);
        assert_eq!(Share::new(64, 1).live_cap(), 1);
        assert_eq!(Share::new(3, 25).live_cap(), 1);
        assert_eq!(Share::new(1, 90).live_cap(), 1);
    }

    #[test]
    fn live_rows_go_first_up_to_their_share_and_the_backlog_takes_the_rest() {
        let share = Share::new(64, 25);
        let split = |room, inflight, ready, waits| share.split(room, inflight, ready, waits);
        assert_eq!(
            split(4, 0, 2, true),
            Split {
                live: 2,
                backlog: 2
            }
        );
        assert_eq!(
            split(64, 10, 30, true),
            Split {
                live: 6,
                backlog: 58
            }
        );
        assert_eq!(
            split(1, 16, 5, true),
            Split {
                live: 0,
                backlog: 1
            }
        );
        assert_eq!(
            split(40, 16, 5, false),
            Split {
                live: 5,
                backlog: 0
            }
        );
    }

    proptest! {
        #[test]
        fn the_split_is_bounded_and_leaves_no_usable_slot_idle(
            max_inflight in 1u16..=512,
            percent in 1u8..=90,
            room_used in 0usize..=512,
            live_inflight in 0usize..=512,
            live_ready in 0usize..=600,
            backlog_waits in any::<bool>(),
        ) {
            let window = usize::from(max_inflight);
            let room = window.saturating_sub(room_used.min(window));
            let live_inflight = live_inflight.min(window - room);
            let share = Share::new(max_inflight, percent);
            let Split { live, backlog } = share.split(room, live_inflight, live_ready, backlog_waits);
            prop_assert!(live + backlog <= room, "never more than the free slots");
            prop_assert!(live <= live_ready);
            if backlog_waits {
                // The share holds while the backlog waits...
                prop_assert!(live_inflight + live <= share.live_cap().max(live_inflight));
                // ...and every slot the live lane may not or cannot use goes to the backlog.
                prop_assert_eq!(live + backlog, room);
                // Live rows are served first, up to their share.
                let may = share.live_cap().saturating_sub(live_inflight).min(room);
                prop_assert_eq!(live, live_ready.min(may));
            } else {
                prop_assert_eq!(backlog, 0);
                prop_assert_eq!(live, live_ready.min(room), "the whole window");
            }
            // The backlog always keeps at least 10% of the window.
            prop_assert!(share.live_cap() <= window.max(1));
            if window >= 10 {
                prop_assert!(share.live_cap() <= window * 9 / 10 + 1);
            }
        }
    }
}
