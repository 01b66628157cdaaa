//! Tags every message with the plugin build (`version` = `v1`, or `v2` with `--features
//! v2`) and the step's config (`tag`), and counts messages in key-value state, so
//! hot-reload tests can see which generation processed each message and that state
//! survived.

use streamtap_plugin_sdk::{Actions, Message, Plugin, export, host};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Copied to the `tag` field of every message.
    pub tag: String,
    /// Make `init` fail (a broken generation).
    pub fail_init: bool,
}

pub struct Versioned {
    tag: String,
}

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

impl Plugin for Versioned {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.fail_init {
            return Err("fail_init is set".into());
        }
        Ok(Versioned { tag: config.tag })
    }

    fn process(&mut self, _msg: &Message<'_>, out: &mut Actions) {
        let seen = host::kv::get("seen")
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
            + 1;
        let _ = host::kv::set("seen", &seen.to_le_bytes());
        out.set("version", VERSION);
        out.set("tag", self.tag.as_str());
        out.set("seen", seen as i64);
    }
}

export!(Versioned);
