//! The broker's request handling and the state it applies from the log.
//!
//! - `log_entry`: what the broker writes into a group's log.
//! - `state`: topics and partition indexes, rebuilt by applying the log.

pub mod log_entry;
pub mod state;
