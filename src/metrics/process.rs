//! Process metrics from `/proc/self` (Linux), with the names every Prometheus client library
//! uses: `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`.
//!
//! The page size and the clock tick come from the auxiliary vector (`/proc/self/auxv`:
//! `AT_PAGESZ`, `AT_CLKTCK`) instead of `sysconf(3)`, so the crate stays free of `unsafe`; they
//! matter: a Raspberry Pi 5 kernel uses 16 KiB pages, and assuming 4 KiB would report a quarter
//! of the real RSS. A value that cannot be read is left out of the scrape, never guessed.
//! The parsers are pure and tested on captured files.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter, gauge};

/// `AT_PAGESZ` in `<elf.h>`.
const AT_PAGESZ: usize = 6;
/// `AT_CLKTCK` in `<elf.h>`.
const AT_CLKTCK: usize = 17;

/// Sizes from `/proc/self/statm`, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statm {
    pub size: u64,
    pub resident: u64,
}

/// The first two fields of `/proc/[pid]/statm`: total program size and resident set, in pages.
pub fn parse_statm(text: &str) -> Option<Statm> {
    let mut fields = text.split_ascii_whitespace();
    let size = fields.next()?.parse().ok()?;
    let resident = fields.next()?.parse().ok()?;
    Some(Statm { size, resident })
}

/// User plus system CPU time in clock ticks from `/proc/[pid]/stat` (fields 14 and 15). The
/// second field (the command name) is in parentheses and may itself contain spaces and `)`, so
/// fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    // After the name: state (field 3) is the first; utime is field 14.
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The value of `key` in an auxiliary vector: native-endian `(type, value)` pairs of machine
/// words, ended by `AT_NULL`.
pub fn auxv_value(auxv: &[u8], key: usize) -> Option<usize> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word =
        |chunk: &[u8]| -> Option<usize> { Some(usize::from_ne_bytes(chunk.try_into().ok()?)) };
    for pair in auxv.chunks_exact(2 * WORD) {
        let kind = word(&pair[..WORD])?;
        if kind == 0 {
            return None;
        }
        if kind == key {
            return word(&pair[WORD..]);
        }
    }
    None
}

/// Reads `/proc/self` at every scrape (a few small reads).
#[derive(Debug)]
pub struct ProcessCollector {
    /// Bytes per page; `None` when the auxiliary vector cannot be read.
    page_size: Option<u64>,
    /// Clock ticks per second (`USER_HZ`).
    ticks_per_second: Option<u64>,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let read = |key| {
            auxv_value(&auxv, key)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
        };
        ProcessCollector {
            page_size: read(AT_PAGESZ),
            ticks_per_second: read(AT_CLKTCK),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statm = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|text| parse_statm(&text));
        if let (Some(statm), Some(page)) = (statm, self.page_size) {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                statm.resident.saturating_mul(page),
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                statm.size.saturating_mul(page),
            )?;
        }
        let ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat_cpu_ticks(&text));
        if let (Some(ticks), Some(hz)) = (ticks, self.ticks_per_second) {
            let mut metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            counter(&mut metric, ticks as f64 / hz as f64)?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                entries.count() as u64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_gives_size_and_resident_pages() {
        // Captured from a running fieldrelay on aarch64.
        assert_eq!(
            parse_statm("5163 1210 1012 611 0 3000 0\n"),
            Some(Statm {
                size: 5163,
                resident: 1210
            })
        );
        assert_eq!(parse_statm(""), None);
        assert_eq!(parse_statm("12"), None);
        assert_eq!(parse_statm("-1 2"), None);
        assert_eq!(parse_statm("a b c"), None);
    }

    #[test]
    fn stat_cpu_ticks_count_from_the_last_parenthesis() {
        let stat = "4242 (fieldrelay) S 1 4242 4242 0 -1 4194560 812 0 0 0 150 37 0 0 20 0 \
                    9 0 1234567 21147648 1210 18446744073709551615 1 1 0 0 0 0 0 4096 17475 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(187));
        let odd_name = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(parse_stat_cpu_ticks(odd_name), Some(11));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn auxv_values_are_found_until_at_null() {
        let pairs: [(usize, usize); 4] =
            [(33, 0x7fff), (AT_PAGESZ, 16384), (AT_CLKTCK, 100), (0, 0)];
        let bytes: Vec<u8> = pairs
            .iter()
            .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()].concat())
            .collect();
        assert_eq!(auxv_value(&bytes, AT_PAGESZ), Some(16384));
        assert_eq!(auxv_value(&bytes, AT_CLKTCK), Some(100));
        assert_eq!(auxv_value(&bytes, 99), None);
        assert_eq!(auxv_value(&bytes[..5], AT_PAGESZ), None);
        assert_eq!(auxv_value(&[], AT_PAGESZ), None);
    }

    /// On the machine running the tests: the real files parse and give plausible values.
    #[test]
    fn this_process_reports_its_memory() {
        let collector = ProcessCollector::new();
        let page = collector.page_size.expect("page size from /proc/self/auxv");
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
        let statm = parse_statm(&std::fs::read_to_string("/proc/self/statm").unwrap()).unwrap();
        assert!(statm.resident > 0 && statm.resident <= statm.size);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&stat).is_some(), "{stat}");
    }
}
