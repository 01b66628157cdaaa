//! The guest side: the [`Plugin`] trait, the [`export!`](crate::export) macro, host
//! capabilities, and native test helpers.

use crate::codec::{self, Action, Alert, Message, OutputWriter, Value, ValueRef};
use std::cell::RefCell;

/// Bindings generated from `wit/` (the one WIT package). Not for plugin authors: use
/// [`Plugin`], [`export!`](crate::export) and [`host`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::streamtap_plugin_sdk::bindings",
    });
}

/// The actions a plugin returns for one message.
///
/// Each action is encoded into the wire format as it is pushed (one buffer per message,
/// reused from batch to batch), so nothing is built only to be encoded and dropped on the
/// way out; with [`Actions::set_ref`] setting a field allocates nothing once the buffers
/// have grown (`set` still takes an owned [`Value`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Actions {
    buf: Vec<u8>,
    count: u32,
}

impl Actions {
    /// Sets (or replaces) a field on the message. Later steps and the sink see it.
    pub fn set(&mut self, name: impl AsRef<str>, value: impl Into<Value>) {
        self.buf.push(0);
        codec::put_str(&mut self.buf, name.as_ref());
        codec::put_value(&mut self.buf, &value.into());
        self.count += 1;
    }

    /// Sets a field from a borrowed value: no allocation, for a step that sets the same
    /// shape on every message. `out.set_ref("score", ValueRef::Map(&[("pos", ValueRef::Float(p))]))`
    /// stores exactly what `out.set("score", Value::map([("pos", Value::from(p))]))` would.
    pub fn set_ref(&mut self, name: &str, value: ValueRef<'_>) {
        self.buf.push(0);
        codec::put_str(&mut self.buf, name);
        codec::put_value_ref(&mut self.buf, &value);
        self.count += 1;
    }

    /// Sets the field of `template` to its value with the template's floats replaced by
    /// `floats`, in order: exactly what [`Actions::set_ref`] of that value stores, for a
    /// fraction of the work, for a step that sets the same shape on every message with
    /// only its numbers changing. `floats` must hold [`SetTemplate::floats`] numbers
    /// (asserted in debug builds; in release a shorter `floats` leaves the rest at the
    /// template's values and extra ones are ignored).
    ///
    /// The whole action is one copy plus a store per number: encoding it key by key costs
    /// a dozen small writes, each a capacity check and often a copy call, and in a WASM
    /// guest those dominate a cheap step's output.
    pub fn set_template(&mut self, template: &SetTemplate, floats: &[f64]) {
        debug_assert_eq!(
            floats.len(),
            template.floats.len(),
            "floats for the template"
        );
        let base = self.buf.len();
        self.buf.extend_from_slice(&template.bytes);
        for (&at, f) in template.floats.iter().zip(floats) {
            // Cannot fail (the offsets come from the template's own bytes, just copied);
            // `get_mut` rather than indexing keeps a panic path out of the hot loop.
            if let Some(slot) = self.buf.get_mut(base + at..base + at + 8) {
                slot.copy_from_slice(&f.to_le_bytes());
            }
        }
        self.count += 1;
    }

    /// Sets a field from any serde-serializable value.
    pub fn set_serialized<T: serde::Serialize>(
        &mut self,
        name: impl AsRef<str>,
        value: &T,
    ) -> Result<(), String> {
        let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
        self.set(name, Value::from_json(json));
        Ok(())
    }

    /// Drops the message: later steps and the sink never see it.
    pub fn drop_message(&mut self, reason: impl AsRef<str>) {
        self.buf.push(1);
        codec::put_str(&mut self.buf, reason.as_ref());
        self.count += 1;
    }

    /// Raises an alert (delivered at most once per `dedupe_key`).
    pub fn alert(&mut self, alert: Alert) {
        self.push(&Action::Alert(alert));
    }

    /// Emits a record (for example a window aggregate) into `table`, keyed by `key`.
    pub fn record(&mut self, table: impl AsRef<str>, key: impl AsRef<str>, value: Value) {
        self.buf.push(3);
        codec::put_str(&mut self.buf, table.as_ref());
        codec::put_str(&mut self.buf, key.as_ref());
        codec::put_value(&mut self.buf, &value);
        self.count += 1;
    }

    /// Reports a metric sample.
    pub fn metric(&mut self, name: impl AsRef<str>, value: f64, labels: Vec<(String, String)>) {
        self.buf.push(4);
        codec::put_str(&mut self.buf, name.as_ref());
        self.buf.extend_from_slice(&value.to_le_bytes());
        codec::put_pairs(&mut self.buf, &labels);
        self.count += 1;
    }

    /// Pushes an action given as a value.
    pub fn push(&mut self, action: &Action) {
        codec::put_action(&mut self.buf, action);
        self.count += 1;
    }

    /// How many actions were pushed.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no action was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The actions pushed so far, decoded (for tests and debugging).
    ///
    /// # Panics
    ///
    /// When an action cannot be decoded, which only a value nested deeper than the format
    /// allows causes; the host would refuse that plugin output too.
    pub fn to_vec(&self) -> Vec<Action> {
        codec::decode_actions(&self.buf, self.len())
            .unwrap_or_else(|e| panic!("actions pushed cannot be decoded: {e}"))
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

/// A `set` action encoded once, whose numbers [`Actions::set_template`] replaces per
/// message: for a step that sets the same shape on every message.
///
/// ```
/// use streamtap_plugin_sdk::{Actions, SetTemplate, ValueRef};
///
/// let t = SetTemplate::new("score", ValueRef::Map(&[("pos", ValueRef::Float(0.0))]));
/// let mut out = Actions::default();
/// out.set_template(&t, &[0.75]);
/// // The same as:
/// let mut same = Actions::default();
/// same.set_ref("score", ValueRef::Map(&[("pos", ValueRef::Float(0.75))]));
/// assert_eq!(out, same);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SetTemplate {
    /// The encoded action.
    bytes: Vec<u8>,
    /// Where each [`ValueRef::Float`]'s 8 bytes start in `bytes`, in order (floats inside
    /// a [`ValueRef::Value`] are not counted).
    floats: Vec<usize>,
}

impl SetTemplate {
    /// The action `set name = value`, its floats to be replaced.
    pub fn new(name: &str, value: ValueRef<'_>) -> Self {
        fn put(out: &mut Vec<u8>, v: &ValueRef<'_>, floats: &mut Vec<usize>) {
            match *v {
                ValueRef::Float(f) => {
                    out.push(4);
                    floats.push(out.len());
                    out.extend_from_slice(&f.to_le_bytes());
                }
                ValueRef::List(l) => {
                    out.push(6);
                    codec::put_varint(out, l.len() as u64);
                    for item in l {
                        put(out, item, floats);
                    }
                }
                ValueRef::Map(m) => {
                    out.push(7);
                    codec::put_varint(out, m.len() as u64);
                    for (k, item) in m {
                        codec::put_str(out, k);
                        put(out, item, floats);
                    }
                }
                ref other => codec::put_value_ref(out, other),
            }
        }
        let (mut bytes, mut floats) = (vec![0], Vec::new());
        codec::put_str(&mut bytes, name);
        put(&mut bytes, &value, &mut floats);
        SetTemplate { bytes, floats }
    }

    /// How many floats [`Actions::set_template`] replaces.
    pub fn floats(&self) -> usize {
        self.floats.len()
    }
}

/// Buffers bigger than this are not kept for the next batch: one giant message must not
/// pin its memory for the life of the instance.
const KEEP_BUFFER: usize = 16 * 1024;

thread_local! {
    /// The per-message buffers of the last batch, reused by the next.
    static SPARE: RefCell<Vec<Actions>> = const { RefCell::new(Vec::new()) };
}

/// The action lists of a whole batch, one [`Actions`] per input message.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// At least `n` lists: spare ones past `n`, kept from a bigger earlier batch, are
    /// cleared and never encoded.
    lists: Vec<Actions>,
    /// The batch size.
    n: usize,
}

impl BatchOutput {
    fn new(n: usize) -> Self {
        let mut lists = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        for l in &mut lists {
            l.clear();
        }
        if lists.len() < n {
            lists.resize_with(n, Actions::default);
        }
        BatchOutput { lists, n }
    }

    /// The actions for message `index` of the batch. Out-of-range indexes get a throwaway
    /// list rather than a panic, since generated code must never panic on plugin mistakes.
    pub fn message(&mut self, index: usize) -> &mut Actions {
        if index >= self.n {
            // Past the batch: a list `encode` ignores, so the batch size stays right.
            if self.lists.len() <= self.n {
                self.lists.push(Actions::default());
            }
            let last = self.lists.len() - 1;
            return &mut self.lists[last];
        }
        &mut self.lists[index]
    }

    fn encode(mut self) -> Vec<u8> {
        let n = self.n;
        let mut w = OutputWriter::new(n);
        w.reserve(self.lists.iter().take(n).map(|l| 4 + l.buf.len()).sum());
        for l in self.lists.iter().take(n) {
            w.begin_message();
            w.encoded(l.count, &l.buf);
        }
        // Giant buffers are dropped (not pinned for the instance's life); the rest, past
        // `n` too, serve the next batch, whatever its size.
        self.lists.retain(|l| l.buf.capacity() <= KEEP_BUFFER);
        SPARE.with(|s| *s.borrow_mut() = self.lists);
        w.finish()
    }
}

/// A pipeline step. Implement this and call [`export!`](crate::export) on the type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a streamtap plugin",
    label = "export!() needs a type that implements streamtap_plugin_sdk::Plugin",
    note = "implement `Plugin` for `{Self}`: `type Config`, `fn init(Config) -> Result<Self, String>` and `fn process(&mut self, &Message<'_>, &mut Actions)`"
)]
pub trait Plugin: Sized + 'static {
    /// The step's `with` table, deserialized. Use `#[serde(deny_unknown_fields)]` so typos
    /// in pipeline files are reported, and `#[serde(default)]` for optional keys.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config. An `Err` fails the pipeline check or reload with
    /// this message; the previous pipeline keeps running.
    fn init(config: Self::Config) -> Result<Self, String>;

    /// Processes one message.
    fn process(&mut self, msg: &Message<'_>, out: &mut Actions);

    /// Processes a batch; override to work across messages (one HTTP request for many).
    fn process_batch(&mut self, msgs: &[Message<'_>], out: &mut BatchOutput) {
        for (i, m) in msgs.iter().enumerate() {
            self.process(m, out.message(i));
        }
    }

    /// Called once after every batch, for work that belongs to the batch rather than to a
    /// message: writing changed state back to [`host::kv`] once instead of per message,
    /// or one log line summing up the batch.
    fn end_batch(&mut self) {}

    /// Called once when the run ends, after the last batch (and its
    /// [`end_batch`](Plugin::end_batch)): emit what is still held open, such as the last
    /// window of an aggregate that would otherwise close only on a later message. Only
    /// [`Actions::record`], [`Actions::metric`] and [`Actions::alert`] mean something here
    /// (there is no message to set fields on or drop). [`end_batch`](Plugin::end_batch)
    /// runs again afterwards, so state changed here is saved the usual way. The default
    /// does nothing.
    fn flush(&mut self, out: &mut Actions) {
        let _ = out;
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::bindings::PluginInfo;

    pub fn init<P: Plugin>(
        state: &RefCell<Option<P>>,
        name: &str,
        version: &str,
        config: String,
    ) -> Result<PluginInfo, String> {
        let cfg: P::Config =
            serde_json::from_str(&config).map_err(|e| format!("invalid `with` config: {e}"))?;
        let p = P::init(cfg)?;
        *state.borrow_mut() = Some(p);
        Ok(PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    pub fn process<P: Plugin>(
        state: &RefCell<Option<P>>,
        batch: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let mut st = state
            .try_borrow_mut()
            .map_err(|_| "process re-entered".to_string())?;
        let plugin = st.as_mut().ok_or("process called before init")?;
        process_with(plugin, &batch)
    }

    pub fn flush<P: Plugin>(state: &RefCell<Option<P>>) -> Result<Vec<u8>, String> {
        let mut st = state
            .try_borrow_mut()
            .map_err(|_| "flush re-entered".to_string())?;
        let plugin = st.as_mut().ok_or("flush called before init")?;
        Ok(flush_with(plugin))
    }

    /// Flush, then encode the actions as an output of one action list.
    pub fn flush_with<P: Plugin>(plugin: &mut P) -> Vec<u8> {
        let mut out = BatchOutput::new(1);
        plugin.flush(out.message(0));
        plugin.end_batch();
        out.encode()
    }

    /// Decode, run, encode: the one code path both the export glue and native tests use.
    pub fn process_with<P: Plugin>(plugin: &mut P, batch: &[u8]) -> Result<Vec<u8>, String> {
        let msgs = codec::decode_batch(batch).map_err(|e| format!("bad input batch: {e}"))?;
        let mut out = BatchOutput::new(msgs.len());
        plugin.process_batch(&msgs, &mut out);
        plugin.end_batch();
        // Messages decode lazily, so a malformed one is only noticed when the plugin read
        // it; fail the call then, so the host applies `on_error` to it.
        if let Some((i, e)) = msgs
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.decode_error().map(|e| (i, e)))
        {
            return Err(format!("bad input message {i} of the batch: {e}"));
        }
        Ok(out.encode())
    }
}

/// Exports a [`Plugin`] implementation as the component's `plugin` world.
///
/// Use once per plugin crate, at the crate root: `export!(MyPlugin);`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __StreamtapExport;

        ::std::thread_local! {
            static __STREAMTAP_STATE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        impl $crate::bindings::Guest for __StreamtapExport {
            fn init(
                config: ::std::string::String,
            ) -> ::std::result::Result<$crate::__private::PluginInfo, ::std::string::String> {
                __STREAMTAP_STATE.with(|s| {
                    $crate::__private::init::<$plugin>(
                        s,
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        config,
                    )
                })
            }

            fn process(
                batch: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                __STREAMTAP_STATE.with(|s| $crate::__private::process::<$plugin>(s, batch))
            }

            fn flush() -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                __STREAMTAP_STATE.with(|s| $crate::__private::flush::<$plugin>(s))
            }
        }

        $crate::bindings::__export_plugin_world!(__StreamtapExport with_types_in $crate::bindings);
    };
}

/// Capabilities the host grants. Natively (in `cargo test`) they have in-process stand-ins:
/// logs go to stderr, key-value state to a thread-local map, HTTP to [`testing::set_http`].
pub mod host {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::streamtap::plugin as wit;

    /// Log levels.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    /// Writes to the host log, tagged with the step name.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            let l = match level {
                Level::Trace => wit::host::Level::Trace,
                Level::Debug => wit::host::Level::Debug,
                Level::Info => wit::host::Level::Info,
                Level::Warn => wit::host::Level::Warn,
                Level::Error => wit::host::Level::Error,
            };
            wit::host::log(l, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message}");
    }

    /// Host wall-clock time, milliseconds since the Unix epoch.
    pub fn now_ms() -> i64 {
        #[cfg(target_arch = "wasm32")]
        {
            wit::host::now_ms()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        }
    }

    /// Per-step key-value state that survives hot reloads.
    pub mod kv {
        #[cfg(not(target_arch = "wasm32"))]
        thread_local! {
            static MAP: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>> =
                Default::default();
        }

        pub fn get(key: &str) -> Option<Vec<u8>> {
            #[cfg(target_arch = "wasm32")]
            {
                super::wit::kv::get(key)
            }
            #[cfg(not(target_arch = "wasm32"))]
            MAP.with(|m| m.borrow().get(key).cloned())
        }

        /// Stores a value; fails when the step's state would exceed the host's cap.
        pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
            #[cfg(target_arch = "wasm32")]
            {
                super::wit::kv::set(key, value)
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                MAP.with(|m| m.borrow_mut().insert(key.to_owned(), value.to_vec()));
                Ok(())
            }
        }

        pub fn delete(key: &str) {
            #[cfg(target_arch = "wasm32")]
            super::wit::kv::delete(key);
            #[cfg(not(target_arch = "wasm32"))]
            MAP.with(|m| m.borrow_mut().remove(key));
        }
    }

    /// Outbound HTTP to the hosts the step's `allow_http` lists.
    pub mod http {
        /// An HTTP request.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Request {
            pub method: String,
            pub url: String,
            pub headers: Vec<(String, String)>,
            pub body: Vec<u8>,
            pub timeout_ms: Option<u32>,
        }

        /// An HTTP response.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Response {
            pub status: u16,
            pub headers: Vec<(String, String)>,
            pub body: Vec<u8>,
        }

        /// Why a request failed.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Error {
            NotAllowed(String),
            Timeout,
            TooLarge(u64),
            Transport(String),
        }

        impl std::fmt::Display for Error {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    Error::NotAllowed(h) => write!(f, "host {h:?} is not in allow_http"),
                    Error::Timeout => write!(f, "request timed out"),
                    Error::TooLarge(n) => write!(f, "response larger than {n} bytes"),
                    Error::Transport(e) => write!(f, "transport error: {e}"),
                }
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        type Handler = Box<dyn Fn(&Request) -> Result<Response, Error>>;

        #[cfg(not(target_arch = "wasm32"))]
        thread_local! {
            pub(crate) static HANDLER: std::cell::RefCell<Option<Handler>> = const { std::cell::RefCell::new(None) };
        }

        /// Sends a request through the host.
        pub fn send(req: &Request) -> Result<Response, Error> {
            #[cfg(target_arch = "wasm32")]
            {
                use super::wit::http as w;
                let r = w::Request {
                    method: req.method.clone(),
                    url: req.url.clone(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                    timeout_ms: req.timeout_ms,
                };
                match w::send(&r) {
                    Ok(resp) => Ok(Response {
                        status: resp.status,
                        headers: resp.headers,
                        body: resp.body,
                    }),
                    Err(w::HttpError::NotAllowed(h)) => Err(Error::NotAllowed(h)),
                    Err(w::HttpError::Timeout) => Err(Error::Timeout),
                    Err(w::HttpError::TooLarge(n)) => Err(Error::TooLarge(n)),
                    Err(w::HttpError::Transport(e)) => Err(Error::Transport(e)),
                }
            }
            #[cfg(not(target_arch = "wasm32"))]
            HANDLER.with(|h| match &*h.borrow() {
                Some(f) => f(req),
                None => Err(Error::NotAllowed(
                    "no HTTP handler set (testing::set_http)".into(),
                )),
            })
        }
    }
}

/// Native test helpers: run a plugin through the real codec, without a host.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use super::*;
    use crate::codec::ChatMessage;

    /// Builds a message with the given channel, user and text, and sensible other fields.
    pub fn message(channel: &str, user: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id: format!("{channel}-{user}-{}", text.len()),
            kind: "privmsg".into(),
            channel: channel.into(),
            channel_id: "1".into(),
            user: user.into(),
            user_id: "2".into(),
            display_name: user.into(),
            text: text.into(),
            ts_ms: 1_700_000_000_000,
            ..ChatMessage::default()
        }
    }

    /// Initialises `P` from a JSON `with` table, as the host would.
    pub fn init<P: Plugin>(with: serde_json::Value) -> Result<P, String> {
        let cfg: P::Config =
            serde_json::from_value(with).map_err(|e| format!("invalid `with` config: {e}"))?;
        P::init(cfg)
    }

    /// Runs one batch through `plugin` via the wire format, returning each message's actions.
    pub fn run<P: Plugin>(plugin: &mut P, msgs: &[ChatMessage]) -> Vec<Vec<Action>> {
        let buf = codec::encode_batch(msgs);
        let out = __private::process_with(plugin, &buf).expect("process");
        codec::decode_output(&out, msgs.len()).expect("decode output")
    }

    /// Runs [`Plugin::flush`] via the wire format, returning the actions it emitted.
    pub fn flush<P: Plugin>(plugin: &mut P) -> Vec<Action> {
        let out = __private::flush_with(plugin);
        codec::decode_output(&out, 1)
            .expect("decode output")
            .pop()
            .unwrap_or_default()
    }

    /// Routes [`host::http::send`] to `f` in native tests.
    pub fn set_http(
        f: impl Fn(&host::http::Request) -> Result<host::http::Response, host::http::Error> + 'static,
    ) {
        host::http::HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::codec::ChatMessage;

    /// Sets `n` on every message; drops messages whose text is "drop".
    struct Numbered {
        n: i64,
    }

    impl Plugin for Numbered {
        type Config = serde_json::Value;
        fn init(_: serde_json::Value) -> Result<Self, String> {
            Ok(Numbered { n: 0 })
        }
        fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
            self.n += 1;
            if msg.text() == "drop" {
                out.drop_message("asked to");
                return;
            }
            out.set_ref(
                "n",
                ValueRef::Map(&[
                    ("n", ValueRef::Int(self.n)),
                    ("t", ValueRef::Str(msg.text())),
                ]),
            );
            out.set("plain", self.n);
        }
    }

    #[test]
    fn reused_output_buffers_never_carry_actions_over() {
        let mut p = Numbered { n: 0 };
        let msgs: Vec<ChatMessage> = ["a", "drop", "c"]
            .iter()
            .map(|t| testing::message("ch", "u", t))
            .collect();
        let first = testing::run(&mut p, &msgs);
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 2]);
        // A smaller batch next: the buffers of the first are reused and must start empty.
        let second = testing::run(&mut p, &msgs[1..2]);
        assert_eq!(
            second,
            vec![vec![Action::Drop {
                reason: "asked to".into()
            }]]
        );
        let third = testing::run(&mut p, &msgs[..1]);
        assert_eq!(
            third,
            vec![vec![
                Action::Set {
                    name: "n".into(),
                    value: Value::map([("n", Value::Int(5)), ("t", Value::from("a"))]),
                },
                Action::Set {
                    name: "plain".into(),
                    value: Value::Int(5),
                },
            ]]
        );
    }

    /// Reads only the badges and the emotes, setting how many it saw.
    struct BadgesAndEmotes;

    impl Plugin for BadgesAndEmotes {
        type Config = serde_json::Value;
        fn init(_: serde_json::Value) -> Result<Self, String> {
            Ok(BadgesAndEmotes)
        }
        fn process(&mut self, msg: &Message<'_>, out: &mut Actions) {
            let n = msg.badges().count() + msg.emotes().count();
            out.set("n", n as i64);
        }
    }

    #[test]
    fn a_badge_or_emote_cut_inside_a_character_fails_the_call() {
        // One badge ("é", "1") and two emote ids ("é", "x"); a zero timestamp so every
        // length is one byte: the badge list starts after strs, 8 core lengths and the ts.
        let mut m = testing::message("ch", "u", "hi");
        m.ts_ms = 0;
        m.badges = vec![codec::Badge {
            name: "é".into(),
            version: "1".into(),
        }];
        m.emotes = ["é", "x"]
            .map(|id| codec::Emote {
                id: id.into(),
                start: 0,
                end: 1,
            })
            .into();
        let buf = codec::encode_batch(&[m]);
        assert!(buf[2] < 0x80 && buf[3] < 0x80, "one-byte lengths");
        let at = 4 + usize::from(buf[3]) + 8 + 1;
        // badge count, name and version lengths, emote count, (length, start, end) x 2.
        assert_eq!(buf[at..at + 10], [1, 2, 1, 2, 2, 0, 1, 1, 0, 1]);
        assert!(__private::process_with(&mut BadgesAndEmotes, &buf).is_ok());

        // Each half of a split "é" is not a string: the call fails, nothing is dropped.
        for (cut, reason) in [
            ([at + 1, at + 2], "badge string not on a character boundary"),
            ([at + 4, at + 7], "emote id not on a character boundary"),
        ] {
            let mut buf = buf.clone();
            (buf[cut[0]], buf[cut[1]]) = (1, 2);
            let err = __private::process_with(&mut BadgesAndEmotes, &buf).unwrap_err();
            assert!(
                err.starts_with("bad input message 0 of the batch") && err.contains(reason),
                "{err}"
            );
        }
    }

    #[test]
    fn a_template_stores_what_set_ref_stores() {
        let owned = Value::map([("x", Value::Float(9.0))]);
        let shape = |a: f64| {
            [
                ("a", ValueRef::Float(a)),
                ("l", ValueRef::Str("label")),
                ("n", ValueRef::List(&[])),
                ("o", ValueRef::Value(&owned)),
            ]
        };
        let (inner0, inner1) = (shape(0.0), shape(-0.5));
        let nested0 = [ValueRef::Map(&inner0), ValueRef::Float(0.0)];
        let nested1 = [ValueRef::Map(&inner1), ValueRef::Float(f64::MAX)];
        let t = SetTemplate::new("s", ValueRef::List(&nested0));
        assert_eq!(t.floats(), 2);
        let mut a = Actions::default();
        a.set_template(&t, &[-0.5, f64::MAX]);
        let mut b = Actions::default();
        b.set_ref("s", ValueRef::List(&nested1));
        assert_eq!(a, b);
        // In release builds, too few floats leave the rest at the template's and extra
        // ones are ignored (debug builds assert the count instead).
        if !cfg!(debug_assertions) {
            let mut a = Actions::default();
            a.set_template(&t, &[-0.5]);
            let mut b = Actions::default();
            b.set_ref(
                "s",
                ValueRef::List(&[ValueRef::Map(&inner1), ValueRef::Float(0.0)]),
            );
            assert_eq!(a, b);
            let mut a = Actions::default();
            a.set_template(&t, &[-0.5, f64::MAX, 7.0]);
            let mut b = Actions::default();
            b.set_ref("s", ValueRef::List(&nested1));
            assert_eq!(a, b);
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "floats for the template")]
    fn a_template_given_the_wrong_number_of_floats_asserts_in_debug_builds() {
        let t = SetTemplate::new("s", ValueRef::Float(0.0));
        Actions::default().set_template(&t, &[1.0, 2.0]);
    }

    #[test]
    fn actions_decode_to_what_was_pushed() {
        let mut a = Actions::default();
        a.set("x", 1i64);
        a.record("t", "k", Value::Null);
        a.metric("m", 2.0, vec![("l".into(), "v".into())]);
        a.push(&Action::Drop { reason: "r".into() });
        assert_eq!(a.len(), 4);
        assert_eq!(
            a.to_vec(),
            vec![
                Action::Set {
                    name: "x".into(),
                    value: Value::Int(1)
                },
                Action::Record {
                    table: "t".into(),
                    key: "k".into(),
                    value: Value::Null
                },
                Action::Metric {
                    name: "m".into(),
                    value: 2.0,
                    labels: vec![("l".into(), "v".into())]
                },
                Action::Drop { reason: "r".into() },
            ]
        );
    }
}
