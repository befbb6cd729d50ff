//! Modbus TCP slave for demos and tests (to be implemented).
