//! How a queue is opened: its options, from the `store` section and the points' `max_age`s.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{OnFull, StoreConfig, SyncMode};

#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Most rows committed in one transaction.
    pub max_batch: usize,
    /// Capacity of the QoS 0 live channel.
    pub live_capacity: usize,
    /// `store.max_size`: bytes of `queue.db` plus its WAL budget.
    pub max_size: u64,
    pub on_full: OnFull,
    pub sync: SyncMode,
    /// Per (device, point) `max_age`.
    pub max_age: HashMap<(String, String), Duration>,
    /// How often at most the writer deletes expired never-sent rows (when some point has a
    /// `max_age`). The sweep only keeps depth and size honest while nothing is sent; the uplink
    /// also drops expired rows when it meets them.
    pub expiry_sweep: Duration,
}

/// Default `store.max_size` (see the config).
pub const DEFAULT_MAX_SIZE: u64 = crate::config::DEFAULT_MAX_SIZE;

impl QueueOptions {
    /// The options of the gateway's queue: the `store` section and the points' `max_age`s.
    pub fn for_store(store: &StoreConfig) -> QueueOptions {
        QueueOptions {
            max_size: store.max_size,
            on_full: store.on_full,
            sync: store.sync,
            max_age: max_ages(store),
            ..QueueOptions::default()
        }
    }
}

/// The points' `max_age`s as the queue takes them ([`QueueOptions::max_age`],
/// [`super::Queue::set_max_age`]): at start, and again after a reload.
pub fn max_ages(store: &StoreConfig) -> HashMap<(String, String), Duration> {
    store
        .max_age
        .iter()
        .map(|(key, age)| (key.clone(), *age))
        .collect()
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_batch: 1000,
            live_capacity: 1024,
            max_size: DEFAULT_MAX_SIZE,
            on_full: OnFull::DropOldest,
            sync: SyncMode::Full,
            max_age: HashMap::new(),
            expiry_sweep: Duration::from_secs(1),
        }
    }
}
