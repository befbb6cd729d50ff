//! The SQLite file format as the page walk reads it (<https://www.sqlite.org/fileformat2.html>):
//! the header, committed frames of the write-ahead log (§4), b-tree pages (§1.6), cells with
//! their overflow chains, varints and records (§2.1). Read-only, every read bounds-checked: a
//! damaged page gives `None`, never a panic or a value read from outside the page.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;

use super::SalvageError;

/// B-tree page types.
pub(super) const INTERIOR_INDEX: u8 = 2;
pub(super) const INTERIOR_TABLE: u8 = 5;
const LEAF_INDEX: u8 = 10;
pub(super) const LEAF_TABLE: u8 = 13;

/// One page as read: `data` is a whole page, of which the first `avail` bytes were in the file.
pub(super) struct Page {
    pub(super) data: Vec<u8>,
    pub(super) avail: usize,
}

/// The database image: the file with the log's committed frames over it.
pub(super) struct Pages {
    db: File,
    db_len: u64,
    page_size: usize,
    /// Bytes of each page b-tree content may use (page size less the reserved tail).
    pub(super) usable: usize,
    /// The log and, per page, the offset of its newest committed frame's data.
    wal: Option<(File, HashMap<u32, u64>)>,
    /// Pages in the image.
    pub(super) count: u32,
}

impl Pages {
    pub(super) fn open(path: &Path) -> Result<Pages, SalvageError> {
        let io = |source| SalvageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let db = File::open(path).map_err(io)?;
        let db_len = db.metadata().map_err(io)?.len();
        let mut header = [0u8; 100];
        let header_ok = db.read_exact_at(&mut header, 0).is_ok() && &header[..16] == MAGIC;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = File::open(PathBuf::from(wal_path))
            .ok()
            .and_then(|file| read_wal(file, header_ok.then(|| page_size(&header)).flatten()));
        let page_size = match (header_ok, &wal) {
            (true, _) => page_size(&header),
            (false, Some(wal)) => Some(wal.page_size),
            (false, None) => None,
        };
        let Some(page_size) = page_size else {
            return Err(SalvageError::NoHeader(
                "the file does not start with \"SQLite format 3\" and has no log".to_owned(),
            ));
        };
        let mut pages = Pages {
            db,
            db_len,
            page_size,
            usable: page_size,
            wal: None,
            count: u32::try_from(db_len.div_ceil(page_size as u64)).unwrap_or(u32::MAX),
        };
        if let Some(wal) = wal {
            let highest = wal.frames.keys().copied().max().unwrap_or(0);
            pages.count = pages.count.max(highest).max(wal.db_pages);
            pages.wal = Some((wal.file, wal.frames));
        }
        // Page 1 as the log has it, if it does: its header is the current one.
        let first = pages
            .get(1)
            .filter(|p| p.avail >= 100 && &p.data[..16] == MAGIC)
            .ok_or_else(|| SalvageError::NoHeader("page 1 cannot be read".to_owned()))?;
        let reserved = usize::from(first.data[20]);
        let encoding = u32::from_be_bytes([
            first.data[56],
            first.data[57],
            first.data[58],
            first.data[59],
        ]);
        if encoding > 1 {
            return Err(SalvageError::NoHeader(format!(
                "text encoding {encoding} is not UTF-8"
            )));
        }
        if reserved + 480 > page_size {
            return Err(SalvageError::NoHeader(format!(
                "{reserved} reserved bytes per page"
            )));
        }
        pages.usable = page_size - reserved;
        Ok(pages)
    }

    /// Page `pgno` (1-based), from the log if it has it; `None` when nothing of it is readable.
    pub(super) fn get(&self, pgno: u32) -> Option<Page> {
        if pgno == 0 || pgno > self.count {
            return None;
        }
        let mut data = vec![0u8; self.page_size];
        if let Some(offset) = self.wal.as_ref().and_then(|(_, f)| f.get(&pgno)) {
            let (file, _) = self.wal.as_ref()?;
            file.read_exact_at(&mut data, *offset).ok()?;
            return Some(Page {
                data,
                avail: self.page_size,
            });
        }
        let start = u64::from(pgno - 1) * self.page_size as u64;
        if start >= self.db_len {
            return None;
        }
        let avail = usize::try_from(self.db_len - start)
            .unwrap_or(usize::MAX)
            .min(self.page_size);
        self.db.read_exact_at(&mut data[..avail], start).ok()?;
        Some(Page { data, avail })
    }

    /// A table leaf cell at `offset`: its rowid and whole payload (overflow pages followed).
    pub(super) fn table_cell(&self, page: &Page, offset: usize) -> Option<(u64, Vec<u8>)> {
        let bytes = &page.data[..page.avail.min(self.usable)];
        let (size, n) = varint(bytes.get(offset..)?)?;
        let (rowid, m) = varint(bytes.get(offset + n..)?)?;
        let start = offset + n + m;
        let size = usize::try_from(size).ok()?;
        let local = local_payload(size, self.usable);
        let mut payload = bytes.get(start..start.checked_add(local)?)?.to_vec();
        if local < size {
            let next = bytes.get(start + local..start + local + 4)?;
            let mut next = u32::from_be_bytes(next.try_into().ok()?);
            let mut hops = 0usize;
            while payload.len() < size {
                hops += 1;
                if next == 0 || hops > size / (self.usable - 4) + 1 {
                    return None;
                }
                let page = self.get(next)?;
                let data = &page.data[..page.avail.min(self.usable)];
                let take = (size - payload.len()).min(self.usable - 4);
                payload.extend_from_slice(data.get(4..4 + take)?);
                next = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
            }
        }
        Some((u64::try_from(rowid).ok()?, payload))
    }
}

pub(super) const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The page size a header names, if it is a valid one.
pub(super) fn page_size(header: &[u8; 100]) -> Option<usize> {
    let raw = usize::from(u16::from_be_bytes([header[16], header[17]]));
    let size = if raw == 1 { 65_536 } else { raw };
    (size.is_power_of_two() && (512..=65_536).contains(&size)).then_some(size)
}

/// Bytes of a table leaf cell's payload kept on the page (fileformat2 §1.6).
fn local_payload(size: usize, usable: usize) -> usize {
    let max_local = usable - 35;
    if size <= max_local {
        return size;
    }
    let min_local = (usable - 12) * 32 / 255 - 23;
    let k = min_local + (size - min_local) % (usable - 4);
    if k <= max_local {
        k
    } else {
        min_local
    }
}

/// An SQLite varint: the value and its length in bytes.
pub(super) fn varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(9).enumerate() {
        if i == 8 {
            value = (value << 8) | u64::from(*byte);
            return Some((value as i64, 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value as i64, i + 1));
        }
    }
    None
}

/// What [`read_wal`] found.
struct Wal {
    file: File,
    page_size: usize,
    /// Page → offset of the data of its newest committed frame.
    frames: HashMap<u32, u64>,
    /// Pages in the database after the last commit.
    db_pages: u32,
}

/// The committed frames of a write-ahead log. `expected`: the database's page size, when its
/// header reads (a log of another size is not this database's).
fn read_wal(file: File, expected: Option<usize>) -> Option<Wal> {
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 0).ok()?;
    let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let magic = word(&header, 0);
    if magic & !1 != 0x377f_0682 {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let raw = word(&header, 8) as usize;
    let page_size = if raw == 1 { 65_536 } else { raw };
    if !page_size.is_power_of_two() || !(512..=65_536).contains(&page_size) {
        return None;
    }
    if expected.is_some_and(|e| e != page_size) {
        return None;
    }
    let (salt1, salt2) = (word(&header, 16), word(&header, 20));
    let mut sum = checksum((0, 0), &header[..24], big_endian);
    if sum != (word(&header, 24), word(&header, 28)) {
        return None;
    }
    let mut frames = HashMap::new();
    let mut pending = HashMap::new();
    let mut db_pages = 0;
    let mut frame = vec![0u8; 24 + page_size];
    let mut offset = 32u64;
    while file.read_exact_at(&mut frame, offset).is_ok() {
        let (pgno, commit) = (word(&frame, 0), word(&frame, 4));
        if (word(&frame, 8), word(&frame, 12)) != (salt1, salt2) || pgno == 0 {
            break;
        }
        sum = checksum(sum, &frame[..8], big_endian);
        sum = checksum(sum, &frame[24..], big_endian);
        if sum != (word(&frame, 16), word(&frame, 20)) {
            break;
        }
        pending.insert(pgno, offset + 24);
        if commit != 0 {
            frames.extend(pending.drain());
            db_pages = commit;
        }
        offset += frame.len() as u64;
    }
    Some(Wal {
        file,
        page_size,
        frames,
        db_pages,
    })
}

/// The log's cumulative checksum (fileformat2 §4.1) over `bytes` (a multiple of 8).
fn checksum((mut s1, mut s2): (u32, u32), bytes: &[u8], big_endian: bool) -> (u32, u32) {
    for pair in bytes.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// A b-tree page's kind, cell offsets and right-most child.
pub(super) struct Node {
    pub(super) kind: u8,
    pub(super) cells: Vec<usize>,
    pub(super) right: Option<u32>,
}

impl Node {
    /// `None` when the page is not a sound b-tree page (its cells may still be read by offset
    /// by nobody: a page whose header is gone is lost).
    pub(super) fn parse(page: &Page, pgno: u32, usable: usize) -> Option<Node> {
        let start = if pgno == 1 { 100 } else { 0 };
        let bytes = &page.data[..page.avail.min(usable)];
        let kind = *bytes.get(start)?;
        let interior = match kind {
            INTERIOR_INDEX | INTERIOR_TABLE => true,
            LEAF_INDEX | LEAF_TABLE => false,
            _ => return None,
        };
        let count = usize::from(u16::from_be_bytes([
            *bytes.get(start + 3)?,
            *bytes.get(start + 4)?,
        ]));
        let array = start + if interior { 12 } else { 8 };
        let right = if interior {
            Some(u32::from_be_bytes(
                bytes.get(start + 8..start + 12)?.try_into().ok()?,
            ))
        } else {
            None
        };
        let end = array + 2 * count;
        if end > usable {
            return None;
        }
        let cells = (0..count)
            .filter_map(|i| {
                let at = array + 2 * i;
                let offset =
                    usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
                (offset >= end && offset < bytes.len()).then_some(offset)
            })
            .collect();
        Some(Node { kind, cells, right })
    }
}

/// A record's values (fileformat2 §2.1), borrowing text and blobs from `payload`.
pub(super) fn record(payload: &[u8]) -> Option<Vec<ValueRef<'_>>> {
    let (header_len, mut at) = varint(payload)?;
    let header_len = usize::try_from(header_len).ok()?;
    if header_len > payload.len() || header_len < at {
        return None;
    }
    let mut types = Vec::new();
    while at < header_len {
        let (serial, n) = varint(payload.get(at..header_len)?)?;
        types.push(serial);
        at += n;
    }
    let mut body = header_len;
    let mut values = Vec::with_capacity(types.len());
    for serial in types {
        let int = |bytes: &[u8]| {
            let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
            for b in bytes {
                v = (v << 8) | i64::from(*b);
            }
            v
        };
        let (value, len) = match serial {
            0 => (ValueRef::Null, 0),
            1..=6 => {
                let len = [0, 1, 2, 3, 4, 6, 8][serial as usize];
                (ValueRef::Integer(int(payload.get(body..body + len)?)), len)
            }
            7 => {
                let bytes: [u8; 8] = payload.get(body..body + 8)?.try_into().ok()?;
                (ValueRef::Real(f64::from_be_bytes(bytes)), 8)
            }
            8 => (ValueRef::Integer(0), 0),
            9 => (ValueRef::Integer(1), 0),
            10 | 11 => return None,
            n if n % 2 == 0 => {
                let len = usize::try_from((n - 12) / 2).ok()?;
                (ValueRef::Blob(payload.get(body..body + len)?), len)
            }
            n => {
                let len = usize::try_from((n - 13) / 2).ok()?;
                (ValueRef::Text(payload.get(body..body + len)?), len)
            }
        };
        values.push(value);
        body += len;
    }
    (body == payload.len()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_every_length() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((-1, 9)));
        assert_eq!(varint(&[0x81]), None, "cut short");
    }

    #[test]
    fn local_payload_follows_the_file_format() {
        // 4096-byte pages: up to 4061 bytes stay on the page.
        assert_eq!(local_payload(4061, 4096), 4061);
        // Larger: the minimum local size, plus what does not fill a whole overflow page if
        // that still fits.
        let min_local = (4096 - 12) * 32 / 255 - 23;
        assert_eq!(min_local, 489);
        assert_eq!(local_payload(4062, 4096), min_local);
        assert_eq!(local_payload(min_local + 4092 + 100, 4096), min_local + 100);
    }

    #[test]
    fn records_decode_every_serial_type_and_refuse_garbage() {
        // Header: length 8, then NULL, int8 -3, int16, float, 0, 1, text "ab".
        let mut payload = vec![8, 0, 1, 2, 7, 8, 9, 17];
        payload.push(0xfd);
        payload.extend_from_slice(&300i16.to_be_bytes());
        payload.extend_from_slice(&1.5f64.to_be_bytes());
        payload.extend_from_slice(b"ab");
        assert_eq!(
            record(&payload),
            Some(vec![
                ValueRef::Null,
                ValueRef::Integer(-3),
                ValueRef::Integer(300),
                ValueRef::Real(1.5),
                ValueRef::Integer(0),
                ValueRef::Integer(1),
                ValueRef::Text(b"ab"),
            ])
        );
        assert_eq!(
            record(&payload[..payload.len() - 1]),
            None,
            "body cut short"
        );
        assert_eq!(record(&[3, 10, 0]), None, "reserved serial type");
        assert_eq!(record(&[]), None);
    }

    #[test]
    fn the_log_checksum_matches_the_file_format() {
        // Two words in each order: s1 = a + 0, s2 = b + s1.
        let bytes = [0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(checksum((0, 0), &bytes, true), (1, 3));
        assert_eq!(
            checksum((0, 0), &bytes, false),
            (1 << 24, (2 << 24) + (1 << 24))
        );
    }
}
