//! Sends sd_notify(3) messages; a failure is logged, never fatal.

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

/// The service manager's notification socket, if the gateway runs under one.
#[derive(Debug)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set at start. Read once: the environment is not modified afterwards
    /// (removing variables is unsound once threads run).
    enabled: bool,
    /// Consecutive failed sends. Only the first of a run is a warning, so a socket that vanished
    /// does not flood the journal every few seconds; the recovery is logged once too.
    failures: u64,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            failures: 0,
        }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sends `states` as one datagram. Returns whether it was delivered to the socket.
    pub fn send(&mut self, states: &[NotifyState<'_>]) -> bool {
        if !self.enabled {
            return false;
        }
        match sd_notify::notify(states) {
            Ok(()) => {
                if self.failures > 0 {
                    info!(
                        failed = self.failures,
                        "systemd notifications are delivered again"
                    );
                    self.failures = 0;
                }
                true
            }
            Err(error) => {
                if self.failures == 0 {
                    warn!(%error, "cannot notify systemd (NOTIFY_SOCKET); the gateway keeps running");
                } else {
                    debug!(%error, failures = self.failures + 1, "cannot notify systemd");
                }
                self.failures += 1;
                false
            }
        }
    }
}
