//! The console's password file and `fieldrelay console-user`.
//!
//! # Format
//! One user per line, `name:hash`, where the hash is bcrypt (`$2b$`, `$2y$` or `$2a$`): the
//! format of Apache's `htpasswd -B`, so either tool can write it. Blank lines and lines starting
//! with `#` are kept as they are. A user name is 1 to 64 printable characters without `:` or
//! spaces.
//!
//! Why bcrypt and not argon2: a verification needs 4 KiB instead of argon2's recommended
//! 19 MiB, which matters on a gateway whose whole footprint is a few MiB; at [`COST`] 10 it takes
//! about 60 ms on a desktop core and a few hundred on a Raspberry Pi, and the console verifies
//! a browser's password once, not per request (see `auth.rs`).
//!
//! # Writing
//! `add` and `delete` rewrite the file atomically: a temporary file beside it, synced, renamed
//! over it, with the old file's owner, group and mode (0640 root:fieldrelay as the package
//! creates it; 0600 for a file created here). The running gateway sees the change at the next
//! login (it re-reads a file whose size or time changed), so no restart is needed.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file the package creates and the shipped example names.
pub const DEFAULT_FILE: &str = "/etc/fieldrelay/console.passwd";
/// bcrypt's work factor for new hashes.
pub const COST: u32 = 10;
/// Longest user name.
pub const MAX_NAME: usize = 64;

/// Why `console-user` failed; each has its exit status (sysexits.h, as the broker's tool).
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name {0:?}: use 1 to 64 printable characters without ':' or spaces")]
    BadName(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("the passwords do not match")]
    Mismatch,
    #[error("the password is empty")]
    EmptyPassword,
    #[error("cannot read the password: {0}")]
    Input(std::io::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot hash the password: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

impl UserError {
    /// sysexits.h: 65 data error (bad name), 67 no such user, 66/73/74 file problems.
    pub fn exit_code(&self) -> u8 {
        match self {
            UserError::BadName(_) | UserError::Mismatch | UserError::EmptyPassword => 65,
            UserError::NoSuchUser(_) => 67,
            UserError::Input(_) => 66,
            UserError::File { .. } => 74,
            UserError::Hash(_) => 70,
        }
    }
}

/// Whether `name` may be a user name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != ':')
}

/// The users of a password file, in file order; lines that are not `name:bcrypt-hash` are
/// skipped and listed by line number (1-based) in the second value.
pub fn parse(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
    let mut users = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, hash)) if valid_name(name) && is_bcrypt(hash) => {
                users.push((name.to_owned(), hash.to_owned()));
            }
            _ => bad.push(index + 1),
        }
    }
    (users, bad)
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
        && hash.len() == 60
}

/// `text` with `name`'s line set to `hash`: replaced where it was, else appended.
pub fn upsert(text: &str, name: &str, hash: &str) -> String {
    let entry = format!("{name}:{hash}");
    let mut found = false;
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    for line in text.lines() {
        if line.split_once(':').map(|(n, _)| n) == Some(name) && !line.starts_with('#') {
            if !found {
                out.push_str(&entry);
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&entry);
        out.push('\n');
    }
    out
}

/// `text` without `name`'s line; `None` when it has none.
pub fn remove(text: &str, name: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.split_once(':').map(|(n, _)| n) == Some(name) && !line.starts_with('#') {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    found.then_some(out)
}

/// `fieldrelay console-user add NAME`: asks for the password (twice on a terminal; from a pipe
/// the first line, and the second must match if there is one) and sets it.
pub fn add(file: &Path, name: &str) -> Result<(), UserError> {
    if !valid_name(name) {
        return Err(UserError::BadName(name.to_owned()));
    }
    let password = read_password()?;
    let hash = bcrypt::hash(&password, COST)?;
    let text = read(file)?.unwrap_or_default();
    write_atomically(file, &upsert(&text, name, &hash))
}

/// `fieldrelay console-user delete NAME`.
pub fn delete(file: &Path, name: &str) -> Result<(), UserError> {
    let text = read(file)?.unwrap_or_default();
    let text = remove(&text, name).ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
    write_atomically(file, &text)
}

/// `fieldrelay console-user list`: the names, one per line.
pub fn list(file: &Path) -> Result<Vec<String>, UserError> {
    let text = read(file)?.unwrap_or_default();
    Ok(parse(&text).0.into_iter().map(|(name, _)| name).collect())
}

fn read(file: &Path) -> Result<Option<String>, UserError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UserError::File {
            path: file.to_path_buf(),
            source,
        }),
    }
}

fn read_password() -> Result<String, UserError> {
    let stdin = std::io::stdin();
    let (first, second) = if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(UserError::Input)?;
        let second = rpassword::prompt_password("Again: ").map_err(UserError::Input)?;
        (first, Some(second))
    } else {
        let mut lines = stdin.lock().lines();
        let first = lines
            .next()
            .transpose()
            .map_err(UserError::Input)?
            .unwrap_or_default();
        let second = lines.next().transpose().map_err(UserError::Input)?;
        (first, second)
    };
    let strip = |s: String| s.trim_end_matches('\r').to_owned();
    let first = strip(first);
    if first.is_empty() {
        return Err(UserError::EmptyPassword);
    }
    match second.map(strip) {
        Some(second) if second != first => Err(UserError::Mismatch),
        _ => Ok(first),
    }
}

/// Replaces `file` with `text`: temporary file, sync, rename, sync of the directory.
fn write_atomically(file: &Path, text: &str) -> Result<(), UserError> {
    let fail = |source| UserError::File {
        path: file.to_path_buf(),
        source,
    };
    let old = std::fs::metadata(file).ok();
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    let mode = old
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        if let Some(old) = &old {
            // Only root may give a file away; anyone else keeps their own ownership.
            let _ = std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid()));
            out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temp, file)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "$2b$04$e0y0jN4ELqCXZn3zv3vW5O2Dqk6Dg8n3oN/JJKJFHt5qy1g7y5ST.";

    #[test]
    fn names() {
        for good in ["hmi1", "tech.ana", "Ünal", &"a".repeat(MAX_NAME)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "a:b",
            "a b",
            "a\tb",
            "a\u{7}",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn parse_skips_comments_and_reports_bad_lines() {
        let text = format!("# users\n\nana:{HASH_A}\nbob:plain\n:{HASH_A}\nbob:{HASH_A}\r\n");
        let (users, bad) = parse(&text);
        assert_eq!(
            users,
            [
                ("ana".to_owned(), HASH_A.to_owned()),
                ("bob".to_owned(), HASH_A.to_owned())
            ]
        );
        assert_eq!(bad, [4, 5]);
    }

    #[test]
    fn upsert_replaces_in_place_and_remove_deletes() {
        let text = format!("# users\nana:{HASH_A}\nbob:{HASH_A}\n");
        let changed = upsert(&text, "ana", "NEW");
        assert_eq!(changed, format!("# users\nana:NEW\nbob:{HASH_A}\n"));
        assert_eq!(upsert("", "cy", "H"), "cy:H\n");
        assert_eq!(upsert("# ana:x", "ana", "H"), "# ana:x\nana:H\n");
        assert_eq!(
            remove(&changed, "ana"),
            Some(format!("# users\nbob:{HASH_A}\n"))
        );
        assert_eq!(remove(&changed, "zed"), None);
    }

    #[test]
    fn files_are_replaced_keeping_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("console.passwd");
        write_atomically(&file, "a:1\n").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a new file is private");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&file, "b:2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "b:2\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
        assert!(matches!(
            delete(&file, "zed"),
            Err(UserError::NoSuchUser(_))
        ));
        assert_eq!(
            list(&file).unwrap(),
            Vec::<String>::new(),
            "b's hash is not bcrypt"
        );
    }
}
