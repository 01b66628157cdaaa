//! Transports carry messages from collection to processing.
//!
//! - [`memory`]: a bounded in-process queue (the embedded default). A full queue makes the
//!   producer wait: backpressure, never drops.
//! - [`kafka`]: the Kafka building blocks (rdkafka): versioned JSON schema, idempotent
//!   producer with backpressure, consumer that commits only acked offsets, dead letters.
//!   See docs/KAFKA.md. Not yet selectable in pipeline files.

pub mod kafka;
pub mod memory;
