//! What goes out on a connection besides the live samples: the stored session resumed at
//! connect, the window refilled from the queue (ids recorded ahead of the wire, see the module
//! doc of [`super`]), and the pause and retry when the queue cannot commit a session write.

use rumqttc::mqttbytes::v4::Packet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::batched::Unit;
use super::Link;
use crate::config::Qos;
use crate::queue::{wire, Delivery, QueueError, StoredRow};
use crate::sample::now_ms;
use crate::uplink::connection::PacketWriter;
use crate::uplink::session::Restored;
use crate::uplink::UplinkError;

impl Link {
    /// What a new connection must resend first (see the module doc).
    pub(super) async fn resume(
        &mut self,
        session_present: bool,
        now: Instant,
    ) -> Result<Vec<Packet>, UplinkError> {
        if !session_present {
            match self.queue.reset_session().await {
                Ok(()) => {}
                // Nothing is taken until the reset is on disk: stored states would otherwise
                // mix with new packet ids.
                Err(QueueError::Commit(error)) => {
                    self.reset_due = true;
                    self.pause(&error, now);
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(Vec::new());
        }
        let rows = self.queue.unsettled().await?;
        let mut packets = Vec::with_capacity(rows.len());
        for row in &rows {
            let (pkid, received) = match row.delivery {
                Delivery::Published { pkid } => (pkid, false),
                Delivery::Received { pkid } => (pkid, true),
                Delivery::Queued => continue,
            };
            match self
                .session
                .restore(row.seq, pkid, row.qos(), received, now)
            {
                Ok(Restored::Republish { pkid }) => {
                    let packet = self.render_again(row, pkid);
                    self.keep_sent(pkid, &packet, std::slice::from_ref(row));
                    packets.push(packet);
                }
                Ok(Restored::Release(pubrel)) => packets.push(pubrel),
                Err(error) => {
                    // Only after a power cut with `sync: normal`: the stored session cannot be
                    // trusted, so start a fresh one (clean connect) rather than guess.
                    error!(%error, "stored session is inconsistent; starting a fresh broker session");
                    self.fresh_start = Some(true);
                    return Err(error.into());
                }
            }
        }
        if !packets.is_empty() {
            info!(resent = packets.len(), "uplink resumed its session");
        }
        Ok(packets)
    }

    pub(super) fn render_again(&mut self, row: &StoredRow, pkid: u16) -> Packet {
        let (qos, retain) = wire::row_flags(&row.entry);
        self.session.republish(
            pkid,
            self.topics.row(&row.entry),
            wire::row_payload(row),
            qos,
            retain,
        )
    }

    /// Sends queued rows after the session's cursor while the window has room and the rate
    /// limit allows: packet ids are committed before the PUBLISHes are written. With
    /// `drain: live_first` and a backlog on this connection, the live lane goes first
    /// ([`Link::refill_lanes`]).
    pub(super) async fn refill(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        loop {
            if self.stall.is_paused() || self.quota_paused() {
                return Ok(());
            }
            let last_seq = self.progress.borrow_and_update().last_seq;
            let now = Instant::now();
            if self.queue.acks_backlogged() {
                self.pause("acknowledgements wait for a commit", now);
                return Ok(());
            }
            let n = self.session.room().min(self.rate.available(now));
            if self.live_lane.is_some() {
                if n == 0 || !self.refill_lanes(writer, n, last_seq, now).await? {
                    return Ok(());
                }
                continue;
            }
            if n == 0 || (self.ahead.is_empty() && last_seq <= self.session.cursor()) {
                return Ok(());
            }
            if self.ahead.is_empty() {
                match self.read_ahead(last_seq).await? {
                    Fetched::Rows => {}
                    Fetched::Nothing => return Ok(()),
                    Fetched::Skipped => continue,
                }
            }
            let mut ahead = std::mem::take(&mut self.ahead);
            let rows = self.take_rows(&mut ahead, n);
            self.ahead = ahead;
            if !self.send_batch(writer, rows, Lane::Backlog, now).await? {
                return Ok(());
            }
        }
    }

    /// Publishes `rows` of one lane (in `seq` order); false when the link paused instead
    /// (the rows went back to their read-ahead).
    pub(super) async fn send_batch(
        &mut self,
        writer: &mut PacketWriter,
        rows: Vec<StoredRow>,
        lane: Lane,
        now: Instant,
    ) -> Result<bool, UplinkError> {
        let cursor = self.session.cursor();
        let live_cursor = self.live_lane.as_ref().map(|l| l.cursor);
        let (units, expired) = self.sort_out(rows, lane);
        let mut rendered = self.render_units(units, lane, now)?;
        // After the sent rows: the session's cursor only moves forward while rows go out.
        for seq in expired.iter().chain(&rendered.batched) {
            self.handed_out(lane, *seq);
        }
        if !expired.is_empty() {
            self.queue.expire(expired).await?;
        }
        for (seqs, code, topic) in std::mem::take(&mut rendered.refused) {
            self.reject(seqs, code, &topic, None, now).await?;
        }
        if rendered.packets.is_empty() {
            return Ok(true);
        }
        if !self
            .record_exactly_once(&mut rendered, lane, cursor, live_cursor, now)
            .await?
        {
            return Ok(false);
        }
        let Rendered { packets, sent, .. } = rendered;
        let again = sent
            .iter()
            .filter(|row| row.seq <= self.resend_up_to)
            .count();
        self.handed_max = sent
            .iter()
            .fold(self.handed_max, |max, row| max.max(row.seq));
        self.rate.take(packets.len(), now);
        let expiries = self.expiries(&packets);
        let correlations = self.correlations(&packets);
        writer.write_v5(&packets, &expiries, &correlations).await?;
        self.stats.published(packets.len());
        self.stats.resent(again);
        self.flowed(now);
        Ok(true)
    }

    /// `rows` grouped into messages for at most the free slots, and the `seq`s of the expired
    /// rows before the first row left over. Rows after the last message go back to the
    /// read-ahead (and expired rows among them wait for their turn there too).
    fn sort_out(&mut self, rows: Vec<StoredRow>, lane: Lane) -> (Vec<Unit>, Vec<u64>) {
        let wall = now_ms();
        let (expired, alive): (Vec<StoredRow>, Vec<StoredRow>) = rows
            .into_iter()
            .partition(|row| row.expires_ms.is_some_and(|at| at <= wall));
        let (units, rest) = self.group(alive, self.session.room(), lane == Lane::Backlog);
        let cut = rest.first().map_or(u64::MAX, |row| row.seq);
        let (expired, expire_later): (Vec<StoredRow>, Vec<StoredRow>) =
            expired.into_iter().partition(|row| row.seq < cut);
        if !rest.is_empty() || !expire_later.is_empty() {
            let mut back: Vec<StoredRow> = rest.into_iter().chain(expire_later).collect();
            back.sort_by_key(|row| row.seq);
            let ahead = match (lane, self.live_lane.as_mut()) {
                (Lane::Live, Some(live)) => &mut live.ahead,
                _ => &mut self.ahead,
            };
            super::batched::put_back(ahead, back);
        }
        (units, expired.into_iter().map(|row| row.seq).collect())
    }

    /// Records the QoS 2 packet ids of `rendered` before the wire (a resend with another id
    /// would be a second message to the broker; QoS 1 ids are not recorded at all), and drops
    /// the packets of rows gone since their fetch. False when the record failed: the step is
    /// taken back (ids, cursors, rows to the read-ahead) and the link paused.
    async fn record_exactly_once(
        &mut self,
        rendered: &mut Rendered,
        lane: Lane,
        cursor: u64,
        live_cursor: Option<u64>,
        now: Instant,
    ) -> Result<bool, UplinkError> {
        let ids = &rendered.ids;
        let marks: Vec<(u64, u16)> = ids
            .iter()
            .filter(|(_, _, exactly_once)| *exactly_once)
            .map(|(seq, pkid, _)| (*seq, *pkid))
            .collect();
        if marks.is_empty() {
            return Ok(true);
        }
        let gone = match self.queue.mark_published(marks).await {
            Ok(gone) => gone,
            Err(QueueError::Commit(error)) => {
                // Not on disk, so not on the wire: the rows wait for the retry.
                let pkids: Vec<u16> = ids.iter().map(|(_, pkid, _)| *pkid).collect();
                self.session.unsend(&pkids, cursor);
                for pkid in &pkids {
                    self.forget_sent(*pkid);
                }
                let ahead = match (lane, self.live_lane.as_mut()) {
                    (Lane::Live, Some(live)) => {
                        live.cursor = live_cursor.unwrap_or(live.cursor);
                        for (seq, _, _) in ids {
                            live.inflight.remove(seq);
                        }
                        &mut live.ahead
                    }
                    _ => &mut self.ahead,
                };
                super::batched::put_back(ahead, std::mem::take(&mut rendered.sent));
                self.pause(&error, now);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if !gone.is_empty() {
            // Evicted or expired after the fetch: never put on the wire, so the broker cannot
            // hold an id the store does not know.
            debug!(
                rows = gone.len(),
                "rows dropped after their fetch are not sent"
            );
            let mut kept = Vec::with_capacity(rendered.packets.len());
            let packets = std::mem::take(&mut rendered.packets);
            for ((seq, pkid, _), packet) in ids.iter().zip(packets) {
                if gone.contains(seq) {
                    self.session.cancel_row(*pkid);
                    self.forget_sent(*pkid);
                    if let Some(live) = self.live_lane.as_mut() {
                        live.inflight.remove(seq);
                    }
                } else {
                    kept.push(packet);
                }
            }
            rendered.packets = kept;
        }
        Ok(true)
    }

    /// The PUBLISHes of `units` (one lane's, in `seq` order), with new packet ids; rows the
    /// broker cannot take as they are (MQTT 5) are set aside for rejection instead.
    fn render_units(
        &mut self,
        units: Vec<Unit>,
        lane: Lane,
        now: Instant,
    ) -> Result<Rendered, UplinkError> {
        let mut packets = Vec::with_capacity(units.len());
        // Every message's (first seq, packet id, QoS 2?): only QoS 2 ids are recorded (see the
        // module doc of `super`), but a failed record takes the whole batch back.
        let mut ids = Vec::with_capacity(units.len());
        let mut sent = Vec::with_capacity(units.len());
        let mut batched = Vec::new();
        // Rows the broker could not take as they are (MQTT 5): (seqs, reason code, topic).
        let mut refused = Vec::new();
        for unit in units {
            if unit.batched {
                let (topic, payload) = self.render_batch(&unit);
                let seqs: Vec<u64> = unit.rows.iter().map(|row| row.seq).collect();
                let first = seqs[0];
                let qos = Qos::AtLeastOnce;
                if let Some(code) = self.refused_locally(&topic, payload.len(), qos, false) {
                    batched.extend(&seqs);
                    refused.push((seqs, code, topic));
                    continue;
                }
                let (packet, pkid) = self.session.publish_rows(seqs, topic, payload, now)?;
                self.keep_sent(pkid, &packet, &unit.rows);
                packets.push(packet);
                ids.push((first, pkid, false));
                batched.extend(unit.rows.iter().map(|row| row.seq));
                sent.extend(unit.rows);
                continue;
            }
            for row in unit.rows {
                let (qos, retain) = wire::row_flags(&row.entry);
                let (topic, payload) = (self.topics.row(&row.entry), wire::row_payload(&row));
                if let Some(code) = self.refused_locally(&topic, payload.len(), qos, retain) {
                    self.handed_out(lane, row.seq);
                    refused.push((vec![row.seq], code, topic));
                    continue;
                }
                let (packet, pkid) = match lane {
                    Lane::Backlog => self
                        .session
                        .publish_row(row.seq, topic, payload, qos, retain, now)?,
                    Lane::Live => self
                        .session
                        .publish_fresh(row.seq, topic, payload, qos, retain, now)?,
                };
                self.handed_out(lane, row.seq);
                if let (Lane::Live, Some(live)) = (lane, self.live_lane.as_mut()) {
                    live.inflight.insert(row.seq);
                }
                self.keep_sent(pkid, &packet, std::slice::from_ref(&row));
                packets.push(packet);
                ids.push((row.seq, pkid, qos == Qos::ExactlyOnce));
                sent.push(row);
            }
        }
        Ok(Rendered {
            packets,
            ids,
            sent,
            batched,
            refused,
        })
    }

    /// Row `seq` of `lane` was sent or skipped: its lane's cursor moves past it.
    fn handed_out(&mut self, lane: Lane, seq: u64) {
        match (lane, self.live_lane.as_mut()) {
            (Lane::Live, Some(live)) => live.cursor = live.cursor.max(seq),
            _ => self.session.skip_to(seq),
        }
    }

    /// Fills the read-ahead from the queue, after the session's cursor (see [`read_ahead_rows`]).
    pub(super) async fn read_ahead(&mut self, last_seq: u64) -> Result<Fetched, UplinkError> {
        let limit = read_ahead_rows(self.config.inflight_window());
        match self.queue.fetch(self.session.cursor(), limit).await {
            Ok(rows) if rows.is_empty() => {
                // Everything up to last_seq was acknowledged or dropped meanwhile.
                self.session.skip_to(last_seq);
                Ok(Fetched::Nothing)
            }
            Ok(rows) => {
                self.ahead.extend(rows);
                Ok(Fetched::Rows)
            }
            Err(e) => {
                let seq = self.undecodable(e)?;
                self.session.skip_to(seq);
                Ok(Fetched::Skipped)
            }
        }
    }

    /// A fetch failed: for a row that cannot be decoded (it can never be published; it is
    /// skipped, not deleted, so it stays in the file for inspection and everything after it
    /// flows) its `seq`, logged and counted; any other error as is.
    pub(super) fn undecodable(&self, error: QueueError) -> Result<u64, UplinkError> {
        match error {
            QueueError::Decode {
                seq,
                column,
                reason,
            } => {
                error!(seq, column, %reason, "skipping an undecodable queue row");
                self.stats.skipped_row();
                Ok(seq)
            }
            e => Err(e.into()),
        }
    }

    /// A session write failed: take no rows, hold what depends on it, try again later.
    pub(super) fn pause(&mut self, error: &str, now: Instant) {
        if self.stall.failed(now) {
            warn!(
                %error,
                held_pubrels = self.held.len(),
                "uplink paused: the queue cannot commit the session state (disk full?); the \
                 connection stays up and nothing the broker holds is lost; retrying"
            );
        }
    }

    /// Rows or session writes went through.
    pub(super) fn flowed(&mut self, now: Instant) {
        if let Some(resumed) = self.stall.flowed(now) {
            info!(
                paused_secs = resumed.paused.as_secs(),
                failed_tries = resumed.failures,
                "uplink flows again after a pause"
            );
        }
    }

    /// The pause's retry: the reset, then the held PUBRECs, then new rows (by the next refill).
    pub(super) async fn retry(&mut self, writer: &mut PacketWriter) -> Result<(), UplinkError> {
        let now = Instant::now();
        self.stall.retrying();
        if self.reset_due {
            match self.queue.reset_session().await {
                Ok(()) => self.reset_due = false,
                Err(QueueError::Commit(error)) => {
                    self.pause(&error, now);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.held.is_empty() {
            let seqs = self.held.iter().map(|(seq, _)| *seq).collect();
            match self.queue.mark_received(seqs).await {
                Ok(()) => {}
                Err(QueueError::Commit(error)) => {
                    self.pause(&error, now);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            let pubrels: Vec<Packet> = self
                .held
                .drain(..)
                .filter_map(|(_, pkid)| self.session.release_held(pkid, now))
                .collect();
            writer.write(&pubrels).await?;
        }
        self.flowed(now);
        Ok(())
    }
}

/// Rows one read-ahead fetch asks for: [`READ_AHEAD_ROWS`], and never less than four windows.
/// A fetch is a round trip to the writer thread that waits for its current commit (an fsync):
/// with a few windows per fetch a steady drain spends a good part of each row's cost waiting
/// for fetches (about 64 rows per fsync); 4,096 rows make it one wait per 4,096 rows, at a few
/// hundred KiB of decoded rows held at most.
pub(super) fn read_ahead_rows(max_inflight: u16) -> usize {
    READ_AHEAD_ROWS.max(usize::from(max_inflight) * 4)
}

/// See [`read_ahead_rows`].
const READ_AHEAD_ROWS: usize = 4096;

/// What [`Link::render_units`] made of a step's messages.
struct Rendered {
    packets: Vec<Packet>,
    /// Every message's (first seq, packet id, QoS 2?): only QoS 2 ids are recorded (see the
    /// module doc of `super`), but a failed record takes the whole step back.
    ids: Vec<(u64, u16, bool)>,
    /// The rows of those messages.
    sent: Vec<StoredRow>,
    /// The rows that went in batches, and those of batches refused locally.
    batched: Vec<u64>,
    /// Rows the broker could not take as they are (MQTT 5): (seqs, reason code, topic).
    refused: Vec<(Vec<u64>, u8, String)>,
}

/// Which lane a batch of rows belongs to (see [`crate::uplink::share`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// After the session's cursor, in `seq` order: every row with `drain: in_order`.
    Backlog,
    /// Committed since the connection came up, sent ahead of the backlog (`live_first`).
    Live,
}

/// What a read-ahead fetch found.
pub(super) enum Fetched {
    /// Rows, now in the read-ahead.
    Rows,
    /// None: everything up to the last commit was acknowledged or dropped meanwhile.
    Nothing,
    /// An undecodable row, skipped: fetch again.
    Skipped,
}

#[cfg(test)]
mod read_ahead_tests {
    use super::read_ahead_rows;

    #[test]
    fn read_ahead_is_thousands_of_rows_and_never_less_than_four_windows() {
        assert_eq!(read_ahead_rows(64), 4096);
        assert_eq!(read_ahead_rows(1), 4096);
        assert_eq!(read_ahead_rows(2000), 8000);
        assert_eq!(read_ahead_rows(u16::MAX), 4 * usize::from(u16::MAX));
    }
}
