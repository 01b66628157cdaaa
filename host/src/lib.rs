//! # streamtap host
//!
//! The host process of the streamtap data platform. Modules follow the data's path:
//!
//! - [`sources`]: where chat comes from (`replay` of a raw IRC log, live `twitch`).
//! - [`transport`]: how messages travel from collection to processing (`memory`; `kafka`
//!   building blocks, not yet selectable).
//! - [`plugins`]: the WASM plugin runtime (the only module that touches wasmtime).
//! - [`pipeline`]: pipeline files, the step chain, hot reload and the run loop.
//! - [`sinks`]: where processed messages are stored (`sqlite`).
//! - [`alerts`]: durable delivery of alerts plugins raise (`console`, `sns`, `webhook`).
//! - [`metrics`]: counters each component owns, read for progress and summaries.
//! - [`cli`]: the `streamtap` command line.

pub mod alerts;
pub mod cli;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod sinks;
pub mod sources;
pub mod transport;
