//! Whether stderr is connected to the systemd journal, so logs can use journald's native
//! protocol (levels as priorities, fields as journal fields) instead of plain text.
//!
//! systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose stderr goes to the
//! journal. The variable is inherited by child processes whose stderr may be redirected, so
//! systemd.exec(5) asks programs to compare it with `fstat()` of their own stderr.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// Whether `JOURNAL_STREAM` names the file stderr is open on.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => stream_matches(value, meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// Pure part: `value` is `JOURNAL_STREAM` (`"<dev>:<ino>"`, decimal).
pub fn stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_device_and_inode() {
        assert!(stream_matches("8:123456", 8, 123_456));
        assert!(stream_matches("8:123456\n", 8, 123_456));
    }

    #[test]
    fn other_stream_or_garbage_does_not_match() {
        assert!(!stream_matches("8:123457", 8, 123_456));
        assert!(!stream_matches("9:123456", 8, 123_456));
        assert!(!stream_matches("", 8, 123_456));
        assert!(!stream_matches("8", 8, 123_456));
        assert!(!stream_matches("8:x", 8, 123_456));
        assert!(!stream_matches("-8:123456", 8, 123_456));
    }
}
