//! The on-site broker: fieldrelay as a client of the local mosquitto the package
//! configures (`packaging/mosquitto/`), so HMIs and dashboards on site read live values and
//! status and send commands while the WAN is down.
//!
//! - [`feed`]: how samples, device statuses and command results reach the client without ever
//!   waiting for it (samples come from the gateway's sample sink, [`crate::app::GatewaySink`]).
//! - [`retained`]: the statuses and retained values republished at every connect. Pure.
//! - [`client`]: the connection task, built from the uplink's transport, connection, session
//!   and acknowledgement parts, without the queue: live, not durable.
//!
//! Commands from the local broker are handled by a [`crate::commands::Handler`] of their own
//! (origin `local`): the same checks and codes as cloud commands, results on the local broker,
//! ids remembered separately from the cloud's.
//!
//! A down local broker costs the cloud path nothing (every hand-over is a `try_send`), and a
//! down cloud does not stop local publishing (samples are copied before they are queued).

pub mod client;
pub mod feed;
pub mod retained;

pub use client::LocalClient;
pub use feed::{LocalEvent, LocalFeed};
