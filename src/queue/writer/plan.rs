//! The pure half of a group commit: which commands become which writes and in what order, which
//! replies wait for the commit, and what each reply gets when the commit failed, wholly or only
//! for the group's inserts. No SQLite, no clock, no file system: the writer thread
//! ([`super::Writer`]) measures the room, commits, reads and books around these decisions, as
//! `uplink::link` does around `uplink::session`. The unit tests below cover the decisions; the
//! queue's model property test covers the whole.
//!
//! # The writes of a group, in order
//! 1. Acknowledgements kept over failed commits ([`Unwritten`]): nothing of the group may commit
//!    before them, or a packet id that `MarkPublished` reuses could reach the disk while the
//!    acknowledged row that held it is still there.
//! 2. The expiry sweep, when due (at most once per `sweep_every`, and only while some point has
//!    a `max_age`), then the eviction the capacity plan asks for (rejected rows first), so the
//!    inserts find room.
//! 3. The commands' writes, in channel order. Inserts past the capacity plan's `admit` are
//!    refused (counted, never written). `SetMaxAge` writes nothing: inserts after it in the
//!    same group already get expiries from it. An ack of an undecodable row whose PUBLISH the
//!    broker may never have had queues the row again instead of deleting it, once. An ack of
//!    the `seq` right after the group's previous write, itself an ack, extends it into one range
//!    delete (a window's PUBACKs arrive in order: one statement per group, not one per row).
//!
//! # A poisoned group
//! A transaction that fails poisons every write in it. The writer tries once more after a
//! checkpoint, then the group's other writes without its inserts ([`Write::is_insert`]), which
//! may fit where inserts do not. So a group ends in one of three [`Outcome`]s:
//! - [`Outcome::Committed`]: every reply is `Ok`.
//! - [`Outcome::WithoutInserts`]: the admitted samples are dropped (counted); a reply whose own
//!   write was an insert (a command's result message, commands taken into the inbox) fails, so
//!   a command is acknowledged to its broker only once it is on disk; the others are `Ok`.
//! - [`Outcome::Failed`]: every reply that waits for a write fails with
//!   [`QueueError::Commit`]; the group's acknowledgements are kept ([`GroupPlan::fresh`]).
//!
//! Reads (`Fetch`, `Unsettled`, `GetMeta`, `Probe`, `Recent`, the inbox's reads) are answered
//! from the file whatever the outcome.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Command, DoneReply, MarkReply, RowsReply};
use crate::queue::capacity::{self, Drops};
use crate::queue::inbox;
use crate::queue::recent::{CommandKey, RecentCommand};
use crate::queue::store::Write;
use crate::queue::unwritten::Unwritten;
use crate::queue::{Entry, QueueError};

/// What the planning of a group reads and updates of the writer's state.
#[derive(Debug, Default)]
pub(in crate::queue) struct Planner {
    /// Per (device, point) `max_age`; empty when no point has one.
    pub max_age: HashMap<(String, String), Duration>,
    /// How often at most expired rows are swept (see [`crate::queue::QueueOptions::expiry_sweep`]).
    pub sweep_every: Duration,
    /// Wall-clock time (ms) from which the next sweep is due.
    pub next_sweep_ms: i64,
    /// Undecodable rows the last [`Command::Unsettled`] returned as placeholders whose PUBLISH
    /// the broker may never have had: their ack (the PUBCOMP of the PUBREL that released their
    /// packet id) queues them again instead of deleting them (see `store::unsettled_rows`).
    pub requeue_on_ack: HashSet<u64>,
}

/// The writes of one group, in the order they are applied.
#[derive(Debug)]
pub(super) struct GroupPlan<'a> {
    pub writes: Vec<Write<'a>>,
    /// How many of the leading writes are acknowledgements carried over from failed commits
    /// (already kept in [`Unwritten`]).
    pub carried: usize,
    /// Inserts written.
    pub admitted: usize,
    /// Inserts refused by the capacity plan.
    pub rejected: usize,
}

impl Planner {
    /// Plans the writes of `commands` (see the module doc for their order). `capacity`: what
    /// the capacity plan allows this group; `now_ms`: the wall clock.
    pub(super) fn plan<'a>(
        &mut self,
        commands: &'a [Command],
        unwritten: &Unwritten,
        capacity: capacity::Plan,
        now_ms: i64,
    ) -> GroupPlan<'a> {
        let writes: Vec<Write<'a>> = unwritten
            .ack_ranges()
            .map(|(from, to)| Write::AckRange(from, to))
            .chain(unwritten.requeues().map(Write::Requeue))
            .chain(unwritten.rejects().map(|(seq, reason)| Write::Reject {
                seq,
                reason,
                now_ms,
            }))
            .collect();
        let mut plan = GroupPlan {
            carried: writes.len(),
            writes,
            admitted: 0,
            rejected: 0,
        };
        if self.sweep_due(now_ms) {
            plan.writes.push(Write::SweepExpired(now_ms));
        }
        if capacity.evict_rejected > 0 {
            plan.writes
                .push(Write::EvictRejected(capacity.evict_rejected));
        }
        if capacity.evict > 0 {
            plan.writes.push(Write::EvictOldest(capacity.evict));
        }
        for cmd in commands {
            self.add(cmd, capacity.admit, now_ms, &mut plan);
        }
        plan
    }

    /// Whether the expired rows are swept in this group; if so, the next sweep is due one
    /// `sweep_every` later.
    fn sweep_due(&mut self, now_ms: i64) -> bool {
        let due = !self.max_age.is_empty() && now_ms >= self.next_sweep_ms;
        if due {
            let every = i64::try_from(self.sweep_every.as_millis()).unwrap_or(1000);
            self.next_sweep_ms = now_ms + every;
        }
        due
    }

    /// The writes of one command, appended to `plan`.
    fn add<'a>(&mut self, cmd: &'a Command, admit: usize, now_ms: i64, plan: &mut GroupPlan<'a>) {
        let writes = &mut plan.writes;
        match cmd {
            Command::Insert(entry) => {
                if plan.admitted >= admit {
                    plan.rejected += 1;
                    return;
                }
                plan.admitted += 1;
                writes.push(Write::Insert {
                    entry,
                    expires_ms: self.expires_ms(entry),
                });
            }
            Command::Ack(seq) if self.requeue_on_ack.remove(seq) => {
                writes.push(Write::Requeue(*seq))
            }
            // Consecutive acknowledgements (a window's PUBACKs in order) are one range delete:
            // one statement instead of one per row. Only the group's own writes are merged, and
            // only with the write just before, so channel order holds.
            Command::Ack(seq) => {
                let own = writes.len() > plan.carried;
                if !(own && writes.last_mut().is_some_and(|last| extend_ack(last, *seq))) {
                    writes.push(Write::Ack(*seq));
                }
            }
            Command::Expire(seqs) => writes.extend(seqs.iter().map(|s| Write::Expire(*s))),
            Command::Reject { seqs, reason } => writes.extend(seqs.iter().map(|s| Write::Reject {
                seq: *s,
                reason: *reason,
                now_ms,
            })),
            Command::SetMaxAge(ages) => self.max_age.clone_from(ages),
            Command::MarkPublished { rows, .. } => {
                writes.extend(rows.iter().map(|(seq, pkid)| Write::MarkPublished {
                    seq: *seq,
                    pkid: *pkid,
                }))
            }
            Command::MarkReceived { seqs, .. } => {
                writes.extend(seqs.iter().map(|s| Write::MarkReceived(*s)))
            }
            Command::ResetSession { .. } => {
                self.requeue_on_ack.clear();
                writes.push(Write::ResetSession)
            }
            Command::SetMeta { key, value, .. } => writes.push(Write::SetMeta { key, value }),
            Command::Taken { key, .. } => writes.push(Write::CommandTaken { key, now_ms }),
            Command::Answered {
                key,
                result,
                message,
                inbox,
                ..
            } => writes.push(Write::CommandAnswered {
                key: key.as_ref(),
                result,
                message: message.as_ref(),
                inbox: *inbox,
                now_ms,
            }),
            Command::Inbox(request) => writes.push(Write::Inbox { request, now_ms }),
            Command::Fetch { .. }
            | Command::Unsettled { .. }
            | Command::GetMeta { .. }
            | Command::Close
            | Command::Probe(_)
            | Command::Recent { .. } => {}
        }
    }

    /// A sample's expiry from its point's `max_age`; messages never expire.
    fn expires_ms(&self, entry: &Entry) -> Option<i64> {
        let Entry::Sample(s) = entry else {
            return None;
        };
        if self.max_age.is_empty() {
            return None;
        }
        let age = self
            .max_age
            .get(&(s.device.to_string(), s.point.to_string()))?;
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Some(s.ts_ms.saturating_add(age_ms))
    }
}

/// Makes `last` (an acknowledgement) cover `seq` too when `seq` comes right after it.
fn extend_ack(last: &mut Write<'_>, seq: u64) -> bool {
    let (from, to) = match *last {
        Write::Ack(seq) => (seq, seq),
        Write::AckRange(from, to) => (from, to),
        _ => return false,
    };
    if to.checked_add(1) != Some(seq) {
        return false;
    }
    *last = Write::AckRange(from, seq);
    true
}

impl GroupPlan<'_> {
    /// The group's own writes, after those carried over: the acknowledgements among them are
    /// kept when the group's commit fails.
    pub fn fresh(&self) -> &[Write<'_>] {
        &self.writes[self.carried..]
    }

    /// What the group dropped before its transaction did anything (the transaction's own
    /// evictions and expiries are added by the writer): the refused inserts, and the admitted
    /// ones unless they were in the transaction that went through.
    pub fn drops(&self, inserts_applied: bool, first_failed: bool) -> Drops {
        Drops {
            capacity: self.rejected as u64,
            failed: if inserts_applied {
                0
            } else {
                self.admitted as u64
            },
            failed_commits: u64::from(first_failed),
            ..Drops::default()
        }
    }
}

/// One command's reply, resolved after the commit.
#[derive(Debug)]
pub(super) enum Pending {
    Rows {
        after_seq: u64,
        limit: usize,
        reply: RowsReply,
    },
    Unsettled(RowsReply),
    Meta {
        key: &'static str,
        reply: oneshot::Sender<Result<Option<String>, QueueError>>,
    },
    /// A write that is not an insert (a session write, a meta value, a command taken).
    Done(DoneReply),
    Marked {
        seqs: Vec<u64>,
        reply: MarkReply,
    },
    /// Liveness probe: the write lock is taken after the group's commit.
    Probe(oneshot::Sender<Result<(), QueueError>>),
    Recent {
        key: CommandKey,
        reply: oneshot::Sender<Result<Option<RecentCommand>, QueueError>>,
    },
    /// A command's answer; `inserts`: with a result message (a row of its own).
    Answered {
        reply: DoneReply,
        inserts: bool,
    },
    Inbox(inbox::Request),
}

/// The replies of a group's commands, in channel order. Inserts, acks, expiries and max ages
/// have none.
pub(super) fn pending(commands: Vec<Command>) -> Vec<Pending> {
    commands
        .into_iter()
        .filter_map(|cmd| {
            Some(match cmd {
                Command::Fetch {
                    after_seq,
                    limit,
                    reply,
                } => Pending::Rows {
                    after_seq,
                    limit,
                    reply,
                },
                Command::Unsettled { reply } => Pending::Unsettled(reply),
                Command::MarkPublished { rows, reply } => Pending::Marked {
                    seqs: rows.iter().map(|(seq, _)| *seq).collect(),
                    reply,
                },
                Command::MarkReceived { reply, .. }
                | Command::ResetSession { reply }
                | Command::SetMeta { reply, .. }
                | Command::Taken { reply, .. } => Pending::Done(reply),
                Command::GetMeta { key, reply } => Pending::Meta { key, reply },
                Command::Probe(reply) => Pending::Probe(reply),
                Command::Recent { key, reply } => Pending::Recent { key, reply },
                Command::Answered { reply, message, .. } => Pending::Answered {
                    reply,
                    inserts: message.is_some(),
                },
                Command::Inbox(request) => Pending::Inbox(request),
                Command::Insert(_)
                | Command::Ack(_)
                | Command::Expire(_)
                | Command::Reject { .. }
                | Command::SetMaxAge(_)
                | Command::Close => return None,
            })
        })
        .collect()
}

/// How a group's commit went, as its replies see it (see "A poisoned group" in the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every write went through (or there was nothing to write). `unmarked`: the
    /// `MarkPublished` rows that no longer exist.
    Committed { unmarked: Vec<u64> },
    /// The group's writes went through without its inserts.
    WithoutInserts { unmarked: Vec<u64> },
    /// No transaction went through: why.
    Failed(String),
}

impl Outcome {
    /// A transaction went through; `inserts_applied`: with the group's inserts.
    pub fn applied(unmarked: Vec<u64>, inserts_applied: bool) -> Outcome {
        if inserts_applied {
            Outcome::Committed { unmarked }
        } else {
            Outcome::WithoutInserts { unmarked }
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Outcome::Failed(e) => Some(e),
            Outcome::Committed { .. } | Outcome::WithoutInserts { .. } => None,
        }
    }

    /// The reply of a write that is not an insert.
    pub fn done(&self) -> Result<(), QueueError> {
        match self.error() {
            Some(e) => Err(QueueError::Commit(e.to_owned())),
            None => Ok(()),
        }
    }

    /// `MarkPublished`'s reply: those of `seqs` that no longer exist (their PUBLISH must not be
    /// sent).
    pub fn marked(&self, seqs: Vec<u64>) -> Result<Vec<u64>, QueueError> {
        match self {
            Outcome::Failed(e) => Err(QueueError::Commit(e.clone())),
            Outcome::Committed { unmarked } | Outcome::WithoutInserts { unmarked } => Ok(seqs
                .into_iter()
                .filter(|seq| unmarked.contains(seq))
                .collect()),
        }
    }

    /// A command's answer; `inserts`: with a result message. Failed if its transaction failed,
    /// even when the group's other writes then went through without it.
    pub fn answered(&self, inserts: bool) -> Result<(), QueueError> {
        match self {
            Outcome::WithoutInserts { .. } if inserts => Err(QueueError::Commit(
                "the transaction holding the command's result failed".to_owned(),
            )),
            _ => self.done(),
        }
    }

    /// Why an inbox request's transaction failed, `None` if it committed; `inserts`: the
    /// request stores commands (like an answer, see [`Outcome::answered`]).
    pub fn inbox_error(&self, inserts: bool) -> Option<String> {
        match self {
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::WithoutInserts { .. } if inserts => {
                Some("the transaction holding the commands failed".to_owned())
            }
            Outcome::Committed { .. } | Outcome::WithoutInserts { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::*;
    use crate::config::Qos;
    use crate::queue::{Message, MessageKind};
    use crate::sample::{Sample, Value};

    const NOW: i64 = 1_700_000_000_000;

    fn insert(point: &str, ts_ms: i64) -> Command {
        Command::Insert(Entry::Sample(Sample {
            device: Arc::from("plc1"),
            point: Arc::from(point),
            value: Value::Int(1),
            ts_ms,
            qos: Qos::AtLeastOnce,
            retain: false,
        }))
    }

    fn message() -> Message {
        Message {
            kind: MessageKind::CommandResult,
            device: Arc::from("plc1"),
            point: Arc::from("sp"),
            payload: "{}".to_owned(),
            ts_ms: NOW,
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }

    fn key() -> CommandKey {
        CommandKey {
            origin: "cloud",
            device: "plc1".to_owned(),
            point: "sp".to_owned(),
            id: "7".to_owned(),
        }
    }

    /// A reply whose receiver is dropped: the plan never sends on it.
    fn done() -> DoneReply {
        oneshot::channel().0
    }

    fn ages(point: &str, age: Duration) -> HashMap<(String, String), Duration> {
        HashMap::from([(("plc1".to_owned(), point.to_owned()), age)])
    }

    fn room(admit: usize, evict: u64) -> capacity::Plan {
        capacity::Plan {
            evict,
            admit,
            ..capacity::Plan::default()
        }
    }

    /// The writes of a plan, one short word each, to compare whole plans at a glance.
    fn shape(plan: &GroupPlan<'_>) -> Vec<String> {
        plan.writes
            .iter()
            .map(|w| match w {
                Write::Insert { entry, expires_ms } => {
                    let point = match entry {
                        Entry::Sample(s) => s.point.to_string(),
                        Entry::Message(m) => m.point.to_string(),
                    };
                    match expires_ms {
                        Some(at) => format!("insert {point} expires +{}", at - NOW),
                        None => format!("insert {point}"),
                    }
                }
                Write::Ack(seq) => format!("ack {seq}"),
                Write::AckRange(from, to) => format!("ack {from}..={to}"),
                Write::Expire(seq) => format!("expire {seq}"),
                Write::MarkPublished { seq, pkid } => format!("published {seq} pkid {pkid}"),
                Write::MarkReceived(seq) => format!("received {seq}"),
                Write::ResetSession => "reset".to_owned(),
                Write::Requeue(seq) => format!("requeue {seq}"),
                Write::SweepExpired(at) => format!("sweep at +{}", at - NOW),
                Write::EvictOldest(n) => format!("evict {n}"),
                Write::EvictRejected(n) => format!("evict rejected {n}"),
                Write::Reject { seq, reason, .. } => format!("reject {seq} {reason:#x}"),
                Write::SetMeta { key, value } => format!("meta {key}={value}"),
                Write::CommandTaken { key, .. } => format!("taken {}", key.id),
                Write::CommandAnswered { message, inbox, .. } => {
                    format!("answered message {} inbox {inbox:?}", message.is_some())
                }
                Write::Inbox { request, .. } => format!("inbox inserts {}", request.inserts()),
            })
            .collect()
    }

    #[test]
    fn kept_acknowledgements_come_first_then_the_sweep_and_the_eviction() {
        let mut unwritten = Unwritten::default();
        for seq in [3, 4, 9] {
            unwritten.ack(seq);
        }
        unwritten.requeue(12);
        unwritten.reject(14, 0x87);
        let mut planner = Planner {
            max_age: ages("p", Duration::from_secs(60)),
            sweep_every: Duration::from_secs(1),
            ..Planner::default()
        };
        let commands = [
            Command::Ack(20),
            insert("q", NOW),
            Command::Reject {
                seqs: vec![21, 22],
                reason: 0x90,
            },
        ];
        let capacity = capacity::Plan {
            evict_rejected: 1,
            ..room(1, 2)
        };
        let plan = planner.plan(&commands, &unwritten, capacity, NOW);
        assert_eq!(
            shape(&plan),
            [
                "ack 3..=4",
                "ack 9..=9",
                "requeue 12",
                "reject 14 0x87",
                "sweep at +0",
                "evict rejected 1",
                "evict 2",
                "ack 20",
                "insert q",
                "reject 21 0x90",
                "reject 22 0x90"
            ]
        );
        assert_eq!(plan.carried, 4);
        assert_eq!(plan.fresh().len(), 7);
    }

    #[test]
    fn inserts_past_the_capacity_plan_are_refused_and_the_other_writes_stay() {
        let mut planner = Planner::default();
        let commands = [
            insert("a", NOW),
            insert("b", NOW),
            Command::Ack(5),
            insert("c", NOW),
            Command::Expire(vec![6, 7]),
        ];
        let plan = planner.plan(&commands, &Unwritten::default(), room(2, 0), NOW);
        assert_eq!(
            shape(&plan),
            ["insert a", "insert b", "ack 5", "expire 6", "expire 7"]
        );
        assert_eq!((plan.admitted, plan.rejected), (2, 1));
    }

    #[test]
    fn a_new_max_age_applies_to_the_inserts_after_it_in_the_same_group() {
        let mut planner = Planner::default();
        let commands = [
            insert("p", NOW),
            Command::SetMaxAge(ages("p", Duration::from_secs(10))),
            insert("p", NOW),
            insert("other", NOW),
        ];
        let plan = planner.plan(&commands, &Unwritten::default(), room(3, 0), NOW);
        // No sweep yet: the ages arrived after the group's sweep was decided.
        assert_eq!(
            shape(&plan),
            ["insert p", "insert p expires +10000", "insert other"]
        );
        let later = planner.plan(&[], &Unwritten::default(), room(0, 0), NOW + 5);
        assert_eq!(shape(&later), ["sweep at +5"]);
    }

    #[test]
    fn the_sweep_runs_at_most_once_per_interval_and_only_with_max_ages() {
        let mut planner = Planner {
            sweep_every: Duration::from_secs(1),
            ..Planner::default()
        };
        let none = Unwritten::default();
        assert!(shape(&planner.plan(&[], &none, room(0, 0), NOW)).is_empty());
        planner.max_age = ages("p", Duration::from_secs(60));
        let sweeps: Vec<bool> = [0, 999, 1000, 1500, 2000]
            .into_iter()
            .map(|at| {
                !planner
                    .plan(&[], &none, room(0, 0), NOW + at)
                    .writes
                    .is_empty()
            })
            .collect();
        assert_eq!(sweeps, [true, false, true, false, true]);
    }

    #[test]
    fn consecutive_acks_of_the_group_become_one_range_in_channel_order() {
        let mut planner = Planner::default();
        let mut unwritten = Unwritten::default();
        for seq in [3, 4] {
            unwritten.ack(seq);
        }
        let commands = [
            Command::Ack(5),
            Command::Ack(6),
            Command::Ack(7),
            Command::Ack(9),
            insert("q", NOW),
            Command::Ack(10),
            Command::Ack(11),
            Command::Ack(11),
            Command::Ack(u64::MAX),
        ];
        let plan = planner.plan(&commands, &unwritten, room(1, 0), NOW);
        assert_eq!(
            shape(&plan),
            [
                "ack 3..=4",
                "ack 5..=7",
                "ack 9",
                "insert q",
                "ack 10..=11",
                "ack 11",
                "ack 18446744073709551615"
            ],
            "never merged into the carried range, nor across another write"
        );
        assert_eq!(plan.carried, 1);
    }

    #[test]
    fn an_undecodable_rows_ack_requeues_it_once_and_a_session_reset_forgets_them() {
        let mut planner = Planner {
            requeue_on_ack: HashSet::from([4, 5]),
            ..Planner::default()
        };
        let none = Unwritten::default();
        let commands = [Command::Ack(4), Command::Ack(4), Command::Ack(6)];
        let plan = planner.plan(&commands, &none, room(0, 0), NOW);
        assert_eq!(shape(&plan), ["requeue 4", "ack 4", "ack 6"]);
        let commands = [Command::ResetSession { reply: done() }, Command::Ack(5)];
        let plan = planner.plan(&commands, &none, room(0, 0), NOW);
        assert_eq!(shape(&plan), ["reset", "ack 5"]);
        assert!(planner.requeue_on_ack.is_empty());
    }

    #[test]
    fn session_meta_and_command_writes_follow_channel_order() {
        let mut planner = Planner::default();
        let request = inbox::Request::Take {
            commands: Vec::new(),
            taken: RefCell::new(Vec::new()),
            reply: oneshot::channel().0,
        };
        let commands = [
            Command::MarkPublished {
                rows: vec![(1, 10), (2, 11)],
                reply: oneshot::channel().0,
            },
            Command::MarkReceived {
                seqs: vec![1],
                reply: done(),
            },
            Command::SetMeta {
                key: "session_peer",
                value: "broker".to_owned(),
                reply: done(),
            },
            Command::Taken {
                key: key(),
                reply: done(),
            },
            Command::Answered {
                key: Some(key()),
                result: "ok".to_owned(),
                message: Some(message()),
                inbox: Some(3),
                reply: done(),
            },
            Command::Inbox(request),
            Command::Inbox(inbox::Request::Done(4)),
            Command::Fetch {
                after_seq: 0,
                limit: 10,
                reply: oneshot::channel().0,
            },
        ];
        let plan = planner.plan(&commands, &Unwritten::default(), room(0, 0), NOW);
        assert_eq!(
            shape(&plan),
            [
                "published 1 pkid 10",
                "published 2 pkid 11",
                "received 1",
                "meta session_peer=broker",
                "taken 7",
                "answered message true inbox Some(3)",
                "inbox inserts true",
                "inbox inserts false"
            ]
        );
        assert_eq!((plan.admitted, plan.rejected), (0, 0));
    }

    #[test]
    fn replies_wait_in_channel_order_and_writes_without_reply_have_none() {
        let commands = vec![
            insert("p", NOW),
            Command::Fetch {
                after_seq: 3,
                limit: 10,
                reply: oneshot::channel().0,
            },
            Command::Ack(1),
            Command::MarkPublished {
                rows: vec![(1, 10), (2, 11)],
                reply: oneshot::channel().0,
            },
            Command::Expire(vec![2]),
            Command::Answered {
                key: None,
                result: "ok".to_owned(),
                message: Some(message()),
                inbox: None,
                reply: done(),
            },
            Command::Answered {
                key: Some(key()),
                result: "ok".to_owned(),
                message: None,
                inbox: None,
                reply: done(),
            },
            Command::SetMaxAge(HashMap::new()),
            Command::ResetSession { reply: done() },
            Command::Close,
            Command::Probe(oneshot::channel().0),
        ];
        let kinds: Vec<String> = pending(commands)
            .into_iter()
            .map(|p| match p {
                Pending::Rows {
                    after_seq, limit, ..
                } => format!("rows after {after_seq} limit {limit}"),
                Pending::Marked { seqs, .. } => format!("marked {seqs:?}"),
                Pending::Answered { inserts, .. } => format!("answered inserts {inserts}"),
                Pending::Done(_) => "done".to_owned(),
                Pending::Probe(_) => "probe".to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "rows after 3 limit 10",
                "marked [1, 2]",
                "answered inserts true",
                "answered inserts false",
                "done",
                "probe"
            ]
        );
    }

    fn commit_error(reply: Result<(), QueueError>) -> Option<String> {
        match reply {
            Ok(()) => None,
            Err(QueueError::Commit(e)) => Some(e),
            Err(other) => panic!("not a commit error: {other}"),
        }
    }

    #[test]
    fn a_committed_group_answers_every_reply_and_names_the_rows_gone() {
        let outcome = Outcome::applied(vec![2, 9], true);
        assert_eq!(
            outcome,
            Outcome::Committed {
                unmarked: vec![2, 9]
            }
        );
        assert!(outcome.done().is_ok());
        assert!(outcome.answered(true).is_ok());
        assert_eq!(outcome.inbox_error(true), None);
        assert_eq!(outcome.marked(vec![1, 2, 3]).ok(), Some(vec![2]));
    }

    #[test]
    fn a_group_committed_without_its_inserts_fails_only_the_replies_of_inserts() {
        let outcome = Outcome::applied(vec![3], false);
        assert_eq!(outcome, Outcome::WithoutInserts { unmarked: vec![3] });
        assert!(outcome.done().is_ok());
        assert_eq!(outcome.marked(vec![3, 4]).ok(), Some(vec![3]));
        assert!(outcome.answered(false).is_ok());
        assert_eq!(
            commit_error(outcome.answered(true)).as_deref(),
            Some("the transaction holding the command's result failed")
        );
        assert_eq!(outcome.inbox_error(false), None);
        assert_eq!(
            outcome.inbox_error(true).as_deref(),
            Some("the transaction holding the commands failed")
        );
    }

    #[test]
    fn a_failed_group_fails_every_reply_that_waits_for_a_write_with_its_error() {
        let outcome = Outcome::Failed("database or disk is full".to_owned());
        let error = Some("database or disk is full");
        assert_eq!(commit_error(outcome.done()).as_deref(), error);
        assert_eq!(commit_error(outcome.answered(false)).as_deref(), error);
        assert_eq!(commit_error(outcome.answered(true)).as_deref(), error);
        assert_eq!(outcome.inbox_error(false).as_deref(), error);
        let marked = outcome.marked(vec![1]).map(|_| ());
        assert_eq!(commit_error(marked).as_deref(), error);
    }

    #[test]
    fn a_poisoned_group_drops_its_admitted_inserts_on_top_of_the_refused_ones() {
        let plan = GroupPlan {
            writes: Vec::new(),
            carried: 0,
            admitted: 5,
            rejected: 2,
        };
        let committed = plan.drops(true, false);
        assert_eq!(
            (
                committed.capacity,
                committed.failed,
                committed.failed_commits
            ),
            (2, 0, 0)
        );
        let retried = plan.drops(true, true);
        assert_eq!((retried.failed, retried.failed_commits), (0, 1));
        let poisoned = plan.drops(false, true);
        assert_eq!(
            (poisoned.capacity, poisoned.failed, poisoned.failed_commits),
            (2, 5, 1)
        );
    }
}
