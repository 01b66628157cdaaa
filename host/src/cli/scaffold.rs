//! `streamtap plugin new`: a plugin crate that builds to a component out of the box.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

const LIB_RS: &str = r#"//! {{name}}: a streamtap pipeline step.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! (the component is `target/wasm32-wasip2/release/{{crate}}.wasm`).
//! Test natively: `cargo test`. Try it: `streamtap plugin test <wasm> < messages.jsonl`.

use streamtap_plugin_sdk::{export, Actions, Message, Plugin};

/// The step's `with` table in the pipeline file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Words to look for (case-insensitive).
    pub words: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { words: vec!["hello".into()] }
    }
}

pub struct {{type}} {
    words: Vec<String>,
}

impl Plugin for {{type}} {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.words.iter().any(|w| w.is_empty()) {
            return Err("`words` must not contain empty strings".into());
        }
        Ok({{type}} { words: config.words.iter().map(|w| w.to_lowercase()).collect() })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
        let text = msg.text().to_lowercase();
        let hits = self.words.iter().filter(|w| text.contains(w.as_str())).count();
        out.set("{{field}}", hits as i64);
    }
}

export!({{type}});

#[cfg(test)]
mod tests {
    use super::*;
    use streamtap_plugin_sdk::{testing, Action, Value};

    #[test]
    fn counts_words() {
        let mut p: {{type}} = testing::init(serde_json::json!({"words": ["gg", "wp"]})).unwrap();
        let out = testing::run(&mut p, &[testing::message("chan", "amy", "GG WP all")]);
        assert_eq!(out[0], vec![Action::Set { name: "{{field}}".into(), value: Value::Int(2) }]);
    }

    #[test]
    fn rejects_empty_words() {
        assert!(testing::init::<{{type}}>(serde_json::json!({"words": [""]})).is_err());
    }
}
"#;

fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Creates `dir/name`; fails if it exists.
pub fn create(dir: &Path, name: &str, sdk: &Path) -> anyhow::Result<PathBuf> {
    let ok = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("plugin SDK not found at {}", sdk.display()))?;
    let crate_name = name.replace('-', "_");
    std::fs::create_dir_all(root.join("src"))?;
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
streamtap-plugin-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true

# A standalone crate, not part of any enclosing workspace.
[workspace]
"#
    );
    std::fs::write(root.join("Cargo.toml"), cargo)?;
    let lib = LIB_RS
        .replace("{{name}}", name)
        .replace("{{crate}}", &crate_name)
        .replace("{{type}}", &camel(name))
        .replace("{{field}}", &format!("{crate_name}_hits"));
    std::fs::write(root.join("src/lib.rs"), lib)?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    std::fs::write(
        root.join("README.md"),
        format!(
            "# {name}\n\nA streamtap plugin.\n\n```sh\ncargo test                                        # native unit tests\ncargo build --release --target wasm32-wasip2      # the component\necho '{{\"text\":\"hello there\"}}' | streamtap plugin test target/wasm32-wasip2/release/{crate_name}.wasm\n```\n\nUse it in a pipeline:\n\n```toml\n[[steps]]\nuses = \"path/to/{crate_name}.wasm\"\nwith = {{ words = [\"hello\"] }}\n```\n"
        ),
    )?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    #[test]
    fn camel_case() {
        assert_eq!(super::camel("my-cool_plugin"), "MyCoolPlugin");
    }
}
