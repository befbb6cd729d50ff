//! What the uplink says about the gateway itself, besides queued rows: the birth and
//! death certificates on `P/status` (payloads in [`crate::status::gateway`]), the health report
//! on `P/health`, and how many connections were made.
//!
//! - The birth is rendered at every CONNACK from the current [`GatewayInfo`]; when the info
//!   changes (a reload changed the device map) it is published again on the running connection.
//! - The Last Will and the graceful death follow `uplink.status.offline` (retain or clear).
//! - Health reports are published only while connected, QoS 0, not retained, like QoS 0
//!   samples: a report that waited for a connection is stale and is discarded at connect.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::config::OfflineStatus;
use crate::status::gateway::{self, GatewayInfo, OfflineReason};

/// The uplink's sources for certificates and reports.
#[derive(Debug)]
pub struct Presence {
    /// What the birth says; a change republishes it.
    pub gateway: watch::Receiver<Arc<GatewayInfo>>,
    pub offline: OfflineStatus,
    /// Health report payloads, for `P/health`.
    pub health: mpsc::Receiver<Bytes>,
}

impl Presence {
    /// A birth without a device map, a retained offline status, no health reports: for an
    /// [`super::Uplink`] run without the gateway around it (tests, benches).
    pub fn fixed(started_ms: i64) -> Presence {
        let (_, gateway) = watch::channel(Arc::new(GatewayInfo {
            version: gateway::VERSION,
            started: started_ms,
            devices: Vec::new(),
            config: None,
        }));
        let (_, health) = mpsc::channel(1);
        Presence {
            gateway,
            offline: OfflineStatus::Retain,
            health,
        }
    }

    /// The birth certificate of a connection made at `ts_ms`; marks the info as published.
    pub fn birth(&mut self, ts_ms: i64) -> Bytes {
        self.gateway.borrow_and_update().birth(ts_ms)
    }

    /// The Last Will of a connection made at `ts_ms`.
    pub fn will(&self, ts_ms: i64) -> Bytes {
        gateway::death(ts_ms, OfflineReason::ConnectionLost, self.offline)
    }

    /// The graceful death at `ts_ms`.
    pub fn death(&self, ts_ms: i64) -> Bytes {
        gateway::death(ts_ms, OfflineReason::Shutdown, self.offline)
    }
}

/// `P/health`.
pub fn health_topic(prefix: &str) -> String {
    format!("{prefix}/health")
}
