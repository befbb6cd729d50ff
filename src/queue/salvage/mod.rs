//! Reading the rows out of a damaged queue file page by page: what `fieldrelay queue export`
//! falls back to at the first page SQLite cannot read, and where a quarantine finds the last
//! `seq` the old file handed out. Read-only; no SQL.
//!
//! # Why a page walk of our own
//! SQLite reads a table through its b-tree: a damaged interior page hides every row below it,
//! and a file cut short is refused as a whole (its header counts more pages than there are).
//! SQLite's own answer, the `sqlite3_recover` extension behind the shell's `.recover`, is not
//! part of the amalgamation `libsqlite3-sys` compiles (it lives in `ext/recover`), and the
//! `sqlite_dbpage` table it reads pages through needs `SQLITE_ENABLE_DBPAGE_VTAB`, which the
//! bundled build does not set (a build-time flag every build, cross builds included, would have
//! to carry; Debian 12's shell lacks it too, so its `.recover` fails). The file format is stable
//! and documented (<https://www.sqlite.org/fileformat2.html>), and the queue needs only table
//! leaves: a few hundred lines, every read bounds-checked.
//!
//! # What it reads
//! - **Pages**: `queue.db`, overlaid with the newest committed frame of each page in
//!   `queue.db-wal` (frames are taken while their salts and cumulative checksums check out, up
//!   to the last commit frame), as SQLite would see them. A page cut short by a truncation keeps
//!   what is left of it: cells that lie wholly in it are read.
//! - **The schema** (the b-tree on page 1): the roots of `messages` (or v1 `samples`) and
//!   `sqlite_sequence`, and of every other table and index.
//! - **The rows**: the `messages` b-tree from its root, leaves in key order; a row that does not
//!   decode is reported with its `seq`. Then the *orphans*: table leaves that no root reaches
//!   and that are not on the free list (their parent page was lost, or the schema could not be
//!   read); their cells that decode as queue rows are rows too. So a lost interior page costs no
//!   row, and a lost leaf costs the rows on it (about a hundred samples per 4 KiB page). A `seq`
//!   found twice keeps the tree's copy.
//! - **Gaps**: a child page that cannot be read (beyond the end of the file, not a b-tree page)
//!   loses the range of `seq` its parent's keys give it, less the spans orphans supplied; damaged
//!   cells lose the range between their readable neighbours. Rows may or may not have existed in
//!   a gap (acknowledged rows leave holes too): a destroyed page no longer says.
//! - **The last `seq`**: `sqlite_sequence` where its page reads, and the highest `seq` seen on
//!   any page.
//!
//! # Limits
//! - A page of the free list whose trunk was lost looks like an orphan: rows already
//!   acknowledged may come back from it, with their `seq`, which consumers drop as duplicates.
//! - Text is read as UTF-8, the only encoding the queue writes; another encoding is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::types::ValueRef;

use super::store::{decode_fields, COLUMN_COUNT};
use super::{QueueError, StoredRow};
use format::{
    page_size, record, varint, Node, Page, Pages, INTERIOR_INDEX, INTERIOR_TABLE, LEAF_TABLE, MAGIC,
};

mod format;

/// Why a file cannot be walked at all.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Neither the file nor its log starts with a readable SQLite header.
    #[error("no readable SQLite header ({0})")]
    NoHeader(String),
}

/// Deepest b-tree walked (a queue's tree is 3 or 4 levels deep; a loop in a damaged file is cut).
const MAX_DEPTH: usize = 32;

/// A leaf holding rows: the span of `seq` on it, and whether the `messages` b-tree reaches it.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    first: u64,
    last: u64,
    pgno: u32,
    in_tree: bool,
}

/// A range of `seq` (inclusive; `to: None` means "and later") that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub from: u64,
    pub to: Option<u64>,
    pub reason: String,
}

/// A damaged queue file, walked: its rows can be visited in `seq` order.
pub struct Salvage {
    pages: Pages,
    leaves: Vec<Leaf>,
    lost: Vec<Lost>,
    sequence: Option<u64>,
    max_seq: Option<u64>,
    schema_read: bool,
}

impl Salvage {
    /// Reads the header, the log, the schema and every page's kind and `seq` span.
    pub fn open(path: &Path) -> Result<Salvage, SalvageError> {
        let pages = Pages::open(path)?;
        let mut walk = Walk {
            pages: &pages,
            seen: HashSet::new(),
            leaves: Vec::new(),
            lost: Vec::new(),
        };
        let schema = walk.schema();
        let schema_read = schema.is_some();
        let schema = schema.unwrap_or_default();
        let rows_root = schema
            .get("messages")
            .or_else(|| schema.get("samples"))
            .copied();
        for root in schema.values() {
            if Some(*root) != rows_root {
                walk.mark_tree(*root, 0);
            }
        }
        walk.mark_free_list();
        match rows_root {
            Some(root) => walk.rows_tree(root, 0, Some(u64::MAX), 0),
            None => walk.lost.push(Lost {
                from: 1,
                to: None,
                reason: "the table's root is not in a readable schema".to_owned(),
            }),
        }
        walk.orphans();
        let sequence = schema
            .get("sqlite_sequence")
            .and_then(|root| walk.sequence(*root));
        let (mut leaves, lost) = (walk.leaves, walk.lost);
        leaves.sort_by_key(|l| (l.first, !l.in_tree, l.pgno));
        let max_seq = leaves.iter().map(|l| l.last).max();
        let mut salvage = Salvage {
            pages,
            leaves,
            lost: Vec::new(),
            sequence,
            max_seq,
            schema_read,
        };
        salvage.lost = salvage.subtract_orphans(lost);
        Ok(salvage)
    }

    /// Why `path` is shorter than its header says (a truncation), if it is: SQLite would read
    /// its last page with a zeroed tail and return the rows there with zeroed values, so such a
    /// file is read by the page walk alone, which takes only cells that lie wholly in the file.
    pub fn cut_short(path: &Path) -> Option<String> {
        let file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut header = [0u8; 100];
        file.read_exact_at(&mut header, 0).ok()?;
        if &header[..16] != MAGIC {
            return None;
        }
        let size = page_size(&header)? as u64;
        let word =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        // The page count is valid when the change counter matches the version-valid-for number.
        let counted = (word(24) == word(92)).then(|| u64::from(word(28)));
        if len % size != 0 {
            return Some(format!("the file ends inside page {}", len / size + 1));
        }
        match counted {
            Some(pages) if len < pages * size => Some(format!(
                "the file holds {} of the {pages} pages its header counts",
                len / size
            )),
            _ => None,
        }
    }

    /// Whether the schema could be read (otherwise every row came from an orphan leaf).
    pub fn schema_read(&self) -> bool {
        self.schema_read
    }

    /// The newest `seq` the file says it handed out (`sqlite_sequence`), if it reads.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// The highest `seq` on any page read.
    pub fn max_seq(&self) -> Option<u64> {
        self.max_seq
    }

    /// What could not be read, in `seq` order, from `after + 1` on.
    pub fn lost_after(&self, after: u64) -> Vec<Lost> {
        self.lost
            .iter()
            .filter(|l| l.to.is_none_or(|to| to > after))
            .map(|l| Lost {
                from: l.from.max(after.saturating_add(1)),
                ..l.clone()
            })
            .collect()
    }

    /// Hands every row with `seq > after` to `visit`, in `seq` order, decoded or as the
    /// [`QueueError::Decode`] naming it (only rows of the tree: an orphan cell that does not
    /// decode is not known to be a queue row). `visit` may stop early.
    pub fn visit_rows(
        &self,
        after: u64,
        mut visit: impl FnMut(Result<StoredRow, QueueError>) -> ControlFlow<()>,
    ) {
        // Leaves come sorted by their first seq; a row is final once no leaf still to be read
        // can start at or below it. Overlaps are rare (orphans beside the tree), so the buffer
        // stays about one page.
        let mut buffer: BTreeMap<u64, Result<StoredRow, QueueError>> = BTreeMap::new();
        let (mut last_device, mut last_point) = (None, None);
        for leaf in self.leaves.iter().filter(|l| l.last > after) {
            while let Some(entry) = buffer.first_entry() {
                if *entry.key() >= leaf.first {
                    break;
                }
                if visit(entry.remove()).is_break() {
                    return;
                }
            }
            let Some(page) = self.pages.get(leaf.pgno) else {
                continue;
            };
            let Some(node) = Node::parse(&page, leaf.pgno, self.pages.usable) else {
                continue;
            };
            for cell in &node.cells {
                let Some((seq, payload)) = self.pages.table_cell(&page, *cell) else {
                    continue;
                };
                if seq <= after || buffer.contains_key(&seq) {
                    continue;
                }
                let row = decode_record(seq, &payload, &mut last_device, &mut last_point);
                match row {
                    Some(row) if leaf.in_tree || row.is_ok() => {
                        buffer.insert(seq, row);
                    }
                    _ => {}
                }
            }
        }
        for (_, row) in buffer {
            if visit(row).is_break() {
                return;
            }
        }
    }

    /// `lost` less the spans of the orphan leaves.
    fn subtract_orphans(&self, lost: Vec<Lost>) -> Vec<Lost> {
        let spans: Vec<(u64, u64)> = self
            .leaves
            .iter()
            .filter(|l| !l.in_tree)
            .map(|l| (l.first, l.last))
            .collect();
        let mut out = Vec::new();
        for range in lost {
            let mut pieces = vec![(range.from, range.to)];
            for (first, last) in &spans {
                pieces = pieces
                    .into_iter()
                    .flat_map(|(from, to)| {
                        let overlaps = *first <= to.unwrap_or(u64::MAX) && *last >= from;
                        if !overlaps {
                            return vec![(from, to)];
                        }
                        let mut left = Vec::new();
                        if *first > from {
                            left.push((from, Some(first - 1)));
                        }
                        if to.is_none_or(|to| *last < to) {
                            left.push((last + 1, to));
                        }
                        left
                    })
                    .collect();
            }
            out.extend(pieces.into_iter().map(|(from, to)| Lost {
                from,
                to,
                reason: range.reason.clone(),
            }));
        }
        out.sort_by_key(|l| l.from);
        out
    }
}

/// The record of a row (`seq` from the cell) decoded as a queue row: `None` when the payload is
/// not a record of the queue's shape (7 to 11 fields: v1 rows and rows from before a column was
/// added carry fewer, which take the columns' defaults).
fn decode_record(
    seq: u64,
    payload: &[u8],
    last_device: &mut Option<Arc<str>>,
    last_point: &mut Option<Arc<str>>,
) -> Option<Result<StoredRow, QueueError>> {
    let values = record(payload)?;
    if !(7..=COLUMN_COUNT).contains(&values.len()) {
        return None;
    }
    // Defaults of the columns a v1 row lacks: kind 0, expires_ms NULL, state 0, pkid NULL.
    let mut fields = [
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Null,
        ValueRef::Integer(0),
        ValueRef::Null,
        ValueRef::Integer(0),
        ValueRef::Null,
    ];
    for (field, value) in fields.iter_mut().zip(values) {
        *field = value;
    }
    // The INTEGER PRIMARY KEY is the rowid; the record holds NULL in its place.
    if fields[0] != ValueRef::Null {
        return None;
    }
    fields[0] = ValueRef::Integer(i64::try_from(seq).ok()?);
    Some(decode_fields(&fields, last_device, last_point))
}

/// The walk's state: pages already accounted for, leaves found, ranges lost.
struct Walk<'a> {
    pages: &'a Pages,
    seen: HashSet<u32>,
    leaves: Vec<Leaf>,
    lost: Vec<Lost>,
}

impl Walk<'_> {
    /// Cells of every leaf of the table b-tree at `root`, marking its pages.
    fn table_cells(&mut self, root: u32, depth: usize, out: &mut Vec<(u64, Vec<u8>)>) -> bool {
        if depth > MAX_DEPTH || !self.seen.insert(root) {
            return false;
        }
        let Some(page) = self.pages.get(root) else {
            return false;
        };
        let Some(node) = Node::parse(&page, root, self.pages.usable) else {
            return false;
        };
        let mut whole = true;
        match node.kind {
            LEAF_TABLE => out.extend(
                node.cells
                    .iter()
                    .filter_map(|cell| self.pages.table_cell(&page, *cell)),
            ),
            INTERIOR_TABLE => {
                for child in self.children(&page, &node).into_iter().map(|(c, _)| c) {
                    whole &= self.table_cells(child, depth + 1, out);
                }
            }
            _ => return false,
        }
        whole
    }

    /// Children of an interior table page with the highest key each may hold (`None`: the
    /// right-most one, bounded by the parent).
    fn children(&self, page: &Page, node: &Node) -> Vec<(u32, Option<u64>)> {
        let bytes = &page.data[..page.avail.min(self.pages.usable)];
        let mut children: Vec<(u32, Option<u64>)> = node
            .cells
            .iter()
            .filter_map(|cell| {
                let child = u32::from_be_bytes(bytes.get(*cell..cell + 4)?.try_into().ok()?);
                let (key, _) = varint(bytes.get(cell + 4..)?)?;
                Some((child, u64::try_from(key).ok()))
            })
            .collect();
        children.extend(node.right.map(|r| (r, None)));
        children
    }

    /// The schema: name → root page. `None` when page 1's b-tree cannot be read whole.
    fn schema(&mut self) -> Option<HashMap<String, u32>> {
        let mut cells = Vec::new();
        let whole = self.table_cells(1, 0, &mut cells);
        let mut roots = HashMap::new();
        for (_, payload) in &cells {
            let Some(values) = record(payload) else {
                continue;
            };
            if let [_, ValueRef::Text(name), _, ValueRef::Integer(root), ..] = values[..] {
                if let (Ok(name), Ok(root)) = (std::str::from_utf8(name), u32::try_from(root)) {
                    roots.insert(name.to_owned(), root);
                }
            }
        }
        (whole && !roots.is_empty()).then_some(roots)
    }

    /// Marks every page of the b-tree at `root` (another table or index) as accounted for.
    fn mark_tree(&mut self, root: u32, depth: usize) {
        if depth > MAX_DEPTH || !self.seen.insert(root) {
            return;
        }
        let Some(page) = self.pages.get(root) else {
            return;
        };
        let Some(node) = Node::parse(&page, root, self.pages.usable) else {
            return;
        };
        let bytes = &page.data[..page.avail.min(self.pages.usable)];
        let children: Vec<u32> = match node.kind {
            INTERIOR_TABLE => self
                .children(&page, &node)
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            INTERIOR_INDEX => node
                .cells
                .iter()
                .filter_map(|c| Some(u32::from_be_bytes(bytes.get(*c..c + 4)?.try_into().ok()?)))
                .chain(node.right)
                .collect(),
            _ => Vec::new(),
        };
        for child in children {
            self.mark_tree(child, depth + 1);
        }
    }

    /// Marks the free list's trunk and leaf pages: their old content is not current.
    fn mark_free_list(&mut self) {
        let Some(first) = self.pages.get(1) else {
            return;
        };
        let mut trunk = u32::from_be_bytes([
            first.data[32],
            first.data[33],
            first.data[34],
            first.data[35],
        ]);
        let mut hops = 0;
        while trunk != 0 && hops <= self.pages.count && self.seen.insert(trunk) {
            hops += 1;
            let Some(page) = self.pages.get(trunk) else {
                return;
            };
            let word = |i: usize| {
                page.data
                    .get(i..i + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            let count = word(4).unwrap_or(0) as usize;
            for i in 0..count.min(self.pages.usable / 4 - 2) {
                if let Some(leaf) = word(8 + 4 * i) {
                    self.seen.insert(leaf);
                }
            }
            trunk = word(0).unwrap_or(0);
        }
    }

    /// Walks the rows' b-tree from `pgno`, whose keys are in `(after, upto]`.
    fn rows_tree(&mut self, pgno: u32, after: u64, upto: Option<u64>, depth: usize) {
        let lose = |reason: String| Lost {
            from: after.saturating_add(1),
            to: upto.filter(|u| *u != u64::MAX),
            reason,
        };
        if depth > MAX_DEPTH || !self.seen.insert(pgno) {
            self.lost.push(lose(format!("page {pgno} is linked twice")));
            return;
        }
        let Some(page) = self.pages.get(pgno) else {
            self.lost
                .push(lose(format!("page {pgno} is beyond the end of the file")));
            return;
        };
        let node = Node::parse(&page, pgno, self.pages.usable);
        match node {
            Some(node) if node.kind == INTERIOR_TABLE => {
                let mut low = after;
                for (child, key) in self.children(&page, &node) {
                    let high = key.or(upto);
                    self.rows_tree(child, low, high, depth + 1);
                    low = high.unwrap_or(u64::MAX);
                }
            }
            Some(node) if node.kind == LEAF_TABLE => {
                self.rows_leaf(&page, pgno, &node, after, upto)
            }
            _ => self
                .lost
                .push(lose(format!("page {pgno} is not a page of the table"))),
        }
    }

    fn rows_leaf(&mut self, page: &Page, pgno: u32, node: &Node, after: u64, upto: Option<u64>) {
        let mut span: Option<(u64, u64)> = None;
        let mut last_good = after;
        let mut damaged = false;
        for cell in &node.cells {
            match self.pages.table_cell(page, *cell) {
                Some((seq, _)) => {
                    if damaged && seq > last_good.saturating_add(1) {
                        self.lost.push(Lost {
                            from: last_good + 1,
                            to: Some(seq - 1),
                            reason: format!("a damaged cell on page {pgno}"),
                        });
                    }
                    damaged = false;
                    last_good = seq;
                    span = Some(span.map_or((seq, seq), |(a, b)| (a.min(seq), b.max(seq))));
                }
                None => damaged = true,
            }
        }
        if damaged {
            self.lost.push(Lost {
                from: last_good.saturating_add(1),
                to: upto.filter(|u| *u != u64::MAX),
                reason: format!("a damaged cell on page {pgno}"),
            });
        }
        if let Some((first, last)) = span {
            self.leaves.push(Leaf {
                first,
                last,
                pgno,
                in_tree: true,
            });
        }
    }

    /// Table leaves nothing reaches: those with queue rows are kept (see the module doc).
    fn orphans(&mut self) {
        let (mut device, mut point) = (None, None);
        for pgno in 1..=self.pages.count {
            if self.seen.contains(&pgno) {
                continue;
            }
            let Some(page) = self.pages.get(pgno) else {
                continue;
            };
            let Some(node) = Node::parse(&page, pgno, self.pages.usable) else {
                continue;
            };
            if node.kind != LEAF_TABLE {
                continue;
            }
            let mut span: Option<(u64, u64)> = None;
            for cell in &node.cells {
                let Some((seq, payload)) = self.pages.table_cell(&page, *cell) else {
                    continue;
                };
                if let Some(Ok(_)) = decode_record(seq, &payload, &mut device, &mut point) {
                    span = Some(span.map_or((seq, seq), |(a, b)| (a.min(seq), b.max(seq))));
                }
            }
            if let Some((first, last)) = span {
                self.leaves.push(Leaf {
                    first,
                    last,
                    pgno,
                    in_tree: false,
                });
            }
        }
    }

    /// `sqlite_sequence`'s value for the queue's table.
    fn sequence(&mut self, root: u32) -> Option<u64> {
        let mut cells = Vec::new();
        // Its pages are already marked; read them again regardless.
        let seen = std::mem::take(&mut self.seen);
        self.table_cells(root, 0, &mut cells);
        self.seen = seen;
        cells
            .iter()
            .filter_map(|(_, payload)| {
                let values = record(payload)?;
                match values[..] {
                    [ValueRef::Text(b"messages" | b"samples"), ValueRef::Integer(seq)] => {
                        u64::try_from(seq).ok()
                    }
                    _ => None,
                }
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Qos;
    use crate::queue::{Entry, Queue, QueueOptions};
    use crate::sample::{Sample, Value};

    fn rows_of(salvage: &Salvage) -> Vec<(u64, i64)> {
        let mut rows = Vec::new();
        salvage.visit_rows(0, |row| {
            let row = row.unwrap();
            let Entry::Sample(Sample {
                value: Value::Int(v),
                ..
            }) = row.entry
            else {
                panic!("{row:?}");
            };
            rows.push((row.seq, v));
            ControlFlow::Continue(())
        });
        rows
    }

    /// A small queue file (200 rows over a few dozen pages), built once.
    fn template() -> &'static [u8] {
        static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        FILE.get_or_init(|| {
            let dir = tempfile::TempDir::new().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
                for i in 1..=200 {
                    let sample = Sample {
                        device: Arc::from("plc1"),
                        point: Arc::from(format!("{i:0>120}")),
                        value: Value::Int(i),
                        ts_ms: 1,
                        qos: Qos::AtLeastOnce,
                        retain: false,
                    };
                    q.push(sample).await.unwrap();
                }
                q.fetch(0, 0).await.unwrap();
                w.close().await.unwrap();
            });
            std::fs::read(dir.path().join("queue.db")).unwrap()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Whatever is overwritten or cut off, the walk ends, never panics and hands rows over
        /// in `seq` order, each once. (A byte flipped inside a cell can change a value or a
        /// rowid unnoticed, as it would for SQLite: pages carry no checksum. Whole destroyed
        /// pages are checked row by row in `tests/queue_tools.rs`.)
        #[test]
        fn any_damage_is_walked_safely(
            flips in proptest::collection::vec((0usize..1 << 20, proptest::prelude::any::<u8>()), 0..200),
            cut in 0usize..1 << 20,
        ) {
            let mut bytes = template().to_vec();
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            bytes.truncate(cut % (template().len() + 1));
            let dir = tempfile::TempDir::new().unwrap();
            let file = dir.path().join("queue.db");
            std::fs::write(&file, &bytes).unwrap();
            let _ = Salvage::cut_short(&file);
            let Ok(salvage) = Salvage::open(&file) else {
                return Ok(());
            };
            let mut last = 0;
            let mut bad = None;
            salvage.visit_rows(0, |row| {
                let seq = match row {
                    Ok(row) => row.seq,
                    Err(QueueError::Decode { seq, .. }) => seq,
                    Err(other) => panic!("{other}"),
                };
                if seq <= last {
                    bad = Some(format!("{seq} after {last}"));
                }
                last = seq;
                ControlFlow::Continue(())
            });
            proptest::prop_assert!(bad.is_none(), "{:?}", bad);
        }
    }

    /// A copy of a queue taken while its writer runs: the newest rows are only in the log.
    #[tokio::test]
    async fn rows_in_the_log_are_read_and_a_torn_frame_ends_the_log_there() {
        let dir = tempfile::TempDir::new().unwrap();
        let (q, _live, w) = Queue::open(dir.path(), QueueOptions::default()).unwrap();
        for i in 1..=300 {
            let sample = Sample {
                device: Arc::from("plc1"),
                point: Arc::from("p"),
                value: Value::Int(i),
                ts_ms: 1,
                qos: Qos::AtLeastOnce,
                retain: false,
            };
            q.push(sample).await.unwrap();
            if i % 100 == 0 {
                q.fetch(0, 0).await.unwrap(); // three commits at least
            }
        }
        let copy = dir.path().join("copy.db");
        std::fs::copy(dir.path().join("queue.db"), &copy).unwrap();
        let wal = dir.path().join("copy.db-wal");
        std::fs::copy(dir.path().join("queue.db-wal"), &wal).unwrap();
        w.close().await.unwrap();

        let salvage = Salvage::open(&copy).unwrap();
        let want: Vec<(u64, i64)> = (1..=300).map(|i| (i as u64, i)).collect();
        assert_eq!(rows_of(&salvage), want);
        assert_eq!(salvage.sequence(), Some(300));
        assert!(salvage.lost_after(0).is_empty());

        // The last frame torn: its commit (and only it) is not read.
        let mut log = std::fs::read(&wal).unwrap();
        let end = log.len() - 10;
        log[end] ^= 0xff;
        std::fs::write(&wal, log).unwrap();
        let salvage = Salvage::open(&copy).unwrap();
        let rows = rows_of(&salvage);
        assert!(rows.len() >= 200 && rows.len() < 300, "{}", rows.len());
        assert_eq!(rows, want[..rows.len()]);
    }
}
