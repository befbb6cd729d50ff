//! Who may run the gateway on a data directory.
//!
//! The packaged service runs as the system user `fieldrelay`, which owns `/var/lib/fieldrelay`.
//! `sudo fieldrelay run` on the same configuration would create `queue.db`, its `-wal` and its
//! `-shm` as root; the service can then open but not write them, and fails at its first commit
//! with SQLite's "attempt to write a readonly database", restart after restart. So root is
//! refused on a data directory that another user owns, before anything is opened, with the file,
//! its owner and the commands to use instead. Root on its own directory (a hand-made setup) and
//! any other user are not second-guessed: what they cannot write fails with its own error.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Root asked to run on a directory that belongs to another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDataDir {
    pub data_dir: PathBuf,
    pub owner_uid: u32,
    /// From `/etc/passwd`; `None` if the uid has no entry.
    pub owner_name: Option<String>,
}

impl ForeignDataDir {
    /// The refusal with what to run instead, for a gateway started with `config`.
    pub fn explained(&self, config: &Path) -> String {
        let user = self.owner();
        format!(
            "{self}. Run it as that user: sudo -u {user} fieldrelay run --config {config}; or \
             start the installed service: sudo systemctl start fieldrelay (logs: journalctl -u \
             fieldrelay)",
            config = config.display(),
        )
    }

    fn owner(&self) -> String {
        self.owner_name
            .clone()
            .unwrap_or_else(|| format!("#{}", self.owner_uid))
    }
}

impl fmt::Display for ForeignDataDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to run as root on {dir}: it belongs to {user} (uid {uid}), and the queue \
             files root would create there (queue.db, queue.db-wal, queue.db-shm) would lock \
             that user out (\"attempt to write a readonly database\")",
            dir = self.data_dir.display(),
            user = self.owner(),
            uid = self.owner_uid,
        )
    }
}

/// `Err` when `euid` is root and `data_dir` exists and belongs to someone else.
pub fn may_run_on(data_dir: &Path, euid: u32) -> Result<(), ForeignDataDir> {
    if euid != 0 {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return Ok(()); // created by the queue, as root: root's own
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    Err(ForeignDataDir {
        data_dir: data_dir.to_path_buf(),
        owner_uid: meta.uid(),
        owner_name: user_name(meta.uid()),
    })
}

/// The effective user id of this process, from `/proc/self/status` (the crate stays free of
/// `unsafe`, so no `geteuid(2)`); `u32::MAX`, never root, if it cannot be read.
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid_in(&status))
        .unwrap_or(u32::MAX)
}

/// `Uid:` lists the real, effective, saved and file-system ids.
fn effective_uid_in(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The name of `uid` in `/etc/passwd` (system users live there, not in a directory service).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_in_passwd(&passwd, uid)
}

fn name_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_on_a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let owner = std::fs::metadata(dir.path()).unwrap().uid();
        assert_eq!(may_run_on(dir.path(), owner.max(1)), Ok(()));
        assert_eq!(may_run_on(&dir.path().join("missing"), 0), Ok(()));
        if owner == 0 {
            assert_eq!(may_run_on(dir.path(), 0), Ok(()));
        } else {
            assert!(may_run_on(dir.path(), 0).is_err());
        }
    }

    #[test]
    fn the_effective_uid_is_the_second_of_the_uid_line() {
        assert_eq!(
            effective_uid_in("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n"),
            Some(0)
        );
        assert_eq!(effective_uid_in("Name:\tx\n"), None);
        assert_ne!(effective_uid(), u32::MAX);
    }

    #[test]
    fn names_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      fieldrelay:x:998:998:fieldrelay edge gateway:/var/lib/fieldrelay:/usr/sbin/nologin\n";
        assert_eq!(name_in_passwd(passwd, 998).as_deref(), Some("fieldrelay"));
        assert_eq!(name_in_passwd(passwd, 5), None);
    }

    #[test]
    fn the_refusal_says_which_file_whose_and_what_to_run() {
        let refusal = ForeignDataDir {
            data_dir: "/var/lib/fieldrelay".into(),
            owner_uid: 998,
            owner_name: Some("fieldrelay".into()),
        };
        assert_eq!(
            refusal.explained(Path::new("/etc/fieldrelay/config.yaml")),
            "refusing to run as root on /var/lib/fieldrelay: it belongs to fieldrelay (uid 998), \
             and the queue files root would create there (queue.db, queue.db-wal, queue.db-shm) \
             would lock that user out (\"attempt to write a readonly database\"). Run it as that \
             user: sudo -u fieldrelay fieldrelay run --config /etc/fieldrelay/config.yaml; or \
             start the installed service: sudo systemctl start fieldrelay (logs: journalctl -u \
             fieldrelay)"
        );
    }
}
