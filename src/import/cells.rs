//! One CSV row's cells mapped to a point's keys: vendor spellings of tables (`Holding Register`,
//! `4x`), addresses (decimal, `0x` hex, Modicon references such as `40003`), types (`float32`,
//! `DWORD`, `FLOAT32 (CDAB)` with its orders) and access (`RW`, `yes`) turned into ours. A cell
//! that cannot be mapped is a problem of its row; every problem of the row is returned at once.

use super::{identifier, normalized, yaml_string, AddressStyle, Row};
use crate::config::{self, ModiconReference};

pub(super) type CellProblems = Vec<(&'static str, String)>;

/// A row's cells by our column keys.
pub(super) struct Cells<'a> {
    pub(super) record: &'a csv::StringRecord,
    pub(super) columns: &'a [(&'static str, usize, String)],
}

impl<'a> Cells<'a> {
    /// The cell of column `key`; `None` if the column is missing or the cell empty.
    fn get(&self, key: &str) -> Option<&'a str> {
        self.columns
            .iter()
            .find(|(k, _, _)| *k == key)
            .and_then(|(_, index, _)| self.record.get(*index))
            .filter(|value| !value.is_empty())
    }
}

/// One row's point, or every problem of its cells.
pub(super) fn row(
    line: u64,
    cells: &Cells<'_>,
    addresses: AddressStyle,
) -> Result<Row, CellProblems> {
    let cell = |key: &str| cells.get(key);
    let mut problems: CellProblems = Vec::new();
    let vendor_name = cell("name").unwrap_or("");
    let name = identifier(vendor_name);
    if name.is_empty() {
        problems.push(("name", "missing, or no letter or digit in it".to_owned()));
    }
    let address_text = cell("address").unwrap_or("");
    let (table, address) = table_and_address(cells, address_text, addresses, &mut problems);
    let (data_type, orders) = data_type_and_orders(cell("type"), table, &mut problems);
    let writable = match cell("writable").map(writable_of) {
        Some(None) => {
            problems.push((
                "writable",
                format!(
                    "unknown access {:?}: yes/no, true/false, R, W or RW",
                    cell("writable").unwrap_or_default()
                ),
            ));
            None
        }
        Some(Some(writable)) => Some(writable),
        None => None,
    };
    let mut number = |key: &'static str| -> Option<String> {
        let text = cell(key)?;
        match text.replace(',', ".").parse::<f64>() {
            Ok(value) if value.is_finite() => Some(value.to_string()),
            _ => {
                problems.push((key, format!("{text:?} is not a number")));
                None
            }
        }
    };
    let scale = number("scale");
    let offset = number("offset");
    let length = number("length");
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut keys: Vec<(&'static str, String)> = vec![("name", yaml_string(&name))];
    if let Some(table) = table {
        keys.push(("table", table.to_owned()));
    }
    if let Some(address) = address {
        keys.push(("address", address.to_string()));
    }
    if let Some(data_type) = data_type {
        keys.push(("type", data_type.to_owned()));
    }
    if let Some(length) = length {
        keys.push(("length", length));
    }
    let (word_order, byte_order) = orders.unwrap_or((None, None));
    if let Some(order) = cell("word_order").or(word_order) {
        keys.push(("word_order", yaml_string(&order.to_lowercase())));
    }
    if let Some(order) = cell("byte_order").or(byte_order) {
        keys.push(("byte_order", yaml_string(&order.to_lowercase())));
    }
    if let Some(unit) = cell("unit") {
        keys.push(("unit", yaml_string(unit)));
    }
    keys.extend(scale.map(|s| ("scale", s)));
    keys.extend(offset.map(|o| ("offset", o)));
    if writable == Some(true) {
        keys.push(("writable", "true".to_owned()));
    }
    let mut comment = Vec::new();
    if vendor_name != name {
        comment.push(vendor_name.to_owned());
    }
    if let Some(description) = cell("description") {
        comment.push(description.to_owned());
    }
    if address.is_some_and(|a| a.to_string() != address_text) {
        comment.push(format!("address {address_text}"));
    }
    Ok(Row {
        line,
        keys,
        comment: comment.join("; ").replace(['\n', '\r'], " "),
    })
}

/// The row's table and address: the address cell may name the table (Modicon references) when
/// the table cell does not.
fn table_and_address(
    cells: &Cells<'_>,
    address_text: &str,
    addresses: AddressStyle,
    problems: &mut CellProblems,
) -> (Option<&'static str>, Option<u32>) {
    let table_cell = cells.get("table");
    let table = match table_cell.map(table_of) {
        Some(None) => {
            problems.push((
                "table",
                format!(
                    "unknown table {:?}: coil, discrete_input, input or holding",
                    table_cell.unwrap_or_default()
                ),
            ));
            None
        }
        Some(table) => table,
        None => None,
    };
    let (table, address) = match address_of(address_text, table, addresses) {
        Ok(found) => found,
        Err(message) => {
            problems.push(("address", message));
            (table, None)
        }
    };
    if table.is_none() && table_cell.is_none() && address.is_some() {
        problems.push((
            "table",
            "missing, and the address is no Modicon reference (40001, 300001, 00017) that \
             would name it"
                .to_owned(),
        ));
    }
    (table, address)
}

/// The row's type and the word and byte orders its spelling implies (`float abcd`).
fn data_type_and_orders(
    type_cell: Option<&str>,
    table: Option<&'static str>,
    problems: &mut CellProblems,
) -> (Option<&'static str>, Orders) {
    match type_cell {
        Some(text) => match type_of(text) {
            Some(found) => (Some(found.0), found.1),
            None => {
                problems.push((
                    "type",
                    format!(
                    "unknown type {text:?}: u16, i16, u32, i32, u64, i64, f32, f64, bool or string"
                ),
                ));
                (None, None)
            }
        },
        // Single bits are bools; a register without a type is a problem for the check.
        None if matches!(table, Some("coil" | "discrete_input")) => (Some("bool"), None),
        None => (None, None),
    }
}
fn table_of(text: &str) -> Option<&'static str> {
    Some(match normalized(text).trim_end_matches('s') {
        "coil" | "co" | "c" | "0x" | "0" | "outputcoil" | "digitaloutput" | "do" => "coil",
        "discreteinput" | "di" | "1x" | "1" | "inputstatu" | "digitalinput" | "contact" => {
            "discrete_input"
        }
        "input" | "inputregister" | "ir" | "3x" | "3" | "analoginput" | "ai" => "input",
        "holding" | "holdingregister" | "hr" | "4x" | "4" | "register" | "analogoutput" | "ao" => {
            "holding"
        }
        _ => return None,
    })
}

fn table_name(table: config::Table) -> &'static str {
    match table {
        config::Table::Coil => "coil",
        config::Table::DiscreteInput => "discrete_input",
        config::Table::Input => "input",
        config::Table::Holding => "holding",
    }
}

/// The table and protocol address of an address cell.
fn address_of(
    text: &str,
    table: Option<&'static str>,
    style: AddressStyle,
) -> Result<(Option<&'static str>, Option<u32>), String> {
    if text.is_empty() {
        return Err("missing".to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16)
            .map(|address| (table, Some(address)))
            .map_err(|_| format!("{text:?} is not a hexadecimal address"));
    }
    if style == AddressStyle::Modicon {
        if let Some(reference) = ModiconReference::parse(text) {
            let referenced = table_name(reference.table);
            if table.is_none_or(|table| table == referenced) {
                return Ok((Some(referenced), Some(u32::from(reference.address))));
            }
        }
    }
    text.parse::<u32>()
        .map(|address| (table, Some(address)))
        .map_err(|_| {
            format!("{text:?} is not an address (a number, 0x-hex or a Modicon reference)")
        })
}

type Orders = Option<(Option<&'static str>, Option<&'static str>)>;

/// Our type for a vendor's spelling, and the word/byte order if the spelling names one
/// (`FLOAT32 (CDAB)`, `float_swapped`).
fn type_of(text: &str) -> Option<(&'static str, Orders)> {
    let mut spelled = normalized(text).replace(['(', ')', '[', ']'], "");
    let orders: Orders = [
        ("abcd", (Some("big"), Some("big"))),
        ("badc", (Some("big"), Some("little"))),
        ("cdab", (Some("little"), Some("big"))),
        ("dcba", (Some("little"), Some("little"))),
        ("swapped", (Some("little"), Some("big"))),
    ]
    .into_iter()
    .find(|(code, _)| spelled.ends_with(code))
    .map(|(code, orders)| {
        spelled.truncate(spelled.len() - code.len());
        orders
    });
    let ours = match spelled.as_str() {
        "u16" | "uint16" | "uint" | "word" | "unsigned" | "ushort" | "unsigned16" => "u16",
        "i16" | "int16" | "int" | "short" | "signed" | "sint16" | "signed16" => "i16",
        "u32" | "uint32" | "dword" | "udint" | "ulong" | "unsigned32" => "u32",
        "i32" | "int32" | "dint" | "long" | "signed32" | "sint32" => "i32",
        "u64" | "uint64" | "ulint" | "unsigned64" | "qword" => "u64",
        "i64" | "int64" | "lint" | "signed64" => "i64",
        "f32" | "float" | "float32" | "real" | "single" | "ieee754" => "f32",
        "f64" | "float64" | "double" | "lreal" => "f64",
        "bool" | "boolean" | "bit" | "binary" => "bool",
        "string" | "str" | "ascii" | "char" | "text" => "string",
        _ => return None,
    };
    Some((ours, orders))
}

fn writable_of(text: &str) -> Option<bool> {
    match normalized(text).replace('/', "").as_str() {
        "yes" | "y" | "true" | "1" | "rw" | "w" | "readwrite" | "wo" | "writeonly" | "x" => {
            Some(true)
        }
        "no" | "n" | "false" | "0" | "r" | "ro" | "read" | "readonly" => Some(false),
        _ => None,
    }
}
