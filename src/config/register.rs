//! Where a value lives in a Modbus device and how it is encoded: the table, the type, the byte
//! and word order, and the registers (or bits) a value occupies, its [`Footprint`].
//!
//! The words the file uses for them (`holding`, `f32`, `little`) are their [`Choice`]s. Two
//! footprints of one list that share a register are refused, once per later item and against the
//! first earlier one it collides with: a point (or a simulated register) reading a register that
//! another one reads with another type is almost always an address typo.

use super::decode::Decoded;
use super::decode::Keys;
use super::error::Issue;
use super::rules::{required_choice, Choice};

/// Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    DiscreteInput,
    Input,
    Holding,
}

impl Table {
    /// Bit tables carry one bool per address; register tables 16 bits per address.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
}

impl Choice for Table {
    const WHAT: &'static str = "table";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("coil", Table::Coil),
        ("discrete_input", Table::DiscreteInput),
        ("input", Table::Input),
        ("holding", Table::Holding),
    ];
}

/// Wire type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII, two characters per register, trailing NULs (and spaces) trimmed.
    String {
        /// Registers.
        length: u16,
    },
}

impl DataType {
    /// Registers (or bits, for bit tables) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { length } => length,
        }
    }
}

/// `string` takes its length from the `length` key (see `point.rs` in this module).
impl Choice for DataType {
    const WHAT: &'static str = "type";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("bool", DataType::Bool),
        ("u16", DataType::U16),
        ("i16", DataType::I16),
        ("u32", DataType::U32),
        ("i32", DataType::I32),
        ("u64", DataType::U64),
        ("i64", DataType::I64),
        ("f32", DataType::F32),
        ("f64", DataType::F64),
        ("string", DataType::String { length: 0 }),
    ];

    fn word(self) -> &'static str {
        match self {
            DataType::String { .. } => "string",
            other => Self::WORDS
                .iter()
                .find(|(_, value)| *value == other)
                .map_or(Self::WHAT, |(word, _)| word),
        }
    }
}

/// `f32`, `string`: a type as the file writes it.
pub(crate) fn data_type_name(data_type: DataType) -> &'static str {
    data_type.word()
}

/// The required `type` of a point (or of a simulated register). A string's length is not part of
/// it: the caller checks `length`.
pub(crate) fn require_data_type(
    keys: &Keys,
    value: &Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<DataType> {
    required_choice(keys, "type", value, issues)
}

/// Order of the two bytes within each register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteOrder {
    /// High byte first, as the Modbus spec sends a register.
    #[default]
    Big,
    /// Low byte first (byte-swapped devices).
    Little,
}

impl Choice for ByteOrder {
    const WHAT: &'static str = "byte order";
    const WORDS: &'static [(&'static str, Self)] =
        &[("big", ByteOrder::Big), ("little", ByteOrder::Little)];
}

/// Order of the registers of a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    /// Most significant register first ("ABCD" with big bytes).
    #[default]
    Big,
    /// Least significant register first ("CDAB" with big bytes).
    Little,
}

impl Choice for WordOrder {
    const WHAT: &'static str = "word order";
    const WORDS: &'static [(&'static str, Self)] =
        &[("big", WordOrder::Big), ("little", WordOrder::Little)];
}

/// Byte and word order together: big/big = ABCD, little/big = BADC, big/little = CDAB,
/// little/little = DCBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
}

/// A point's place in a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusSource {
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    /// A single bit (0 = least significant) of the register at `address` (type `bool`).
    pub bit: Option<u8>,
    pub encoding: Encoding,
}

/// The registers (or bits) a point occupies, when its table, address and type are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) table: Table,
    pub(crate) first: u16,
    pub(crate) last: u16,
    /// Points reading different single bits of one register do not overlap.
    pub(crate) bit: Option<u8>,
}

impl Footprint {
    pub(crate) fn overlaps(&self, other: &Footprint) -> bool {
        let bits_apart = matches!((self.bit, other.bit), (Some(a), Some(b)) if a != b);
        self.table == other.table
            && self.first <= other.last
            && other.first <= self.last
            && !bits_apart
    }

    /// `holding 10-11`, `coil 3`, `holding 7 bit 3`.
    pub(crate) fn describe(&self) -> String {
        let table = self.table.word();
        let mut text = if self.first == self.last {
            format!("{table} {}", self.first)
        } else {
            format!("{table} {}-{}", self.first, self.last)
        };
        if let Some(bit) = self.bit {
            text.push_str(&format!(" bit {bit}"));
        }
        text
    }
}

/// A footprint that overlaps an earlier one of the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overlap {
    /// Index of the overlapping footprint.
    later: usize,
    /// Index of the first earlier footprint it overlaps.
    earlier: usize,
    footprint: Footprint,
    other: Footprint,
}

/// For each footprint, the first earlier one it overlaps (in list order; `None`s, the entries
/// whose table, address or type were refused, overlap nothing). Reporting against the first only
/// keeps one mistake to one message, however many points it collides with.
fn first_overlaps(footprints: &[Option<Footprint>]) -> Vec<Overlap> {
    footprints
        .iter()
        .enumerate()
        .filter_map(|(later, footprint)| {
            let footprint = (*footprint)?;
            footprints[..later]
                .iter()
                .enumerate()
                .find_map(|(earlier, other)| {
                    other
                        .filter(|other| other.overlaps(&footprint))
                        .map(|other| Overlap {
                            later,
                            earlier,
                            footprint,
                            other,
                        })
                })
        })
        .collect()
}

/// Reports each of `items` whose footprint overlaps an earlier one's ([`first_overlaps`]) at its
/// `address`, with a note at the earlier item that shows its footprint. `message(later,
/// earlier, footprint)` words the problem in the caller's terms (points of a device, registers
/// of a simulated unit).
pub(crate) fn report_overlaps<T>(
    items: &[Decoded<T>],
    footprints: impl IntoIterator<Item = Option<Footprint>>,
    message: impl Fn(usize, usize, &Footprint) -> String,
    issues: &mut Vec<Issue>,
) {
    let footprints: Vec<_> = footprints.into_iter().collect();
    for overlap in first_overlaps(&footprints) {
        let (Some(later), Some(earlier)) = (items.get(overlap.later), items.get(overlap.earlier))
        else {
            continue;
        };
        issues.push(
            Issue::value(
                later.keys.path_of("address"),
                message(overlap.later, overlap.earlier, &overlap.footprint),
            )
            .with_note(
                earlier.keys.path.clone(),
                format!("{}, defined", overlap.other.describe()),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_footprint_is_paired_with_the_first_earlier_one_it_overlaps() {
        let at = |first, last| {
            Some(Footprint {
                table: Table::Holding,
                first,
                last,
                bit: None,
            })
        };
        // [2] overlaps [0] and [1] and is paired with [0] only; [1] (refused) overlaps nothing.
        let footprints = [at(10, 11), None, at(11, 12), at(12, 12), at(20, 20)];
        let pairs: Vec<_> = first_overlaps(&footprints)
            .iter()
            .map(|overlap| (overlap.later, overlap.earlier))
            .collect();
        assert_eq!(pairs, [(2, 0), (3, 2)]);
    }
}
