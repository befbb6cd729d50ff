//! Limits of the Modbus protocol that the configuration is checked against
//! (`max_registers_per_read`, a point's register count) and the read planner obeys
//! ([`crate::modbus::plan`]): defined once, below both.

/// Protocol limit for FC 3/4 (read holding/input registers).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Protocol limit for FC 1/2 (read coils/discrete inputs).
pub const MAX_BITS_PER_READ: u16 = 2000;
