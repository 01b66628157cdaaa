//! A plugin that does nothing: the reference for measuring per-step overhead.

use streamtap_plugin_sdk::{Actions, Message, Plugin, export};

/// Accepts an empty `with` table only.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {}

pub struct Noop;

impl Plugin for Noop {
    type Config = Config;

    fn init(_config: Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn process(&mut self, _msg: &Message<'_>, _out: &mut Actions) {}
}

export!(Noop);

#[cfg(test)]
mod tests {
    use super::*;
    use streamtap_plugin_sdk::testing;

    #[test]
    fn returns_no_actions() {
        let mut p: Noop = testing::init(serde_json::json!({})).unwrap();
        let out = testing::run(&mut p, &[testing::message("c", "u", "hi")]);
        assert_eq!(out, vec![vec![]]);
    }
}
