//! MQTT 5 request properties of the commands in the inbox, and the rows that answer them.
//!
//! A command PUBLISH may carry a Response Topic, Correlation Data and a Message Expiry
//! Interval (MQTT 5 §4.10, §3.3.2.3.3). They are committed with the command, in the
//! transaction that stores it in the inbox, so an answer given after a restart still goes where
//! the requester waits, and the command's remaining lifetime is still known.
//!
//! # On-disk format
//! Three columns of `command_inbox`, added if missing at every open (`ALTER TABLE … ADD
//! COLUMN`: additive, so the schema version stays 2, and no page is allocated for them; a build
//! that does not know them leaves them NULL and answers on `…/set/result` only). They leave the
//! file with their inbox row:
//!
//! ```sql
//! response_topic TEXT,     -- validated before it is stored; NULL: none
//! correlation    BLOB,     -- as received; NULL: none
//! expires_ms     INTEGER   -- receipt + the remaining Message Expiry Interval; NULL: none
//! ```
//!
//! The answer on the response topic is a queue row of kind 5 (`command_response`, see
//! [`super::MessageKind::CommandResponse`]): `device` holds the response topic (a whole topic,
//! not under `topic_prefix`: the requester chose it), `point` the correlation data in lower-case
//! hex (empty: none), `body` the same result payload as the `…/set/result` row. A build that
//! does not know kind 5 never guesses at such a row: it skips it as undecodable (logged,
//! counted in `fieldrelay_uplink_skipped_rows_total`, left in the file) and the rows behind it
//! flow, so after a downgrade those answers are missing on the response topic only (the
//! results on `…/set/result` are ordinary kind 2 rows).

use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// Adds the request columns to `command_inbox` unless it has them (at every open, after the
/// inbox's own schema; writes only the first time).
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let present: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('command_inbox') WHERE name = 'response_topic'",
        [],
        |r| r.get(0),
    )?;
    if present == 0 {
        conn.execute_batch(
            "ALTER TABLE command_inbox ADD COLUMN response_topic TEXT;
             ALTER TABLE command_inbox ADD COLUMN correlation BLOB;
             ALTER TABLE command_inbox ADD COLUMN expires_ms INTEGER;",
        )?;
    }
    Ok(())
}

/// What a command's PUBLISH asked for (MQTT 5), as stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRequest {
    /// Where the requester waits for the answer (already validated).
    pub response_topic: Option<String>,
    /// Echoed with the answer on the response topic.
    pub correlation: Option<Vec<u8>>,
    /// When the PUBLISH's Message Expiry Interval runs out (ms since the Unix epoch).
    pub expires_ms: Option<i64>,
}

impl CommandRequest {
    pub fn is_empty(&self) -> bool {
        self.response_topic.is_none() && self.correlation.is_none() && self.expires_ms.is_none()
    }
}

/// Stores `request` with the inbox row `inbox_id` (nothing when it is empty).
pub(super) fn insert(
    tx: &Transaction<'_>,
    inbox_id: i64,
    request: &CommandRequest,
) -> rusqlite::Result<()> {
    if request.is_empty() {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE command_inbox SET response_topic = ?2, correlation = ?3, expires_ms = ?4 \
         WHERE id = ?1",
    )?
    .execute(params![
        inbox_id,
        request.response_topic,
        request.correlation,
        request.expires_ms
    ])?;
    Ok(())
}

/// The request stored with the inbox row `inbox_id` (empty without).
pub(super) fn lookup(conn: &Connection, inbox_id: i64) -> rusqlite::Result<CommandRequest> {
    conn.prepare_cached(
        "SELECT response_topic, correlation, expires_ms FROM command_inbox WHERE id = ?1",
    )?
    .query_row([inbox_id], |r| {
        Ok(CommandRequest {
            response_topic: r.get(0)?,
            correlation: r.get(1)?,
            expires_ms: r.get(2)?,
        })
    })
    .optional()
    .map(Option::unwrap_or_default)
}

/// Correlation data as stored in a response row's `point` column.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The correlation data of a response row's `point` column; `None` when it is not hex (a
/// hand-edited file): the answer then goes without it.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_round_trips_through_hex() {
        let bytes = vec![0x00, 0xff, 0x10, b'a'];
        assert_eq!(to_hex(&bytes), "00ff1061");
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex(""), Some(Vec::new()));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
