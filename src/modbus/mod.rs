//! Modbus polling: plan the reads of a device ([`plan`]), perform them with timeouts and
//! reconnects ([`poller`]), decode the answers into samples ([`decode`]).
//!
//! Contract v1 covers Modbus TCP with one task per device; the fieldbus issue adds serial RTU,
//! RTU-over-TCP and one owner task per shared bus.

pub mod decode;
pub mod plan;
pub mod poller;

pub use poller::run_device;
