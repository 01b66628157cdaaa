//! Transports carry messages from collection to processing.
//!
//! - [`memory`]: a bounded in-process queue (the embedded default). A full queue makes the
//!   producer wait: backpressure, never drops.

pub mod memory;
