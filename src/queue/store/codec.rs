//! The row codec: a row's columns ([`super::COLUMNS`]) to a [`StoredRow`], and a QoS to its
//! column. A value that does not decode is a [`QueueError::Decode`] naming the row and the
//! column, never a guess.

use std::sync::Arc;

use rusqlite::types::ValueRef;

use crate::config::Qos;
use crate::queue::{Delivery, Entry, Message, MessageKind, QueueError, StoredRow};
use crate::sample::{Sample, Value};

/// Decodes rows. With `partial`, a decode error after at least one good row ends the page and
/// returns `Ok` (the next page starts at the bad row and reports it).
pub(super) fn collect_rows(
    mut rows: rusqlite::Rows<'_>,
    partial: bool,
) -> Result<Vec<StoredRow>, QueueError> {
    let mut out = Vec::new();
    // Consecutive rows mostly share device and point names: reuse the last Arc instead of
    // allocating one per row.
    let mut last_device: Option<Arc<str>> = None;
    let mut last_point: Option<Arc<str>> = None;
    while let Some(row) = rows.next()? {
        match decode_row(row, &mut last_device, &mut last_point) {
            Ok(s) => out.push(s),
            Err(e @ QueueError::Decode { .. }) if partial && !out.is_empty() => {
                tracing::debug!(error = %e, "fetch page ends before an undecodable row");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(crate) fn decode_row(
    row: &rusqlite::Row<'_>,
    last_device: &mut Option<Arc<str>>,
    last_point: &mut Option<Arc<str>>,
) -> Result<StoredRow, QueueError> {
    let mut fields = [ValueRef::Null; COLUMN_COUNT];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = row.get_ref(i)?;
    }
    decode_fields(&fields, last_device, last_point)
}

/// Hands each row of `rows` (the [`COLUMNS`] first) to `visit`, decoded and then completed by
/// `then` (from the row's further columns), or as the error naming it; `visit` may stop early.
/// Returns how many rows were handed over; an error stepping through the rows ends the call.
pub(crate) fn visit_decoded<T>(
    mut rows: rusqlite::Rows<'_>,
    mut then: impl FnMut(&rusqlite::Row<'_>, StoredRow) -> Result<T, QueueError>,
    mut visit: impl FnMut(Result<T, QueueError>) -> std::ops::ControlFlow<()>,
) -> Result<usize, QueueError> {
    let (mut last_device, mut last_point) = (None, None);
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        let decoded = decode_row(row, &mut last_device, &mut last_point).and_then(|r| then(row, r));
        if visit(decoded).is_break() {
            break;
        }
    }
    Ok(seen)
}

/// Columns of a row in [`COLUMNS`] order.
pub(crate) const COLUMN_COUNT: usize = 11;

/// Decodes a row from its values in [`COLUMNS`] order (`seq` first): the codec shared by the
/// queries and by the page walk of a damaged file (`salvage.rs`).
pub(crate) fn decode_fields(
    fields: &[ValueRef<'_>; COLUMN_COUNT],
    last_device: &mut Option<Arc<str>>,
    last_point: &mut Option<Arc<str>>,
) -> Result<StoredRow, QueueError> {
    let seq = fields[0]
        .as_i64()
        .map_err(|e| decode_err(0, "seq", e.to_string()))?;
    let seq =
        u64::try_from(seq).map_err(|_| decode_err(0, "seq", format!("negative seq {seq}")))?;
    let text = |idx: usize, column: &'static str| -> Result<&str, QueueError> {
        fields[idx]
            .as_str()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let int = |idx: usize, column: &'static str| -> Result<i64, QueueError> {
        fields[idx]
            .as_i64()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let int_or_null = |idx: usize, column: &'static str| -> Result<Option<i64>, QueueError> {
        fields[idx]
            .as_i64_or_null()
            .map_err(|e| decode_err(seq, column, e.to_string()))
    };
    let device = intern(text(1, "device")?, last_device);
    let point = intern(text(2, "point")?, last_point);
    let body = text(3, "body")?;
    let ts_ms = int(4, "ts_ms")?;
    let qos_raw = int(5, "qos")?;
    let qos = qos_from_i64(qos_raw)
        .ok_or_else(|| decode_err(seq, "qos", format!("{qos_raw} is not 1 or 2")))?;
    let retain = match int(6, "retain")? {
        0 => false,
        1 => true,
        other => return Err(decode_err(seq, "retain", format!("{other} is not 0 or 1"))),
    };
    let kind_raw = int(7, "kind")?;
    let expires_ms = int_or_null(8, "expires_ms")?;
    let state = int(9, "state")?;
    let pkid = int_or_null(10, "pkid")?;
    let pkid = || {
        pkid.and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| decode_err(seq, "pkid", format!("{pkid:?} is not a packet id")))
    };
    let delivery = match state {
        0 => Delivery::Queued,
        1 => Delivery::Published { pkid: pkid()? },
        2 => Delivery::Received { pkid: pkid()? },
        other => {
            return Err(decode_err(
                seq,
                "state",
                format!("{other} is not 0, 1 or 2"),
            ))
        }
    };
    let entry = if kind_raw == 0 {
        let value = Value::from_json(body)
            .ok_or_else(|| decode_err(seq, "body", format!("{body:?} is not a value")))?;
        Entry::Sample(Sample {
            device,
            point,
            value,
            ts_ms,
            qos,
            retain,
        })
    } else {
        let kind = MessageKind::from_code(kind_raw)
            .ok_or_else(|| decode_err(seq, "kind", format!("{kind_raw} is not a known kind")))?;
        Entry::Message(Message {
            kind,
            device,
            point,
            payload: body.to_owned(),
            ts_ms,
            qos,
            retain,
        })
    };
    Ok(StoredRow {
        seq,
        entry,
        delivery,
        expires_ms,
    })
}

fn decode_err(seq: u64, column: &'static str, reason: String) -> QueueError {
    QueueError::Decode {
        seq,
        column,
        reason,
    }
}

fn intern(s: &str, last: &mut Option<Arc<str>>) -> Arc<str> {
    match last {
        Some(a) if &**a == s => Arc::clone(a),
        _ => {
            let a: Arc<str> = Arc::from(s);
            *last = Some(Arc::clone(&a));
            a
        }
    }
}

pub(super) fn qos_to_i64(qos: Qos) -> i64 {
    qos as i64
}

fn qos_from_i64(raw: i64) -> Option<Qos> {
    match raw {
        1 => Some(Qos::AtLeastOnce),
        2 => Some(Qos::ExactlyOnce),
        // QoS 0 is never stored: a 0 on disk is as corrupt as a 7.
        _ => None,
    }
}
