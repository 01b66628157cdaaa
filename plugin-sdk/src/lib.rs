//! # streamtap plugin SDK
//!
//! Write a streamtap pipeline step in ordinary Rust: implement [`Plugin`], call
//! [`export!`], build with `cargo build --release --target wasm32-wasip2`. The SDK hides the
//! component-model plumbing (the WIT package in `wit/`, the batch wire format in [`codec`]):
//! a plugin sees borrowed [`Message`]s and pushes [`Action`]s.
//!
//! ```ignore
//! use streamtap_plugin_sdk::{export, Actions, Message, Plugin};
//!
//! #[derive(serde::Deserialize, Default)]
//! struct Config { word: String }
//!
//! struct Shout { word: String }
//!
//! impl Plugin for Shout {
//!     type Config = Config;
//!     fn init(config: Config) -> Result<Self, String> { Ok(Shout { word: config.word }) }
//!     fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
//!         out.set("has_word", msg.text().contains(&self.word));
//!     }
//! }
//! export!(Shout);
//! ```
//!
//! The same crate unit-tests natively with `cargo test` through [`testing::run`]; the host
//! capabilities ([`host`]) have in-process stand-ins there.
//!
//! With `default-features = false` only [`codec`] is compiled: that is how the host shares
//! the wire format with plugins instead of copying it.

pub mod codec;
pub mod duration;

pub use codec::{Action, Alert, Badge, ChatMessage, Emote, Message, Value, ValueRef};

#[cfg(feature = "guest")]
mod guest;
#[cfg(feature = "guest")]
pub use guest::*;
