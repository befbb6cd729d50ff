//! Plain-text tables for a person at a terminal (`fieldrelay probe`, `fieldrelay queue stats`):
//! left-aligned columns two spaces apart, widths counted in characters (not bytes, so a `°C`
//! unit does not shift its column), trailing blanks trimmed so the lines diff and grep cleanly.
//! Pure; imports nothing of the crate.

/// Lines of `N` cells as aligned columns, one text line per line, each ending in `\n`.
pub fn columns<const N: usize>(lines: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A header line above `rows`, aligned as [`columns`].
pub fn with_header<const N: usize>(
    header: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let lines: Vec<[String; N]> = std::iter::once(header.map(str::to_owned))
        .chain(rows)
        .collect();
    columns(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_by_characters_and_trim_trailing_blanks() {
        let text = with_header(
            ["A", "UNIT", "END"],
            [
                ["long cell".to_owned(), "°C".to_owned(), String::new()],
                ["x".to_owned(), "bar".to_owned(), "1".to_owned()],
            ],
        );
        assert_eq!(
            text,
            "A          UNIT  END\n\
             long cell  °C\n\
             x          bar   1\n"
        );
        assert_eq!(columns::<2>(&[]), "");
    }
}
