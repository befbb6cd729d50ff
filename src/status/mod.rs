//! Honest status: the gateway's certificates, each device's online/offline status and
//! the periodic health report — what they say (pure: [`gateway`], [`device`], [`health`]) and
//! the task that watches the running parts and publishes them ([`monitor`]).
//!
//! | topic | payload | retained | QoS | path |
//! |---|---|---|---|---|
//! | `P/status` | birth / death ([`gateway`]) | yes | 1 | the uplink's own session (birth at every connect, Last Will) |
//! | `P/<device>/status` | online / offline ([`device`]) | yes | 1 | the durable queue: reported after a WAN outage, in order |
//! | `P/health` | counters ([`health`]) | no | 0 | the uplink, only while connected |
//!
//! The on-site broker (`local:`) gets the certificates and device statuses too, not the health
//! report. The birth and the health report say which configuration runs ([`stamp`]).

pub mod device;
pub mod gateway;
pub mod health;
pub mod monitor;
pub mod stamp;
