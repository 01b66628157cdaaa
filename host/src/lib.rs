//! # streamtap host
//!
//! The host process of the streamtap data platform. Modules follow the data's path:
//!
//! - [`sources`]: where chat comes from (`replay` of a raw IRC log, live `twitch`, and the
//!   Helix stream status beside it).
//! - [`recorder`]: streamlink recordings of live channels marked `record = true`.
//! - [`transport`]: how messages travel from collection to processing (`memory` in one
//!   process; `kafka` between `streamtap collect` and `streamtap process`).
//! - [`plugins`]: the WASM plugin runtime (the only module that touches wasmtime).
//! - [`pipeline`]: pipeline files, the step chain, hot reload and the run loop.
//! - [`sinks`]: where processed messages are stored (`sqlite`, `mongodb`).
//! - [`alerts`]: durable delivery of alerts plugins raise (`console`, `sns`, `webhook`).
//! - [`metrics`]: counters each component owns, read for progress and summaries.
//! - [`cli`]: the `streamtap` command line.

pub mod alerts;
pub mod cli;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod recorder;
pub mod sinks;
pub mod sources;
pub mod transport;
