//! Sinks store what the pipeline produced.
//!
//! - [`sqlite`]: the embedded default; idempotent on message id.

pub mod sqlite;
