//! `fieldrelay points import`: a vendor's register list (CSV) to one device's points, as YAML to
//! paste under `devices:`, checked by the configuration's own rules.
//!
//! # Flow
//!
//! 1. **Read** the file: UTF-8 (a byte-order mark, as spreadsheet exports write, is skipped); the
//!    delimiter is the one of `,`, `;` and tab the header row uses most (European spreadsheets
//!    write `;`). The `csv` crate parses quoting.
//! 2. **Columns** are found by name in the header (case, spaces and `_` ignored; aliases such as
//!    `tag` for `name` or `data type` for `type`); unknown columns are ignored, `name` and
//!    `address` are required.
//! 3. **Rows** become points: names made identifiers (`Voltage L1-N` → `voltage_l1_n`), vendor type
//!    and table spellings mapped to ours (`float32`, `DWORD`, `Holding Register`, `4x`), a
//!    Modicon reference read as table and address (`40003` → holding 2; `00017` → coil 16), a
//!    byte/word order named in the type (`FLOAT32 (CDAB)`) moved to `word_order`/`byte_order`.
//!    A cell that cannot be mapped is a problem of its row. (`cells` holds this step.)
//! 4. **Check**: the points are put into a scratch configuration (the device on a tcp bus) and
//!    loaded with [`crate::config::load_str_with_warnings`], so every rule of the gateway applies
//!    (overlaps, widths, duplicate names, writable tables). Its problems are mapped back to the
//!    CSV line and column they came from.
//!
//! Every problem of every row is reported in one run, as `check` does; nothing is printed on
//! stdout unless the whole list is valid.

mod cells;

use std::fmt;
use std::path::Path;

use crate::config::{self, ConfigError};
use cells::{row, Cells};

/// Why an import printed no points.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read the register list: {reason}")]
    Read { file: String, reason: String },
    #[error("{}", Problems(.problems))]
    Rows { file: String, problems: Vec<String> },
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0 {
            writeln!(f, "{line}")?;
        }
        write!(f, "{} problem(s) found", self.0.len())
    }
}

/// How 5- and 6-digit addresses are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressStyle {
    /// `40003` is the Modicon reference of holding register 2 (what most vendor lists mean).
    Modicon,
    /// Every address is a 0-based protocol address, whatever its digits (SunSpec, SMA).
    Protocol,
}

/// The device the points belong to.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub device: &'a str,
    pub bus: &'a str,
    pub unit_id: u8,
    pub addresses: AddressStyle,
}

/// The device entry as YAML, and the warnings of the check (`FILE:LINE: warning: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// Reads `path` and imports it.
pub fn import_file(path: &Path, target: &Target<'_>) -> Result<Imported, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImportError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ImportError::Read {
        file: file.clone(),
        reason: "it is not UTF-8 text (save it as \"CSV UTF-8\")".to_owned(),
    })?;
    import_str(&text, &file, target)
}

/// One point from one row, with where its cells came from.
struct Row {
    line: u64,
    /// `(key, value as YAML)` in output order.
    keys: Vec<(&'static str, String)>,
    /// A trailing comment: the vendor's name, description and address as written.
    comment: String,
}

/// The columns we read and the header names that mean them (compared without case, spaces,
/// `_`, `-` and `.`).
const COLUMNS: [(&str, &[&str]); 12] = [
    (
        "name",
        &[
            "name",
            "tag",
            "tagname",
            "point",
            "pointname",
            "parameter",
            "variable",
        ],
    ),
    (
        "address",
        &[
            "address",
            "register",
            "registeraddress",
            "addr",
            "reg",
            "modbusaddress",
        ],
    ),
    (
        "table",
        &["table", "registertype", "area", "function", "objecttype"],
    ),
    (
        "type",
        &["type", "datatype", "format", "dataformat", "valuetype"],
    ),
    ("length", &["length", "registers", "size", "words", "count"]),
    ("unit", &["unit", "units", "uom", "engineeringunit"]),
    (
        "scale",
        &["scale", "factor", "multiplier", "gain", "scalefactor"],
    ),
    ("offset", &["offset"]),
    (
        "writable",
        &[
            "writable",
            "access",
            "rw",
            "readwrite",
            "mode",
            "permission",
        ],
    ),
    ("word_order", &["wordorder", "wordswap"]),
    ("byte_order", &["byteorder", "byteswap"]),
    (
        "description",
        &["description", "desc", "comment", "label", "text"],
    ),
];

fn normalized(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A header column we read: our key, its index, its name as the file writes it.
type Column = (&'static str, usize, String);

/// Imports the CSV `text`; `file` names it in problems.
pub fn import_str(text: &str, file: &str, target: &Target<'_>) -> Result<Imported, ImportError> {
    let rows_problem = |mut problems: Vec<(u64, String)>| {
        problems.sort_by_key(|(line, _)| *line);
        ImportError::Rows {
            file: file.to_owned(),
            problems: problems.into_iter().map(|(_, text)| text).collect(),
        }
    };
    let (columns, rows, mut problems) = read_rows(text, file, target.addresses);
    if rows.is_empty() {
        if problems.is_empty() {
            problems.push((0, format!("{file}: no rows after the header")));
        }
        return Err(rows_problem(problems));
    }
    let column_name = |key: &str| {
        columns
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(key.to_owned(), |(_, _, name)| name.clone())
    };

    // The rows that could be read, checked together by the configuration's rules, so a problem
    // in one row does not hide those of the others.
    let yaml = device_yaml(target, &rows);
    let scratch = format!(
        "gateway: {{id: import, data_dir: /nonexistent}}\nuplink: {{url: \"mqtt://127.0.0.1\"}}\n\
         buses:\n  - name: {bus}\n    type: tcp\n    host: 127.0.0.1\ndevices:\n{yaml}",
        bus = yaml_string(target.bus),
    );
    let first_point_line = scratch
        .lines()
        .position(|l| l.starts_with("      - "))
        .unwrap_or(0)
        + 1;
    let located = |error: &ConfigError, warning: bool| {
        let error = ConfigError {
            message: csv_lines(&error.message, first_point_line, &rows),
            ..error.clone()
        };
        locate(&error, &rows, file, &column_name, warning)
    };
    let warnings = match config::load_str_with_warnings(&scratch, file) {
        Ok((_, warnings)) => warnings.iter().map(|w| located(w, true)).collect(),
        Err(errors) => {
            problems.extend(errors.errors.iter().map(|e| located(e, false)));
            problems.extend(errors.warnings.iter().map(|w| located(w, true)));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(rows_problem(problems));
    }
    Ok(Imported {
        yaml: format!(
            "# {} point(s) of device {:?} from {file} (fieldrelay points import). Paste under \
             `devices:`;\n# check the bus, the unit id and each point against the device's manual.\n{yaml}",
            rows.len(),
            target.device
        ),
        warnings: warnings.into_iter().map(|(_, text)| text).collect(),
    })
}

/// The columns found, the rows that became points, and the problems of the others (with their
/// lines).
fn read_rows(
    text: &str,
    file: &str,
    addresses: AddressStyle,
) -> (Vec<Column>, Vec<Row>, Vec<(u64, String)>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let header_line = text.lines().next().unwrap_or("");
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| header_line.bytes().filter(|b| b == d).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = match reader.headers() {
        Ok(header) => header.clone(),
        Err(error) => {
            return (
                Vec::new(),
                Vec::new(),
                vec![(1, format!("{file}:1: {error}"))],
            )
        }
    };
    let mut columns: Vec<Column> = Vec::new();
    for (index, name) in header.iter().enumerate() {
        let name_n = normalized(name);
        if let Some((key, _)) = COLUMNS
            .iter()
            .find(|(_, aliases)| aliases.contains(&name_n.as_str()))
        {
            if !columns.iter().any(|(k, _, _)| k == key) {
                columns.push((key, index, name.to_owned()));
            }
        }
    }
    let missing: Vec<(u64, String)> = ["name", "address"]
        .iter()
        .filter(|key| !columns.iter().any(|(k, _, _)| k == *key))
        .map(|key| {
            let found: Vec<&str> = header.iter().collect();
            (
                1,
                format!(
                    "{file}:1: no `{key}` column (the header has: {})",
                    found.join(", ")
                ),
            )
        })
        .collect();
    if !missing.is_empty() {
        return (columns, Vec::new(), missing);
    }
    let column_name = |key: &str| {
        columns
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(key.to_owned(), |(_, _, name)| name.clone())
    };
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                problems.push((line, format!("{file}:{line}: {error}")));
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cells = Cells {
            record: &record,
            columns: &columns,
        };
        match row(line, &cells, addresses) {
            Ok(row) => rows.push(row),
            Err(cell_problems) => {
                problems.extend(cell_problems.into_iter().map(|(key, message)| {
                    (
                        line,
                        format!("{file}:{line}: {}: {message}", column_name(key)),
                    )
                }))
            }
        }
    }
    (columns, rows, problems)
}

/// `message` with its `at line N` notes (lines of the scratch configuration, where point `i` is
/// on line `first_point_line + i`) turned into the CSV lines of those rows.
fn csv_lines(message: &str, first_point_line: usize, rows: &[Row]) -> String {
    const NOTE: &str = "at line ";
    let Some(at) = message.rfind(NOTE) else {
        return message.to_owned();
    };
    let digits: String = message[at + NOTE.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let row = digits
        .parse::<usize>()
        .ok()
        .and_then(|line| line.checked_sub(first_point_line))
        .and_then(|index| rows.get(index));
    match row {
        Some(row) => format!(
            "{}{NOTE}{}{}",
            &message[..at],
            row.line,
            &message[at + NOTE.len() + digits.len()..]
        ),
        None => message.to_owned(),
    }
}

/// A scratch-config problem as the CSV's: `devices[0].points[3].type` is the type cell of the
/// fourth row; the device's own keys are the command's options.
fn locate(
    error: &ConfigError,
    rows: &[Row],
    file: &str,
    column_name: &dyn Fn(&str) -> String,
    warning: bool,
) -> (u64, String) {
    let label = if warning { "warning: " } else { "" };
    let path = error.path.as_str();
    if let Some(rest) = path.strip_prefix("devices[0].points[") {
        let (index, key) = rest.split_once(']').unwrap_or((rest, ""));
        let key = key.trim_start_matches('.');
        if let Some(row) = index.parse::<usize>().ok().and_then(|i| rows.get(i)) {
            let column = match key {
                "" | "name" => column_name("name"),
                key => column_name(key),
            };
            return (
                row.line,
                format!("{file}:{}: {label}{column}: {}", row.line, error.message),
            );
        }
    }
    let option = match path {
        p if p.starts_with("devices[0].name") => "--device",
        p if p.starts_with("devices[0].unit_id") => "--unit-id",
        p if p.starts_with("buses[0]") || p.starts_with("devices[0].bus") => "--bus",
        _ => "the register list",
    };
    (0, format!("{file}: {label}{option}: {}", error.message))
}

/// The device entry, indented as under `devices:` in the examples.
fn device_yaml(target: &Target<'_>, rows: &[Row]) -> String {
    let mut yaml = format!(
        "  - name: {}\n    bus: {}\n    unit_id: {}\n    points:\n",
        yaml_string(target.device),
        yaml_string(target.bus),
        target.unit_id
    );
    for row in rows {
        let keys: Vec<String> = row.keys.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        yaml.push_str(&format!("      - {{{}}}", keys.join(", ")));
        if !row.comment.is_empty() {
            yaml.push_str(&format!("  # {}", row.comment));
        }
        yaml.push('\n');
    }
    yaml
}

/// Plain when YAML reads it back as the same string, else double-quoted (JSON escaping is
/// valid YAML).
fn yaml_string(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/'))
        && text.parse::<f64>().is_err()
        && !text.starts_with('-')
        && !["true", "false", "null", "~"].contains(&text.to_lowercase().as_str());
    if plain {
        text.to_owned()
    } else {
        serde_json::Value::String(text.to_owned()).to_string()
    }
}

/// `Voltage L1-N` → `voltage_l1_n`: lowercase letters and digits, other runs become one `_`.
fn identifier(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target {
        device: "meter1",
        bus: "rs485",
        unit_id: 3,
        addresses: AddressStyle::Modicon,
    };

    #[test]
    fn vendor_spellings_become_our_keys() {
        let csv = "Tag;Register;Register Type;Data Type;Units;Factor;Access;Description\n\
                   Voltage L1-N;30001;;FLOAT32 (CDAB);V;;R;phase voltage\n\
                   Energy;0x0010;Holding Register;DWORD;kWh;0,1;;\n\
                   Setpoint;40101;;INT;°C;0.5;RW;\n\
                   Alarm;10003;;;;;;\n\
                   Reset;00017;;bit;;;W;\n";
        let imported = import_str(csv, "m.csv", &TARGET).unwrap();
        assert_eq!(imported.warnings, Vec::<String>::new());
        let yaml = imported.yaml;
        let points: Vec<&str> = yaml.lines().filter(|l| l.starts_with("      - ")).collect();
        assert_eq!(
            points,
            [
                "      - {name: voltage_l1_n, table: input, address: 0, type: f32, word_order: little, byte_order: big, unit: V}  # Voltage L1-N; phase voltage; address 30001",
                "      - {name: energy, table: holding, address: 16, type: u32, unit: kWh, scale: 0.1}  # Energy; address 0x0010",
                "      - {name: setpoint, table: holding, address: 100, type: i16, unit: \"°C\", scale: 0.5, writable: true}  # Setpoint; address 40101",
                "      - {name: alarm, table: discrete_input, address: 2, type: bool}  # Alarm; address 10003",
                "      - {name: reset, table: coil, address: 16, type: bool, writable: true}  # Reset; address 00017",
            ],
            "{yaml}"
        );
        assert!(yaml.contains("  - name: meter1\n    bus: rs485\n    unit_id: 3\n    points:\n"));
    }

    #[test]
    fn every_bad_row_is_reported_at_its_line_and_column() {
        let csv = "name,address,table,type,writable\n\
                   a,1,holding,u16,\n\
                   b,x,holding,u16,\n\
                   c,2,input,float128,\n\
                   a,5,holding,u16,\n\
                   d,3,input,u16,yes\n\
                   e,7,,u16,\n";
        let Err(ImportError::Rows { problems, .. }) = import_str(csv, "m.csv", &TARGET) else {
            panic!("expected problems");
        };
        // The cells that cannot be mapped, and what the configuration's rules find in the rows
        // that could (a duplicate name, a writable input register), each at its line.
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_eq!(
            problems[0],
            "m.csv:3: address: \"x\" is not an address (a number, 0x-hex or a Modicon reference)"
        );
        assert_eq!(
            problems[1],
            "m.csv:4: type: unknown type \"float128\": u16, i16, u32, i32, u64, i64, f32, f64, bool or string"
        );
        assert!(
            problems[2].starts_with("m.csv:5: name: duplicate point name \"a\""),
            "{problems:#?}"
        );
        assert!(
            problems[3].starts_with("m.csv:6: writable: "),
            "{problems:#?}"
        );
        assert_eq!(
            problems[4],
            "m.csv:7: table: missing, and the address is no Modicon reference (40001, 300001, 00017) that would name it"
        );
    }

    #[test]
    fn protocol_addresses_are_kept_as_written() {
        let csv = "name,address,table,type\nw,40003,holding,u16\n";
        let protocol = Target {
            addresses: AddressStyle::Protocol,
            ..TARGET
        };
        let imported = import_str(csv, "m.csv", &protocol).unwrap();
        assert!(
            imported
                .yaml
                .contains("{name: w, table: holding, address: 40003, type: u16}"),
            "{}",
            imported.yaml
        );
        // The configuration's check still says what the number looks like.
        assert_eq!(imported.warnings.len(), 1, "{:?}", imported.warnings);
        assert!(
            imported.warnings[0].starts_with("m.csv:2: warning: address: 40003 looks like"),
            "{:?}",
            imported.warnings
        );
    }

    #[test]
    fn names_and_strings_are_safe_yaml() {
        assert_eq!(identifier("Voltage L1-N"), "voltage_l1_n");
        assert_eq!(identifier("  P (kW) "), "p_kw");
        assert_eq!(yaml_string("°C"), "\"°C\"");
        assert_eq!(yaml_string("true"), "\"true\"");
        assert_eq!(yaml_string("123"), "\"123\"");
        assert_eq!(yaml_string("m3/h"), "m3/h");
    }

    #[test]
    fn a_list_without_the_required_columns_says_what_it_has() {
        let Err(ImportError::Rows { problems, .. }) =
            import_str("Tag,Kind\nx,y\n", "m.csv", &TARGET)
        else {
            panic!("expected problems");
        };
        assert_eq!(
            problems,
            ["m.csv:1: no `address` column (the header has: Tag, Kind)"]
        );
    }
}
