//! Durations (`500ms`, `1.5s`, `2m`, `1h`) and sizes (`256MiB`, `10kB`, `4096`) as written in
//! the configuration file.
//!
//! Guarantees:
//! - **Exact.** Numbers are parsed as decimal digits into integers, never through `f64`, so
//!   `0.1s` is exactly 100 ms and `1.5KiB` exactly 1536 bytes. A value that does not land on a
//!   whole nanosecond (or byte) is rejected rather than silently rounded.
//! - **Strict.** Only `DIGITS[.DIGITS]UNIT` is accepted: no sign, no exponent, no space before
//!   the unit, no unit-less durations. A config value that could be read two ways (is `30` seconds
//!   or milliseconds?) is an error, not a guess.
//! - **Total.** Every input gives `Ok` or a [`UnitError`]; overflow is an error, never a panic or
//!   a wrap-around.
//! - **Bounded.** A duration is at most [`MAX_DURATION`] (one year). The gateway adds configured
//!   durations to clock readings (`next poll = now + poll_interval`), and a reading plus a
//!   duration near `u64::MAX` seconds overflows and panics; no interval, timeout or age in this
//!   file is meaningful beyond a year, so such a value is refused at `check` time instead.
//! - **Round trip.** [`format_duration`] writes the shortest exact spelling, and
//!   `parse_duration(&format_duration(d)) == Ok(d)` for every [`Duration`] up to
//!   [`MAX_DURATION`] (a proptest checks it), so durations can be echoed back in messages in the
//!   same notation users write.
//!
//! Sizes use SI units for `kB`/`MB`/`GB`/`TB` (powers of 1000) and IEC units for
//! `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), as their names say; a bare number or `B` is bytes.
//! `KB` and friends are refused on purpose: they mean 1000 to some people and 1024 to others.

use std::time::Duration;

/// Why a duration or size string was refused. Messages are lowercase, without a trailing period,
/// and quote the offending text so it can be found in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration {0:?}: expected a number followed by ms, s, m or h")]
    InvalidDuration(String),
    #[error("duration {0:?} is too long: at most 8760h (one year)")]
    DurationTooLong(String),
    #[error("duration {0:?} is not a whole number of nanoseconds")]
    DurationTooPrecise(String),
    #[error(
        "invalid size {0:?}: expected a number optionally followed by \
         B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
    )]
    InvalidSize(String),
    #[error("size {0:?} is too large")]
    SizeTooLarge(String),
    #[error("size {0:?} is not a whole number of bytes")]
    SizeNotWhole(String),
}

/// The longest duration the file may hold; see the module header (**Bounded**). The message of
/// [`UnitError::DurationTooLong`] spells it out.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;

/// Duration units, longest suffix first so that `ms` is not read as `m` + garbage.
const DURATION_UNITS: [(&str, u128); 4] = [
    ("ms", NANOS_PER_MS),
    ("s", NANOS_PER_SECOND),
    ("m", NANOS_PER_MINUTE),
    ("h", NANOS_PER_HOUR),
];

/// Size units, longest suffixes first; the empty suffix (plain bytes) must stay last.
const SIZE_UNITS: [(&str, u128); 10] = [
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("B", 1),
    ("", 1),
];

/// A decimal number `mantissa / 10^scale`, exactly as written.
struct Decimal {
    mantissa: u128,
    /// Digits after the decimal point once trailing zeros are dropped.
    scale: u32,
}

/// Why [`parse_decimal`] failed: the caller maps these onto its own error variants.
enum DecimalError {
    Syntax,
    Overflow,
}

/// Parses `DIGITS` or `DIGITS.DIGITS`. Trailing zeros of the fraction are dropped first so that
/// `1.500000000000000000000000000000000000000` does not overflow for no reason.
fn parse_decimal(text: &str) -> Result<Decimal, DecimalError> {
    let (int_part, frac_part) = match text.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (text, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || (text.contains('.') && frac_part.is_empty())
    {
        return Err(DecimalError::Syntax);
    }
    let frac_part = frac_part.trim_end_matches('0');
    let mut mantissa: u128 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    let scale = u32::try_from(frac_part.len()).map_err(|_| DecimalError::Overflow)?;
    Ok(Decimal { mantissa, scale })
}

/// `decimal * unit` as an exact integer; `Ok(None)` when the product has a fractional part.
fn scale_exact(decimal: &Decimal, unit: u128) -> Result<Option<u128>, DecimalError> {
    let product = decimal
        .mantissa
        .checked_mul(unit)
        .ok_or(DecimalError::Overflow)?;
    // 10^39 and above overflow u128. The product fits in u128 (< 3.5e38), so divided by such a
    // power it is below 1: only zero is whole.
    let Some(divisor) = 10u128.checked_pow(decimal.scale) else {
        return if product == 0 { Ok(Some(0)) } else { Ok(None) };
    };
    if product % divisor != 0 {
        return Ok(None);
    }
    Ok(Some(product / divisor))
}

/// Parses a duration such as `500ms`, `1s`, `1.5s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let invalid = || UnitError::InvalidDuration(text.to_owned());
    let (number, unit) = DURATION_UNITS
        .iter()
        .find_map(|&(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, unit)))
        .ok_or_else(invalid)?;
    let decimal = parse_decimal(number).map_err(|error| match error {
        DecimalError::Syntax => invalid(),
        DecimalError::Overflow => UnitError::DurationTooLong(text.to_owned()),
    })?;
    let nanos = scale_exact(&decimal, unit)
        .map_err(|_| UnitError::DurationTooLong(text.to_owned()))?
        .ok_or_else(|| UnitError::DurationTooPrecise(text.to_owned()))?;
    let secs = u64::try_from(nanos / NANOS_PER_SECOND)
        .map_err(|_| UnitError::DurationTooLong(text.to_owned()))?;
    // The remainder is below 1e9 and so always fits.
    let subsec = u32::try_from(nanos % NANOS_PER_SECOND)
        .map_err(|_| UnitError::DurationTooLong(text.to_owned()))?;
    let duration = Duration::new(secs, subsec);
    if duration > MAX_DURATION {
        return Err(UnitError::DurationTooLong(text.to_owned()));
    }
    Ok(duration)
}

/// Writes `duration` in the largest unit that represents it exactly (`1h`, `90s`, `1500ms`), and
/// as fractional milliseconds (`0.000001ms`) below millisecond resolution. Zero is `0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (suffix, unit) in [
        ("h", NANOS_PER_HOUR),
        ("m", NANOS_PER_MINUTE),
        ("s", NANOS_PER_SECOND),
        ("ms", NANOS_PER_MS),
    ] {
        if nanos % unit == 0 {
            return format!("{}{suffix}", nanos / unit);
        }
    }
    let fraction = format!("{:06}", nanos % NANOS_PER_MS);
    format!(
        "{}.{}ms",
        nanos / NANOS_PER_MS,
        fraction.trim_end_matches('0')
    )
}

/// Parses a size such as `4096`, `512KiB`, `256MiB`, `1GiB`, `100MB` or `10kB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let invalid = || UnitError::InvalidSize(text.to_owned());
    let (number, unit) = SIZE_UNITS
        .iter()
        .find_map(|&(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, unit)))
        .ok_or_else(invalid)?;
    let decimal = parse_decimal(number).map_err(|error| match error {
        DecimalError::Syntax => invalid(),
        DecimalError::Overflow => UnitError::SizeTooLarge(text.to_owned()),
    })?;
    let bytes = scale_exact(&decimal, unit)
        .map_err(|_| UnitError::SizeTooLarge(text.to_owned()))?
        .ok_or_else(|| UnitError::SizeNotWhole(text.to_owned()))?;
    u64::try_from(bytes).map_err(|_| UnitError::SizeTooLarge(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_duration_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("0.5ms"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.25h"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse_duration("0.000001ms"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse_duration(&format!("1.5{}s", "0".repeat(60))),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn refuses_anything_else_with_the_documented_message() {
        for bad in [
            "5 parsecs",
            "",
            "s",
            "1",
            "30",
            "1 s",
            " 1s",
            "1s ",
            "-1s",
            "+1s",
            "1.s",
            ".5s",
            "1e3ms",
            "1S",
            "1sec",
            "1d",
            "1us",
            "1,5s",
            "1.2.3s",
            "١s",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(UnitError::InvalidDuration(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            UnitError::InvalidDuration("5 parsecs".to_owned()).to_string(),
            r#"invalid duration "5 parsecs": expected a number followed by ms, s, m or h"#
        );
    }

    #[test]
    fn overflow_and_sub_nanosecond_values_are_errors() {
        let huge = format!("{}h", u64::MAX);
        assert_eq!(
            parse_duration(&huge),
            Err(UnitError::DurationTooLong(huge.clone()))
        );
        let digits = format!("{}s", "9".repeat(50));
        assert_eq!(
            parse_duration(&digits),
            Err(UnitError::DurationTooLong(digits.clone()))
        );
        assert_eq!(
            parse_duration("0.0000001ms"),
            Err(UnitError::DurationTooPrecise("0.0000001ms".to_owned()))
        );
        let tiny = format!("0.{}1s", "0".repeat(60));
        assert_eq!(
            parse_duration(&tiny),
            Err(UnitError::DurationTooPrecise(tiny.clone()))
        );
        assert_eq!(
            parse_duration(&format!("0.{}s", "0".repeat(60))),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn the_longest_duration_parses_and_one_nanosecond_more_is_too_long() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration(&format_duration(MAX_DURATION)),
            Ok(MAX_DURATION)
        );
        let over = format_duration(MAX_DURATION + Duration::from_nanos(1));
        assert_eq!(
            parse_duration(&over),
            Err(UnitError::DurationTooLong(over.clone()))
        );
        // A value that passed before the bound and then panicked when added to a clock reading.
        let panicked = format!("{}h", u64::MAX / 3600 / 2);
        assert_eq!(
            parse_duration(&panicked),
            Err(UnitError::DurationTooLong(panicked.clone()))
        );
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000001ms");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("10kB"), Ok(10_000));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("256MiB"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3TiB"), Ok(3 << 40));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("0.5MB"), Ok(500_000));
    }

    #[test]
    fn refuses_bad_sizes() {
        for bad in [
            "", "KiB", "1 KiB", "1KB", "1kib", "1K", "1M", "-1", "1.5", "1e3", "1 B", "1b", "x",
        ] {
            let result = parse_size(bad);
            assert!(
                matches!(
                    result,
                    Err(UnitError::InvalidSize(_)) | Err(UnitError::SizeNotWhole(_))
                ),
                "{bad:?} gave {result:?}"
            );
        }
        assert_eq!(
            parse_size("1.5"),
            Err(UnitError::SizeNotWhole("1.5".to_owned()))
        );
        assert_eq!(
            parse_size("1.0001kB"),
            Err(UnitError::SizeNotWhole("1.0001kB".to_owned()))
        );
        assert_eq!(
            parse_size("16777216TiB"),
            Err(UnitError::SizeTooLarge("16777216TiB".to_owned()))
        );
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
        let over = "18446744073709551616";
        assert_eq!(
            parse_size(over),
            Err(UnitError::SizeTooLarge(over.to_owned()))
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let duration = Duration::new(secs, nanos);
            let expected = if duration <= MAX_DURATION {
                Ok(duration)
            } else {
                Err(UnitError::DurationTooLong(format_duration(duration)))
            };
            prop_assert_eq!(parse_duration(&format_duration(duration)), expected);
        }

        #[test]
        fn durations_up_to_the_bound_round_trip(nanos in 0..=MAX_DURATION.as_nanos() as u64) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn small_durations_round_trip(nanos in 0u64..10_000_000_000_000) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn written_durations_parse_to_their_value(
            whole in 0u64..1_000_000,
            millis in 0u64..1000,
            unit in prop::sample::select(vec![("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]),
        ) {
            let text = format!("{whole}.{millis:03}{}", unit.0);
            // whole.millis units, in microseconds: (whole * 1000 + millis) * unit_ms
            let micros = (whole * 1000 + millis) * unit.1;
            if Duration::from_micros(micros) > MAX_DURATION {
                prop_assert_eq!(parse_duration(&text), Err(UnitError::DurationTooLong(text.clone())));
                return Ok(());
            }
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_micros(micros)));
            // Formatting the result gives a string that parses back to the same value.
            let again = parse_duration(&format_duration(Duration::from_micros(micros)));
            prop_assert_eq!(again, Ok(Duration::from_micros(micros)));
        }

        #[test]
        fn sizes_multiply_by_their_unit(
            n in 0u64..1_000_000,
            unit in prop::sample::select(vec![
                ("", 1u64), ("B", 1), ("kB", 1_000), ("MB", 1_000_000),
                ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
            ]),
        ) {
            prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
        }
    }
}
