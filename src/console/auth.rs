//! Who may see the console: HTTP Basic authentication against the password file
//! ([`super::users`]), verified so that guessing is slow and a browser's requests stay cheap.
//!
//! - **Once per browser, not per request.** A browser sends its credentials with every request
//!   (page, script, event stream). A verified `Authorization` value is remembered for
//!   [`CACHE_TTL`] as an HMAC-SHA256 tag under a key made at start ([`Gate`]), so the password
//!   itself is not kept, and a remembered tag is compared in constant time. Changing the file
//!   (size or time) forgets every remembered login: a deleted user or a new password takes
//!   effect at the next request.
//! - **Guessing is slow.** bcrypt verifications run one at a time off the async threads; a
//!   failed login is answered after [`FAILURE_DELAY`]; after [`MAX_FAILURES`] failures within
//!   [`FAILURE_WINDOW`] an address gets `429` (with `Retry-After`) without a verification until
//!   the window ends. An unknown user costs the same verification as a known one (against a
//!   dummy hash), so timing does not tell which names exist.
//! - **Bounded.** At most [`CACHE_SLOTS`] remembered logins and [`TRACKED_ADDRESSES`] addresses
//!   with failures; beyond that the oldest are forgotten.
//!
//! Pure: [`parse_basic`]. The file is re-read when its size, time or inode changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a verified login is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Remembered logins (browsers) at once.
pub const CACHE_SLOTS: usize = 16;
/// A failed login is answered this late.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failures from one address within [`FAILURE_WINDOW`] before it must wait.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are counted at once.
pub const TRACKED_ADDRESSES: usize = 1024;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// `401` with a challenge: no or wrong credentials.
    Challenge,
    /// `429`: too many failures from this address; try again after this.
    Wait(Duration),
}

/// `user` and `password` of an `Authorization: Basic …` value (pure; `None` for anything
/// else).
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Identifies a version of the password file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: i128,
    inode: u64,
}

struct Remembered {
    tag: [u8; 32],
    until: Instant,
}

struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Default)]
struct State {
    users: Arc<HashMap<String, String>>,
    /// `None`: not read yet, or unreadable (then `problem` says why).
    stamp: Option<Stamp>,
    problem: Option<String>,
    remembered: Vec<Remembered>,
    failures: HashMap<IpAddr, Failures>,
}

/// The console's login check.
pub struct Gate {
    file: PathBuf,
    key: ring::hmac::Key,
    state: Mutex<State>,
    /// One bcrypt verification at a time: guessing cannot take more than one core.
    verifying: Semaphore,
}

impl Gate {
    pub fn new(file: PathBuf) -> Gate {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // No system randomness: a key from the clock and the address space is still
            // unknown to a remote client, which is all the cache needs.
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_bytes())
        });
        Gate {
            file,
            key,
            state: Mutex::new(State::default()),
            verifying: Semaphore::new(1),
        }
    }

    /// Decides on a request carrying `authorization` (the header's bytes) from `peer`.
    pub async fn check(&self, authorization: Option<&[u8]>, peer: IpAddr) -> Verdict {
        let Some(header) = authorization else {
            return Verdict::Challenge;
        };
        let tag = ring::hmac::sign(&self.key, header);
        let users = {
            let mut state = self.lock();
            self.refresh(&mut state);
            let now = Instant::now();
            state.remembered.retain(|r| r.until > now);
            let known = state
                .remembered
                .iter()
                .fold(subtle::Choice::from(0), |found, r| {
                    found | r.tag.ct_eq(tag.as_ref())
                });
            if bool::from(known) {
                return Verdict::Allow;
            }
            if let Some(failures) = state.failures.get(&peer) {
                let until = failures.since + FAILURE_WINDOW;
                if failures.count >= MAX_FAILURES && until > now {
                    return Verdict::Wait(until - now);
                }
            }
            state.users.clone()
        };
        let verified = match parse_basic(header) {
            Some((user, password)) => self.verify(&users, user, password).await,
            None => false,
        };
        {
            let mut state = self.lock();
            if verified {
                if state.remembered.len() >= CACHE_SLOTS {
                    state.remembered.remove(0);
                }
                let mut remembered = [0u8; 32];
                remembered.copy_from_slice(tag.as_ref());
                state.remembered.push(Remembered {
                    tag: remembered,
                    until: Instant::now() + CACHE_TTL,
                });
                state.failures.remove(&peer);
                return Verdict::Allow;
            }
            note_failure(&mut state.failures, peer);
        }
        tokio::time::sleep(FAILURE_DELAY).await;
        Verdict::Challenge
    }

    /// bcrypt, one at a time, off the async threads; an unknown user is checked against a
    /// dummy hash so that it takes as long.
    async fn verify(
        &self,
        users: &HashMap<String, String>,
        user: String,
        password: String,
    ) -> bool {
        let known = users.get(&user).cloned();
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let checked = tokio::task::spawn_blocking(move || {
            let hash = known.as_deref().unwrap_or_else(|| dummy_hash());
            bcrypt::verify(password, hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        checked && users.contains_key(&user)
    }

    /// Re-reads the file when it changed; forgets remembered logins then.
    fn refresh(&self, state: &mut State) {
        let stamp = std::fs::metadata(&self.file).map(|m| Stamp {
            len: m.len(),
            modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            inode: m.ino(),
        });
        let read = match stamp {
            Ok(stamp) if state.stamp == Some(stamp) => return,
            Ok(stamp) => std::fs::read_to_string(&self.file).map(|text| (stamp, text)),
            Err(error) => Err(error),
        };
        state.remembered.clear();
        match read {
            Ok((stamp, text)) => {
                let (users, bad) = super::users::parse(&text);
                if !bad.is_empty() {
                    warn!(file = %self.file.display(), lines = ?bad, "console password file: lines that are not name:bcrypt-hash are ignored");
                }
                info!(file = %self.file.display(), users = users.len(), "console users loaded");
                state.users = Arc::new(users.into_iter().collect());
                state.stamp = Some(stamp);
                state.problem = None;
            }
            Err(error) => {
                let problem = error.to_string();
                if state.problem.as_ref() != Some(&problem) {
                    warn!(file = %self.file.display(), %error, "cannot read the console password file; every login is refused");
                }
                state.users = Arc::default();
                state.stamp = None;
                state.problem = Some(problem);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn note_failure(failures: &mut HashMap<IpAddr, Failures>, peer: IpAddr) {
    let now = Instant::now();
    if failures.len() >= TRACKED_ADDRESSES && !failures.contains_key(&peer) {
        failures.retain(|_, f| f.since + FAILURE_WINDOW > now);
        if failures.len() >= TRACKED_ADDRESSES {
            failures.clear();
        }
    }
    let entry = failures.entry(peer).or_insert(Failures {
        count: 0,
        since: now,
    });
    if entry.since + FAILURE_WINDOW <= now {
        *entry = Failures {
            count: 0,
            since: now,
        };
    }
    entry.count += 1;
}

/// A hash nobody's password matches, of the cost new hashes get.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        bcrypt::hash(format!("{:x}", fastrand::u128(..)), super::users::COST).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn parses_basic_credentials_only() {
        assert_eq!(
            parse_basic(&basic("ana", "pa:ss wd")),
            Some(("ana".into(), "pa:ss wd".into()))
        );
        assert_eq!(parse_basic(b"basic YTpi"), Some(("a".into(), "b".into())));
        for bad in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic YWJj",
            b"Basic",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    fn gate_with(users: &str) -> (tempfile::TempDir, Gate) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("console.passwd");
        std::fs::write(&file, users).unwrap();
        let gate = Gate::new(file);
        (dir, gate)
    }

    /// Paused time: the failure delays and windows pass at once.
    #[tokio::test(start_paused = true)]
    async fn right_wrong_and_too_many() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let (_dir, gate) = gate_with(&format!("ana:{hash}\n"));
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(gate.check(None, peer).await, Verdict::Challenge);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                gate.check(Some(&basic("ana", "guess")), other).await,
                Verdict::Challenge
            );
        }
        // Locked out: not even the right password is verified until the window ends.
        match gate.check(Some(&basic("ana", "secret")), other).await {
            Verdict::Wait(after) => assert!(after <= FAILURE_WINDOW, "{after:?}"),
            verdict => panic!("expected to wait, got {verdict:?}"),
        }
        // Other addresses are not locked out; an unknown user is refused like a wrong password.
        assert_eq!(
            gate.check(Some(&basic("nobody", "x")), peer).await,
            Verdict::Challenge
        );
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), peer).await,
            Verdict::Allow
        );
        tokio::time::advance(FAILURE_WINDOW).await;
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), other).await,
            Verdict::Allow
        );
        // Remembered: allowed again without a verification, until the file changes.
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), peer).await,
            Verdict::Allow
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_takes_effect_at_once() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let (dir, gate) = gate_with(&format!("ana:{hash}\n"));
        let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), peer).await,
            Verdict::Allow
        );
        let file = dir.path().join("console.passwd");
        std::fs::write(&file, "# nobody\n").unwrap();
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), peer).await,
            Verdict::Challenge
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            gate.check(Some(&basic("ana", "secret")), peer).await,
            Verdict::Challenge
        );
    }
}
