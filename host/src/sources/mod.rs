//! Sources: where chat messages come from.
//!
//! - [`irc`]: normalises one raw Twitch IRC line into a [`ChatMessage`](streamtap_plugin_sdk::ChatMessage).
//! - [`replay`]: replays a log of raw IRC lines at a configured rate (the embedded default).
//! - [`twitch`]: live chat through the `twitch-irc` client, with a configurable transport,
//!   the JOIN rate limit, reconnect backoff, gap records and sharding; chat lines wait
//!   in a [`spool`] (memory, then a spill file) so connections are always read.
//! - [`helix`]: stream status (live/offline, stream id) from the Helix API for the `twitch`
//!   source's channels, within the rate-limit [`budget`] shared by all instances.

pub mod budget;
pub mod helix;
pub mod irc;
pub mod replay;
pub mod spool;
pub mod twitch;
