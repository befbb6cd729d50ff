//! fieldrelay: an edge gateway that polls Modbus devices, keeps every QoS 1/2 sample in a durable
//! SQLite queue and forwards it to a cloud MQTT broker.
//!
//! The crate follows the data, one way:
//!
//! ```text
//! config ─► modbus (a task per bus) ─► sample ─► app::GatewaySink ─┬─► queue (SQLite) ─► uplink (MQTT)
//!                                                                  ├─► local (on-site broker, live)
//!                                                                  └─► console (last values, live)
//! ```
//!
//! - [`config`] loads and validates the YAML file, reporting every problem with file, line, column
//!   and key path.
//! - [`modbus`] plans and performs register reads and decodes them into [`sample::Sample`]s.
//! - [`sample`] is the unit of data, the on-change/deadband reporting filter and the sink the
//!   pollers push into ([`sample::SampleSink`]); in the running gateway that sink is
//!   [`app::GatewaySink`]: a live copy to [`local`], then the [`queue`]; with `console:` it is
//!   wrapped in [`console::Tapped`], which keeps each point's last values for the [`console`].
//! - [`queue`] owns every sample that must not be lost until the broker acknowledged it;
//!   [`queue::inspect`] reads a queue file read-only for `fieldrelay queue stats|peek|export`.
//! - [`uplink`] is the MQTT 3.1.1 session to the cloud broker; it deletes a queue row only on PUBACK.
//! - [`local`] publishes live values and status to the on-site broker and takes its commands.
//! - [`commands`] carries commands from the brokers down to the devices, validated and answered.
//! - [`status`] publishes the gateway's certificates, each device's status and a health report.
//! - [`console`] is the local web console (read-only pages and live values); nothing but [`app`]
//!   uses it (and [`cli`] its users file's default path).
//! - [`app`] wires the tasks together (start-up, the gateway's sample sink) and owns the staged
//!   shutdown; [`cli`] is the command line (help, completions and man pages from one definition).
//! - [`fleet`] is the set of running bus owners; [`reload`] swaps its buses and devices on
//!   SIGHUP without touching the queue; [`remote_config`] takes a whole configuration pushed
//!   from the cloud, applies it through the reload path and rolls it back if it does not
//!   confirm.
//! - [`metrics`] serves Prometheus metrics read from the parts at scrape time, over [`http`]
//!   (hyper under our own limits), which also serves the [`console`].
//! - [`probe`] reads every point once for `fieldrelay probe`; [`progress`] draws its bar,
//!   [`table`] aligns its table (and `queue stats`').
//! - [`service`] talks to systemd: readiness, status line, a watchdog fed only while the
//!   pipeline makes progress; and picks the journal as log sink when stderr is the journal.
//! - [`import`] turns a vendor's register list (CSV) into checked points for
//!   `fieldrelay points import`.
//! - [`simulator`] is a Modbus TCP, RTU-over-TCP and RTU slave for demos and tests.
//!
//! Imports follow the same order: a module imports only from the layers below its own
//! (docs/ARCHITECTURE.md, "Layers"; `tests/layers.rs` checks every file).

pub mod app;
pub mod backoff;
pub mod budget;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod fleet;
pub mod http;
pub mod import;
pub mod local;
pub mod metrics;
pub mod modbus;
pub mod probe;
pub mod progress;
pub mod queue;
pub mod reload;
pub mod remote_config;
pub mod sample;
pub mod service;
pub mod simulator;
pub mod sparkplug;
pub mod status;
pub mod table;
pub mod uplink;
