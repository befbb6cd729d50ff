//! Wiring and shutdown (to be implemented).
