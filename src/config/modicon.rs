//! Modicon references: the register numbers of vendor manuals and HMI tools (`40001`), against
//! the 0-based protocol addresses a configuration takes (`address: 0`).
//!
//! A reference is a table digit and a 1-based number: `0xxxx` coils, `1xxxx` discrete inputs,
//! `3xxxx` input registers, `4xxxx` holding registers; the 6-digit forms (`4xxxxx`) reach all
//! 65536 addresses. So `40003` is holding register address 2, `300001` input register address 0.
//!
//! Writing a reference where an address belongs is the most common first-hour mistake: the
//! device answers "illegal data address", or worse, another register. But a number in those
//! ranges *can* be a real protocol address (SunSpec maps start at holding 40000, SMA inverters
//! document input registers from 30001), so `check` warns, with the likely intended address, and
//! never refuses; `probe` repeats the hint only when such a read fails. Coil references (`0xxxx`)
//! are only recognisable by their leading zero, which a YAML number loses; the CSV import, which
//! reads the text, understands them.

use std::fmt;

use super::decode::Keys;
use super::error::Issue;
use super::register::Table;
use super::rules::Choice;

/// A Modicon reference resolved to a table and its 0-based protocol address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModiconReference {
    /// The number as written (`40003`).
    pub number: u32,
    /// 5 or 6: the form it was written in (`00017` and `000017` are both coil 16).
    pub digits: u8,
    pub table: Table,
    pub address: u16,
}

impl ModiconReference {
    /// `number` read as a 5- or 6-digit reference to a discrete input, input register or
    /// holding register; `None` outside those ranges (coils need the text: [`Self::parse`]).
    pub fn from_number(number: i64) -> Option<ModiconReference> {
        let number = u32::try_from(number).ok()?;
        let (base, digits): (u32, u32) = if number < 100_000 {
            (10_000, 5)
        } else {
            (100_000, 6)
        };
        let table = match number / base {
            1 => Table::DiscreteInput,
            3 => Table::Input,
            4 => Table::Holding,
            _ => return None,
        };
        Self::resolve(number, table, base, digits)
    }

    /// A reference as text (`"40003"`, `"400003"`, `"00017"`): exactly 5 or 6 digits, so a
    /// coil's leading zero counts.
    pub fn parse(text: &str) -> Option<ModiconReference> {
        let text = text.trim();
        if !(text.len() == 5 || text.len() == 6) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u32 = text.parse().ok()?;
        let digits = text.len() as u32;
        let base = 10u32.pow(digits - 1);
        let table = match text.as_bytes()[0] {
            b'0' => Table::Coil,
            b'1' => Table::DiscreteInput,
            b'3' => Table::Input,
            b'4' => Table::Holding,
            _ => return None,
        };
        Self::resolve(number, table, base, digits)
    }

    fn resolve(number: u32, table: Table, base: u32, digits: u32) -> Option<ModiconReference> {
        let one_based = number % base;
        // 5 digits: 1..=9999; 6 digits: 1..=65536.
        let highest = if digits == 5 { 9_999 } else { 65_536 };
        if !(1..=highest).contains(&one_based) {
            return None;
        }
        Some(ModiconReference {
            number,
            digits: u8::try_from(digits).ok()?,
            table,
            address: u16::try_from(one_based - 1).ok()?,
        })
    }

    /// The first reference of its table and form: `40001`, `400001`, `00001`.
    fn first(&self) -> String {
        let digit = match self.table {
            Table::Coil => 0,
            Table::DiscreteInput => 1,
            Table::Input => 3,
            Table::Holding => 4,
        };
        if self.digits == 6 {
            format!("{digit}00001")
        } else {
            format!("{digit}0001")
        }
    }
}

impl fmt::Display for ModiconReference {
    /// `the Modicon reference 40003 (holding registers count from 40001)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.table {
            Table::Coil => "coils",
            Table::DiscreteInput => "discrete inputs",
            Table::Input => "input registers",
            Table::Holding => "holding registers",
        };
        write!(
            f,
            "the Modicon reference {:0width$} ({what} count from {})",
            self.number,
            self.first(),
            width = usize::from(self.digits)
        )
    }
}

/// The hint for a point at `address` of `table` when the number looks like a reference: to the
/// same table (`holding`, `40003`), or, above 65535, to any table (`400001` cannot be an
/// address at all). `None` when it does not.
pub fn modicon_hint(table: Option<Table>, address: i64) -> Option<String> {
    let reference = ModiconReference::from_number(address)?;
    if address > i64::from(u16::MAX) {
        return Some(format!(
            "{address} looks like {reference}: did you mean table: {}, address: {}?",
            reference.table.word(),
            reference.address
        ));
    }
    (table == Some(reference.table)).then(|| {
        format!(
            "{address} looks like {reference}: did you mean address: {}? (keep {address} if \
             the device's manual gives it as the 0-based protocol address)",
            reference.address
        )
    })
}

/// Pushes a warning when a point's `address` looks like a Modicon reference.
pub(crate) fn check_address(
    keys: &Keys,
    table: Option<&str>,
    address: Option<i64>,
    issues: &mut Vec<Issue>,
) {
    let table = table.and_then(Table::parse);
    if let Some(message) = address.and_then(|address| modicon_hint(table, address)) {
        issues.push(Issue::warning(keys.path_of("address"), message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(table: Table, address: u16, number: u32) -> Option<ModiconReference> {
        reference_of(
            table,
            address,
            number,
            if number >= 100_000 { 6 } else { 5 },
        )
    }

    fn reference_of(
        table: Table,
        address: u16,
        number: u32,
        digits: u8,
    ) -> Option<ModiconReference> {
        Some(ModiconReference {
            number,
            digits,
            table,
            address,
        })
    }

    #[test]
    fn numbers_in_the_reference_ranges_resolve() {
        for (number, table, address) in [
            (40003, Table::Holding, 2),
            (30001, Table::Input, 0),
            (10010, Table::DiscreteInput, 9),
            (400001, Table::Holding, 0),
            (465536, Table::Holding, 65535),
        ] {
            assert_eq!(
                ModiconReference::from_number(i64::from(number)),
                reference(table, address, number)
            );
        }
        for not_one in [
            0, 2, 9_999, 20_001, 40_000, 50_000, 465_537, 500_000, -40_001,
        ] {
            assert_eq!(ModiconReference::from_number(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn text_keeps_the_coil_digit() {
        assert_eq!(
            ModiconReference::parse("00017"),
            reference(Table::Coil, 16, 17)
        );
        assert_eq!(
            ModiconReference::parse(" 000001"),
            reference_of(Table::Coil, 0, 1, 6)
        );
        assert_eq!(
            ModiconReference::parse("00017")
                .map(|r| r.to_string())
                .as_deref(),
            Some("the Modicon reference 00017 (coils count from 00001)")
        );
        assert_eq!(
            ModiconReference::parse("40001"),
            reference(Table::Holding, 0, 40001)
        );
        for not_one in ["17", "4000", "40000", "4000001", "4x001", "20001", ""] {
            assert_eq!(ModiconReference::parse(not_one), None, "{not_one:?}");
        }
    }

    #[test]
    fn hints_name_the_likely_address() {
        assert_eq!(
            modicon_hint(Some(Table::Holding), 40003).as_deref(),
            Some(
                "40003 looks like the Modicon reference 40003 (holding registers count from \
                 40001): did you mean address: 2? (keep 40003 if the device's manual gives it \
                 as the 0-based protocol address)"
            )
        );
        assert_eq!(
            modicon_hint(Some(Table::Holding), 400001).as_deref(),
            Some(
                "400001 looks like the Modicon reference 400001 (holding registers count from \
                 400001): did you mean table: holding, address: 0?"
            )
        );
        // Another table's range below 65536 is an ordinary address there (SunSpec, SMA).
        assert_eq!(modicon_hint(Some(Table::Holding), 30001), None);
        assert_eq!(modicon_hint(Some(Table::Input), 100), None);
        assert!(modicon_hint(Some(Table::Input), 30001).is_some());
        assert!(modicon_hint(Some(Table::DiscreteInput), 10001).is_some());
    }
}
