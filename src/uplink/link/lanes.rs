//! `uplink.drain: live_first` on a connection: the live lane's own cursor and read-ahead beside
//! the backlog's (the session's cursor and [`Link::ahead`](super::Link)), split by
//! [`Share`](crate::uplink::share). At the connection, the rows committed up to then are the
//! backlog; once every backlog row was handed out, the lanes merge back into one (the session's
//! cursor jumps past the newest live row sent) and the connection goes on in `seq` order.
//!
//! Each lane is in `seq` order and every row of both goes out exactly as with `in_order`
//! (packet ids, QoS 2 ids committed first, expiry, resends after a reconnect): only the order
//! between the lanes differs. A reconnect starts over with the rows then committed as the
//! backlog.

use std::collections::{HashSet, VecDeque};

use tokio::time::Instant;
use tracing::info;

use super::window::{read_ahead_rows, Fetched, Lane};
use super::Link;
use crate::queue::StoredRow;
use crate::uplink::connection::PacketWriter;
use crate::uplink::share::Share;
use crate::uplink::UplinkError;

/// The live lane of one connection.
#[derive(Debug)]
pub(super) struct LiveLane {
    share: Share,
    /// The newest backlog row: `last_seq` when the connection came up.
    from: u64,
    /// The newest live row handed out (sent or skipped).
    pub cursor: u64,
    /// Live rows fetched and not sent yet, in `seq` order, after `cursor`.
    pub ahead: VecDeque<StoredRow>,
    /// Live rows in flight, by `seq`.
    pub inflight: HashSet<u64>,
}

impl LiveLane {
    pub fn new(share: Share, last_seq: u64) -> LiveLane {
        LiveLane {
            share,
            from: last_seq,
            cursor: last_seq,
            ahead: VecDeque::new(),
            inflight: HashSet::new(),
        }
    }
}

impl Link {
    /// One step of the refill while the lanes are apart: fill both read-aheads, split the `n`
    /// slots, send the live rows, then the backlog's. False when nothing more can go out now.
    pub(super) async fn refill_lanes(
        &mut self,
        writer: &mut PacketWriter,
        n: usize,
        last_seq: u64,
        now: Instant,
    ) -> Result<bool, UplinkError> {
        let Some(from) = self.live_lane.as_ref().map(|l| l.from) else {
            return Ok(true);
        };
        if self.ahead.is_empty() && self.session.cursor() < from {
            if let Fetched::Skipped = self.read_ahead(from).await? {
                return Ok(true);
            }
            // The fetch reads past the backlog: those rows are the live lane's.
            while self.ahead.back().is_some_and(|row| row.seq > from) {
                self.ahead.pop_back();
            }
            if self.ahead.is_empty() {
                self.session.skip_to(from);
            }
        }
        if self.ahead.is_empty() {
            self.merge_lanes();
            return Ok(true);
        }
        self.fill_live(last_seq).await?;
        let Some(live) = self.live_lane.as_mut() else {
            return Ok(true);
        };
        let split = live
            .share
            .split(n, live.inflight.len(), live.ahead.len(), true);
        let fresh: Vec<StoredRow> = live.ahead.drain(..split.live).collect();
        let backlog: Vec<StoredRow> = self
            .ahead
            .drain(..split.backlog.min(self.ahead.len()))
            .collect();
        if fresh.is_empty() && backlog.is_empty() {
            return Ok(false);
        }
        if !fresh.is_empty() && !self.send_batch(writer, fresh, Lane::Live, now).await? {
            return Ok(false);
        }
        if !backlog.is_empty() && !self.send_batch(writer, backlog, Lane::Backlog, now).await? {
            return Ok(false);
        }
        Ok(true)
    }

    /// Fetches live rows when the lane has none ready, may send one, and newer rows exist.
    async fn fill_live(&mut self, last_seq: u64) -> Result<(), UplinkError> {
        let limit = read_ahead_rows(self.config.inflight_window());
        let Some(live) = self.live_lane.as_ref() else {
            return Ok(());
        };
        let may_send = live.inflight.len() < live.share.live_cap();
        if !live.ahead.is_empty() || last_seq <= live.cursor || !may_send {
            return Ok(());
        }
        let fetched = match self.queue.fetch(live.cursor, limit).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.undecodable(e)?),
        };
        if let Some(live) = self.live_lane.as_mut() {
            match fetched {
                Err(skipped) => live.cursor = skipped,
                Ok(rows) if rows.is_empty() => live.cursor = last_seq,
                Ok(rows) => live.ahead.extend(rows),
            }
        }
        Ok(())
    }

    /// Every backlog row was handed out: one lane again, after the newest live row sent.
    fn merge_lanes(&mut self) {
        if let Some(live) = self.live_lane.take() {
            self.session.skip_to(live.cursor);
            self.ahead = live.ahead;
            info!(
                backlog_last_seq = live.from,
                "uplink sent its backlog; fresh and queued rows go out in seq order again"
            );
        }
    }

    /// A row was acknowledged: if it was live, its slot in the live share is free.
    pub(super) fn live_released(&mut self, seq: u64) {
        if let Some(live) = self.live_lane.as_mut() {
            live.inflight.remove(&seq);
        }
    }
}
