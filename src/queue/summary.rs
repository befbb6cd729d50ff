//! What `fieldrelay queue stats` shows: the queue's rows by device, point and kind, the rows in
//! flight with their packet ids, the ends of the queue with their ages, the file sizes and the
//! quarantined files beside it — as a text report for a person or one JSON document for a
//! script. Pure: the numbers are gathered by [`super::QueueReader::contents`] and
//! [`super::inspect`]; `now_ms` is passed in.

use std::path::PathBuf;

use super::{reason, MessageKind};
use crate::table;

/// One end of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    pub seq: u64,
    pub ts_ms: i64,
}

/// The rows of one (device, point, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub device: String,
    /// Empty for device-level kinds.
    pub point: String,
    /// The `kind` column (0 sample, see [`MessageKind`]).
    pub kind: i64,
    pub rows: u64,
    /// Rows with a session state (PUBLISH sent, or PUBREC received).
    pub in_flight: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub oldest_ts_ms: i64,
}

/// A row the broker may hold a packet id for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub seq: u64,
    pub device: String,
    pub point: String,
    pub kind: i64,
    /// The `state` column: 1 PUBLISH sent, 2 PUBREC received (QoS 2).
    pub state: i64,
    pub pkid: Option<i64>,
}

/// The rejected rows (`rejected.rs`) of one reason, device, point and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedGroup {
    /// The reason code the broker (or the gateway, 0x95) refused them with.
    pub reason: u8,
    pub device: String,
    pub point: String,
    pub kind: i64,
    pub rows: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// When the newest of them was rejected.
    pub last_rejected_ms: i64,
}

/// What the rows of a queue file say, read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The newest `seq` ever handed out (it survives the row's deletion).
    pub last_seq: u64,
    /// Bytes of pages in use (what `store.max_size` bounds).
    pub used_bytes: u64,
    pub groups: Vec<Group>,
    pub in_flight: Vec<InFlight>,
    pub oldest: Option<RowRef>,
    pub newest: Option<RowRef>,
    /// `client_id@host:port` of the broker session the packet ids belong to.
    pub session_peer: Option<String>,
    /// Rows the broker refused for good, kept aside (not in `groups`).
    pub rejected: Vec<RejectedGroup>,
}

/// A file and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSize {
    pub name: String,
    pub bytes: u64,
}

/// Everything `queue stats` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub file: PathBuf,
    pub schema_version: i64,
    pub contents: Contents,
    /// The database and its `-wal`/`-shm` as found on disk.
    pub files: Vec<FileSize>,
    /// `queue.db.corrupt-*` files in the data directory; `None` when a single file was
    /// inspected.
    pub quarantined: Option<Vec<FileSize>>,
}

/// The name of a `kind` code as the tool shows it.
pub fn kind_name(code: i64) -> String {
    if code == 0 {
        return "sample".to_owned();
    }
    match MessageKind::from_code(code) {
        Some(MessageKind::DeviceStatus) => "device_status".to_owned(),
        Some(MessageKind::CommandResult) => "command_result".to_owned(),
        Some(MessageKind::ConfigResult) => "config_result".to_owned(),
        Some(MessageKind::ConfigCurrent) => "config_current".to_owned(),
        Some(MessageKind::CommandResponse) => "command_response".to_owned(),
        None => format!("kind_{code}"),
    }
}

/// The name of a `state` code: what the broker has of the row.
pub fn state_name(code: i64) -> String {
    match code {
        0 => "queued".to_owned(),
        1 => "sent".to_owned(),
        2 => "received".to_owned(),
        other => format!("state_{other}"),
    }
}

/// `512 B`, `4.0 KiB`, `2.1 MiB`, `1.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `0s`, `45s`, `3m 07s`, `2h 05m`, `3d 04h`: precise enough for a backlog, short.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl Summary {
    /// Rows in the queue.
    pub fn rows(&self) -> u64 {
        self.contents.groups.iter().map(|g| g.rows).sum()
    }

    /// Rejected rows.
    pub fn rejected(&self) -> u64 {
        self.contents.rejected.iter().map(|g| g.rows).sum()
    }

    /// Rejected rows per reason code, in code order.
    pub fn rejected_by_reason(&self) -> Vec<(u8, u64)> {
        let mut by: std::collections::BTreeMap<u8, u64> = Default::default();
        for group in &self.contents.rejected {
            *by.entry(group.reason).or_default() += group.rows;
        }
        by.into_iter().collect()
    }

    /// Rows per kind name, in kind order.
    pub fn rows_by_kind(&self) -> Vec<(String, u64)> {
        let mut kinds: Vec<(i64, u64)> = Vec::new();
        for group in &self.contents.groups {
            match kinds.iter_mut().find(|(kind, _)| *kind == group.kind) {
                Some((_, rows)) => *rows += group.rows,
                None => kinds.push((group.kind, group.rows)),
            }
        }
        kinds.sort_unstable();
        kinds
            .into_iter()
            .map(|(kind, rows)| (kind_name(kind), rows))
            .collect()
    }

    /// The report for a person.
    pub fn text(&self, now_ms: i64) -> String {
        let mut out = table::columns(&self.head(now_ms));
        for rows in [
            self.groups_table(now_ms),
            self.in_flight_table(),
            self.rejected_table(now_ms),
        ]
        .into_iter()
        .flatten()
        {
            out.push('\n');
            out.push_str(&rows);
        }
        out
    }

    /// The report's head: one key and value per line.
    fn head(&self, now_ms: i64) -> Vec<[String; 2]> {
        let c = &self.contents;
        let mut head: Vec<[String; 2]> = Vec::new();
        let mut line = |key: &str, value: String| head.push([key.to_owned(), value]);
        line(
            "file",
            format!("{} (schema {})", self.file.display(), self.schema_version),
        );
        let rows = self.rows();
        let kinds: Vec<String> = self
            .rows_by_kind()
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        line(
            "rows",
            match rows {
                0 => "0 (empty)".to_owned(),
                _ => format!("{rows} ({})", kinds.join(", ")),
            },
        );
        line(
            "in flight",
            format!(
                "{} (sent, awaiting the broker's acknowledgement)",
                c.in_flight.len()
            ),
        );
        let rejected: Vec<String> = self
            .rejected_by_reason()
            .iter()
            .map(|(code, n)| format!("{} {n}", reason::label(*code)))
            .collect();
        line(
            "rejected",
            match rejected.is_empty() {
                true => "0 (rows the broker refused for good)".to_owned(),
                false => format!(
                    "{} ({}; not sent again: fieldrelay queue export --rejected)",
                    self.rejected(),
                    rejected.join(", ")
                ),
            },
        );
        for (key, end) in [("oldest", c.oldest), ("newest", c.newest)] {
            if let Some(end) = end {
                line(
                    key,
                    format!("seq {}, {} old", end.seq, age(now_ms - end.ts_ms)),
                );
            }
        }
        line(
            "last seq",
            format!(
                "{} (never reused: the next row gets a larger one)",
                c.last_seq
            ),
        );
        let files: Vec<String> = self
            .files
            .iter()
            .map(|f| format!("{} {}", f.name, bytes(f.bytes)))
            .collect();
        line(
            "size",
            format!(
                "{} of pages in use; {}",
                bytes(c.used_bytes),
                files.join(", ")
            ),
        );
        if let Some(peer) = &c.session_peer {
            line("session", format!("{peer} (the packet ids belong to it)"));
        }
        line(
            "drops",
            "not kept in the file: fieldrelay_queue_dropped_total on /metrics, and the journal"
                .to_owned(),
        );
        if let Some(quarantined) = &self.quarantined {
            if quarantined.is_empty() {
                line("quarantined", "none".to_owned());
            }
            for (i, file) in quarantined.iter().enumerate() {
                let key = if i == 0 { "quarantined" } else { "" };
                line(
                    key,
                    format!(
                        "{} {} (recover with: fieldrelay queue export --file)",
                        file.name,
                        bytes(file.bytes)
                    ),
                );
            }
        }
        head
    }

    /// Rows per device, point and kind, if there are any.
    fn groups_table(&self, now_ms: i64) -> Option<String> {
        let c = &self.contents;
        if c.groups.is_empty() {
            return None;
        }
        let header = [
            "DEVICE",
            "POINT",
            "KIND",
            "ROWS",
            "IN FLIGHT",
            "SEQ",
            "OLDEST",
        ];
        let rows = c.groups.iter().map(|g| {
            [
                g.device.clone(),
                g.point.clone(),
                kind_name(g.kind),
                g.rows.to_string(),
                g.in_flight.to_string(),
                format!("{}..{}", g.first_seq, g.last_seq),
                age(now_ms - g.oldest_ts_ms),
            ]
        });
        Some(table::with_header(header, rows))
    }

    /// The rows in flight with their packet ids, if there are any.
    fn in_flight_table(&self) -> Option<String> {
        let c = &self.contents;
        if c.in_flight.is_empty() {
            return None;
        }
        let header = ["SEQ", "PKID", "STATE", "DEVICE", "POINT", "KIND"];
        let rows = c.in_flight.iter().map(|r| {
            [
                r.seq.to_string(),
                r.pkid.map(|p| p.to_string()).unwrap_or_default(),
                state_name(r.state),
                r.device.clone(),
                r.point.clone(),
                kind_name(r.kind),
            ]
        });
        Some(table::with_header(header, rows))
    }

    /// The rejected rows per reason, device, point and kind, if there are any.
    fn rejected_table(&self, now_ms: i64) -> Option<String> {
        let c = &self.contents;
        if c.rejected.is_empty() {
            return None;
        }
        let header = [
            "REJECTED", "CODE", "DEVICE", "POINT", "KIND", "ROWS", "SEQ", "LAST",
        ];
        let rows = c.rejected.iter().map(|g| {
            [
                reason::name(g.reason),
                reason::hex(g.reason),
                g.device.clone(),
                g.point.clone(),
                kind_name(g.kind),
                g.rows.to_string(),
                format!("{}..{}", g.first_seq, g.last_seq),
                age(now_ms - g.last_rejected_ms),
            ]
        });
        Some(table::with_header(header, rows))
    }

    /// The report for a script: one JSON document (timestamps in ms since the epoch).
    pub fn json(&self, now_ms: i64) -> serde_json::Value {
        use serde_json::json;
        let c = &self.contents;
        let end = |end: Option<RowRef>| {
            end.map(|e| {
                json!({
                    "seq": e.seq,
                    "ts": e.ts_ms,
                    "age_seconds": (now_ms - e.ts_ms).max(0) as f64 / 1000.0,
                })
            })
        };
        let by_kind: serde_json::Map<String, serde_json::Value> = self
            .rows_by_kind()
            .into_iter()
            .map(|(kind, rows)| (kind, json!(rows)))
            .collect();
        let files: serde_json::Map<String, serde_json::Value> = self
            .files
            .iter()
            .map(|f| (f.name.clone(), json!(f.bytes)))
            .collect();
        json!({
            "file": self.file.display().to_string(),
            "schema_version": self.schema_version,
            "rows": self.rows(),
            "rows_by_kind": by_kind,
            "in_flight": c.in_flight.iter().map(|r| json!({
                "seq": r.seq,
                "pkid": r.pkid,
                "state": state_name(r.state),
                "device": r.device,
                "point": r.point,
                "kind": kind_name(r.kind),
            })).collect::<Vec<_>>(),
            "oldest": end(c.oldest),
            "newest": end(c.newest),
            "last_seq": c.last_seq,
            "bytes_in_use": c.used_bytes,
            "files": files,
            "session_peer": c.session_peer,
            "points": c.groups.iter().map(|g| json!({
                "device": g.device,
                "point": g.point,
                "kind": kind_name(g.kind),
                "rows": g.rows,
                "in_flight": g.in_flight,
                "first_seq": g.first_seq,
                "last_seq": g.last_seq,
                "oldest_ts": g.oldest_ts_ms,
            })).collect::<Vec<_>>(),
            "rejected": {
                "rows": self.rejected(),
                "by_reason": self.rejected_by_reason().iter().map(|(code, rows)| json!({
                    "reason": reason::name(*code),
                    "code": reason::hex(*code),
                    "rows": rows,
                })).collect::<Vec<_>>(),
                "points": c.rejected.iter().map(|g| json!({
                    "reason": reason::name(g.reason),
                    "code": reason::hex(g.reason),
                    "device": g.device,
                    "point": g.point,
                    "kind": kind_name(g.kind),
                    "rows": g.rows,
                    "first_seq": g.first_seq,
                    "last_seq": g.last_seq,
                    "last_rejected": g.last_rejected_ms,
                })).collect::<Vec<_>>(),
            },
            "quarantined": self.quarantined.as_ref().map(|q| q.iter().map(|f| json!({
                "file": f.name,
                "bytes": f.bytes,
            })).collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_200_000;

    fn summary() -> Summary {
        Summary {
            file: PathBuf::from("/data/queue.db"),
            schema_version: 2,
            contents: Contents {
                last_seq: 9,
                used_bytes: 24_576,
                groups: vec![
                    Group {
                        device: "boiler".into(),
                        point: "".into(),
                        kind: 1,
                        rows: 1,
                        in_flight: 0,
                        first_seq: 9,
                        last_seq: 9,
                        oldest_ts_ms: NOW - 1000,
                    },
                    Group {
                        device: "boiler".into(),
                        point: "temperature".into(),
                        kind: 0,
                        rows: 4,
                        in_flight: 1,
                        first_seq: 3,
                        last_seq: 8,
                        oldest_ts_ms: NOW - 192_000,
                    },
                ],
                in_flight: vec![InFlight {
                    seq: 3,
                    device: "boiler".into(),
                    point: "temperature".into(),
                    kind: 0,
                    state: 1,
                    pkid: Some(7),
                }],
                oldest: Some(RowRef {
                    seq: 3,
                    ts_ms: NOW - 192_000,
                }),
                newest: Some(RowRef {
                    seq: 9,
                    ts_ms: NOW - 1000,
                }),
                session_peer: Some("gw@broker:1883".into()),
                rejected: vec![
                    RejectedGroup {
                        reason: 0x87,
                        device: "boiler".into(),
                        point: "secret".into(),
                        kind: 0,
                        rows: 2,
                        first_seq: 1,
                        last_seq: 2,
                        last_rejected_ms: NOW - 5000,
                    },
                    RejectedGroup {
                        reason: 0xa5,
                        device: "boiler".into(),
                        point: "".into(),
                        kind: 1,
                        rows: 1,
                        first_seq: 10,
                        last_seq: 10,
                        last_rejected_ms: NOW - 61_000,
                    },
                ],
            },
            files: vec![
                FileSize {
                    name: "queue.db".into(),
                    bytes: 32_768,
                },
                FileSize {
                    name: "queue.db-wal".into(),
                    bytes: 1_260_000,
                },
            ],
            quarantined: Some(vec![FileSize {
                name: "queue.db.corrupt-20261120T100000Z".into(),
                bytes: 12 << 20,
            }]),
        }
    }

    #[test]
    fn text_report_for_a_person() {
        assert_eq!(
            summary().text(NOW),
            "\
file         /data/queue.db (schema 2)
rows         5 (sample 4, device_status 1)
in flight    1 (sent, awaiting the broker's acknowledgement)
rejected     3 (not_authorized (0x87) 2, 0xa5 1; not sent again: fieldrelay queue export --rejected)
oldest       seq 3, 3m 12s old
newest       seq 9, 1s old
last seq     9 (never reused: the next row gets a larger one)
size         24.0 KiB of pages in use; queue.db 32.0 KiB, queue.db-wal 1.2 MiB
session      gw@broker:1883 (the packet ids belong to it)
drops        not kept in the file: fieldrelay_queue_dropped_total on /metrics, and the journal
quarantined  queue.db.corrupt-20261120T100000Z 12.0 MiB (recover with: fieldrelay queue export --file)

DEVICE  POINT        KIND           ROWS  IN FLIGHT  SEQ   OLDEST
boiler               device_status  1     0          9..9  1s
boiler  temperature  sample         4     1          3..8  3m 12s

SEQ  PKID  STATE  DEVICE  POINT        KIND
3    7     sent   boiler  temperature  sample

REJECTED        CODE  DEVICE  POINT   KIND           ROWS  SEQ     LAST
not_authorized  0x87  boiler  secret  sample         2     1..2    5s
0xa5            0xa5  boiler          device_status  1     10..10  1m 01s
"
        );
    }

    #[test]
    fn an_empty_queue_says_so() {
        let empty = Summary {
            contents: Contents::default(),
            quarantined: Some(Vec::new()),
            ..summary()
        };
        let text = empty.text(NOW);
        assert!(text.contains("\nrows         0 (empty)\n"), "{text}");
        assert!(text.contains("\nquarantined  none\n"), "{text}");
        assert!(
            text.contains("\nrejected     0 (rows the broker refused for good)\n"),
            "{text}"
        );
        assert!(!text.contains("REJECTED"), "{text}");
        assert!(!text.contains("DEVICE"), "{text}");
        let json = empty.json(NOW);
        assert_eq!(json["rows"], 0);
        assert!(json["oldest"].is_null());
    }

    #[test]
    fn json_report_for_a_script() {
        let json = summary().json(NOW);
        assert_eq!(json["rows"], 5);
        assert_eq!(
            json["rows_by_kind"],
            serde_json::json!({"sample": 4, "device_status": 1})
        );
        assert_eq!(
            json["in_flight"],
            serde_json::json!([{"seq": 3, "pkid": 7, "state": "sent", "device": "boiler",
                "point": "temperature", "kind": "sample"}])
        );
        assert_eq!(json["oldest"]["age_seconds"], 192.0);
        assert_eq!(json["files"]["queue.db-wal"], 1_260_000);
        assert_eq!(json["points"][1]["first_seq"], 3);
        assert_eq!(json["quarantined"][0]["bytes"], 12 << 20);
        assert_eq!(json["rejected"]["rows"], 3);
        assert_eq!(
            json["rejected"]["by_reason"],
            serde_json::json!([{"reason": "not_authorized", "code": "0x87", "rows": 2},
                {"reason": "0xa5", "code": "0xa5", "rows": 1}])
        );
        assert_eq!(json["rejected"]["points"][0]["point"], "secret");
        assert_eq!(json["rejected"]["points"][1]["kind"], "device_status");
        assert_eq!(json["rejected"]["points"][1]["last_rejected"], NOW - 61_000);
    }

    #[test]
    fn sizes_and_ages_are_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(age(-5), "0s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(187_000), "3m 07s");
        assert_eq!(age(7_500_000), "2h 05m");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d 04h");
        assert_eq!(kind_name(2), "command_result");
        assert_eq!(kind_name(7), "kind_7");
        assert_eq!(state_name(2), "received");
    }
}
