//! Whether the service user may read a file the configuration names, for `check` run as root:
//! root reads anything, the service (`User=fieldrelay` in the unit) does not, and a key file
//! left `root:root 0600` would only show up when the uplink first dials.
//!
//! The answer follows the classic permission bits: the file must be readable, and every
//! directory above it searchable, by the user through the first class that applies (owner,
//! then one of its groups from `/etc/group`, then others). POSIX ACLs and capabilities are not
//! considered (the package uses neither). The user is looked up in `/etc/passwd`; when it does
//! not exist (a build machine, a container) nothing is checked.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The user the packaged service runs as.
pub const SERVICE_USER: &str = "fieldrelay";

/// A user with its groups, and the names of users and groups for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`/etc/group` members).
    pub groups: Vec<u32>,
    users: HashMap<u32, String>,
    group_names: HashMap<u32, String>,
}

impl ServiceUser {
    /// The service user when this process runs as root and the user exists.
    pub fn when_root() -> Option<ServiceUser> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        if effective_uid(&status)? != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        ServiceUser::find(SERVICE_USER, &passwd, &group)
    }

    /// `name` in the texts of `/etc/passwd` and `/etc/group`.
    pub fn find(name: &str, passwd: &str, group: &str) -> Option<ServiceUser> {
        let mut users = HashMap::new();
        let mut found = None;
        for fields in passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            let (Some(user), Some(uid), Some(gid)) = (fields.first(), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
                continue;
            };
            users.insert(uid, (*user).to_owned());
            if *user == name {
                found = Some((uid, gid));
            }
        }
        let (uid, gid) = found?;
        let mut groups = Vec::new();
        let mut group_names = HashMap::new();
        for fields in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            let (Some(group), Some(id), Some(members)) =
                (fields.first(), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else { continue };
            group_names.insert(id, (*group).to_owned());
            if members.split(',').any(|m| m == name) {
                groups.push(id);
            }
        }
        Some(ServiceUser {
            name: name.to_owned(),
            uid,
            gid,
            groups,
            users,
            group_names,
        })
    }

    /// `Ok` when the user may read `path`; otherwise why not (for a configuration error).
    pub fn may_read(&self, path: &Path) -> Result<(), String> {
        // The real file behind any symbolic link (the link's own bits do not matter); a path
        // that cannot be resolved from here is checked as written.
        let real = std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let refuse = |what: &str, at: &Path, meta: &std::fs::Metadata| {
            format!(
                "{} is not readable by the service user {}: {what} {} (owner {}, group {}, mode {:04o}); \
                 e.g. chgrp {} and chmod g+r",
                path.display(),
                self.name,
                at.display(),
                self.user_name(meta.uid()),
                self.group_name(meta.gid()),
                meta.mode() & 0o7777,
                self.group_name(self.gid),
            )
        };
        let mut dirs: Vec<&Path> = real.ancestors().skip(1).collect();
        dirs.reverse();
        for dir in dirs {
            let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if !self.allows(meta.uid(), meta.gid(), meta.mode(), 0o1) {
                return Err(refuse("it cannot enter the directory", dir, &meta));
            }
        }
        let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", real.display()))?;
        if !self.allows(meta.uid(), meta.gid(), meta.mode(), 0o4) {
            return Err(refuse("it may not read", &real, &meta));
        }
        Ok(())
    }

    /// Whether the permission `bit` (4 read, 1 search) of `mode` is granted to this user for a
    /// node owned by `uid`:`gid`: the first class that applies decides, as the kernel does.
    pub fn allows(&self, uid: u32, gid: u32, mode: u32, bit: u32) -> bool {
        if uid == self.uid {
            mode >> 6 & bit != 0
        } else if gid == self.gid || self.groups.contains(&gid) {
            mode >> 3 & bit != 0
        } else {
            mode & bit != 0
        }
    }

    fn user_name(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    fn group_name(&self, gid: u32) -> String {
        self.group_names
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// The effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        fieldrelay:x:998:997::/var/lib/fieldrelay:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\ndialout:x:20:fieldrelay\nfieldrelay:x:997:\nssl-cert:x:110:\n";

    fn user() -> ServiceUser {
        ServiceUser::find("fieldrelay", PASSWD, GROUP).unwrap()
    }

    #[test]
    fn the_user_and_its_groups_are_found() {
        let u = user();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (998, 997, vec![20]));
        assert_eq!(ServiceUser::find("nobody", PASSWD, GROUP), None);
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
    }

    #[test]
    fn the_first_class_that_applies_decides() {
        let u = user();
        assert!(u.allows(998, 0, 0o400, 4), "owner may read");
        assert!(
            !u.allows(998, 997, 0o040, 4),
            "the owner class denies, the group's is not asked"
        );
        assert!(u.allows(0, 997, 0o640, 4), "primary group");
        assert!(u.allows(0, 20, 0o640, 4), "supplementary group");
        assert!(!u.allows(0, 110, 0o640, 4), "another group");
        assert!(!u.allows(0, 0, 0o600, 4), "root:root 0600");
        assert!(u.allows(0, 0, 0o644, 4), "world readable");
        assert!(
            !u.allows(0, 0, 0o700, 1) && u.allows(0, 0, 0o755, 1),
            "search"
        );
    }

    /// A file in a directory the user cannot enter is refused at the directory; one the user's
    /// class may not read at the file. (Checked by the bits, whoever runs the test.)
    #[test]
    fn files_and_their_directories_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap();
        let inner = dir.path().join("private");
        std::fs::create_dir(&inner).unwrap();
        let key = inner.join("key.pem");
        std::fs::write(&key, "x").unwrap();
        // The test's own uid as the service user, in no group of the files.
        let passwd = format!("svc:x:{}:4242::/:/bin/false\n", me.uid());
        let u = ServiceUser::find("svc", &passwd, "").unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(u.may_read(&key), Ok(()));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o040)).unwrap();
        let error = u.may_read(&key).unwrap_err();
        assert!(error.contains("it may not read"), "{error}");
        assert!(error.contains("mode 0040"), "{error}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = u.may_read(&key).unwrap_err();
        assert!(error.contains("cannot enter the directory"), "{error}");
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
