//! The fake service manager's end of `NOTIFY_SOCKET`: the sd_notify datagrams the gateway sends
//! (`READY=1`, `WATCHDOG=1`, `STATUS=…`, `RELOADING=1`, `STOPPING=1`), kept as text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixDatagram;

pub struct NotifySocket {
    /// What `NOTIFY_SOCKET` names.
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every datagram received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            path,
            socket,
            seen: Vec::new(),
        }
    }

    /// The next datagram (also kept in `seen`); `None` when none came within `deadline`.
    pub async fn recv(&mut self, deadline: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(deadline, self.socket.recv(&mut buf))
            .await
            .ok()?
            .expect("notify socket");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(text.clone());
        Some(text)
    }

    /// Receives until a datagram at index `from` or later in `seen` has the line `line`;
    /// returns its index. Panics after `deadline`.
    pub async fn until(&mut self, from: usize, line: &str, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let found = self
                    .seen
                    .iter()
                    .skip(from)
                    .position(|d| d.lines().any(|l| l == line));
                if let Some(i) = found {
                    return from + i;
                }
                if self.recv(deadline).await.is_none() {
                    return usize::MAX;
                }
            }
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(i) if i != usize::MAX => i,
            _ => panic!("no {line} from the gateway; got {:?}", self.seen),
        }
    }
}
