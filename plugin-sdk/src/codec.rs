//! The batch wire format (version 1) shared by host and guest.
//!
//! One `process` call carries a whole batch as one byte buffer, because lifting a typed WIT
//! record per message costs far more than copying one buffer (see `wit/plugin.wit`). Both
//! sides use this module, so the format is defined exactly once.
//!
//! ```text
//! batch    := u8 version=1, varint count, message*
//! message  := varint body_len, body
//! body     := varint strs_len, strs,                        -- all of the message's strings,
//!                                                            -- concatenated, UTF-8
//!             varint×8 lengths of id, kind, channel, channel_id, user, user_id,
//!                      display_name, text (in that order, from the start of strs),
//!             zigzag ts_ms,
//!             varint n, (varint name_len, varint version_len)*  -- badges, strings next in strs
//!             varint n, (varint id_len, varint start, varint end)* -- emotes (char positions),
//!                                                                   -- ids next in strs
//!             varint n, (str name, value)*                 -- fields set so far
//! value    := 0 null | 1 false | 2 true | 3 zigzag int | 4 f64 LE | 5 str
//!           | 6 varint n, value* | 7 varint n, (str key, value)*
//! str      := varint len, UTF-8 bytes
//!
//! output   := u8 version=1, varint count, (u32 LE n, action*)*   -- one list per message
//! action   := 0 set      str name, value
//!           | 1 drop     str reason
//!           | 2 alert    str topic, str severity, str title, str body, str dedupe_key,
//!                        varint n, (str key, str value)*
//!           | 3 record   str table, str key, value
//!           | 4 metric   str name, f64 LE value, varint n, (str key, str value)*
//! ```
//!
//! Decoding never panics: every read is bounds-checked and returns [`DecodeError`], because
//! either side may be handed garbage (a buggy plugin, a corrupted buffer).
//!
//! Why a message's strings sit together: the guest finds all of them from one length and a
//! few varints, without touching their bytes. Each string is checked to be UTF-8 only when
//! a plugin reads it (badge strings and emote ids as one region each), so a step pays for
//! the strings it uses: the sentiment step validates the text and nothing else (the ids,
//! names and badges are most of a message's string bytes).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;

/// Format version written as the first byte of every buffer.
pub const FORMAT_VERSION: u8 = 1;

/// Nesting limit for values, so a hostile buffer cannot overflow the decoder's stack.
const MAX_DEPTH: usize = 64;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// A JSON-like value: what plugins set on messages and emit in records.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Builds a map value from key/value pairs.
    pub fn map<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as a string slice, when it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up a key, when the value is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.get(key),
            _ => None,
        }
    }

    /// Converts from JSON. Integers that do not fit `i64` become floats.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(a) => {
                Value::List(a.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(o) => Value::Map(
                o.into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON. Non-finite floats become `null` (JSON has no NaN).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}

/// A borrowed value, for setting a field without building an owned [`Value`]: no
/// allocation per key or string, which matters for a step that sets the same small map on
/// every message (`Actions::set_ref`). Decodes to the same value as the equivalent
/// [`Value`] (the bytes are equal when map keys are given sorted and unique); a map may
/// list its keys in any order, and a repeated key keeps its last value (as
/// `BTreeMap::insert` would).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(&'a [ValueRef<'a>]),
    Map(&'a [(&'a str, ValueRef<'a>)]),
    /// An owned value, borrowed.
    Value(&'a Value),
}

impl ValueRef<'_> {
    /// The owned equivalent.
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::List(l) => Value::List(l.iter().map(ValueRef::to_value).collect()),
            ValueRef::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_value()))
                    .collect(),
            ),
            ValueRef::Value(v) => v.clone(),
        }
    }
}

/// An emote occurrence: Twitch emote id and inclusive character positions in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emote {
    pub id: String,
    pub start: u32,
    pub end: u32,
}

/// A chat badge (`subscriber/12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    pub name: String,
    pub version: String,
}

/// An owned chat message: what sources produce, the host carries and sinks store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatMessage {
    /// Twitch message id (`id` tag); unique, the storage key.
    pub id: String,
    /// Event kind: `privmsg`, or a USERNOTICE/CLEARCHAT/CLEARMSG kind.
    pub kind: String,
    /// Channel login without `#`.
    pub channel: String,
    pub channel_id: String,
    /// Sender login.
    pub user: String,
    pub user_id: String,
    pub display_name: String,
    pub text: String,
    /// `tmi-sent-ts`: milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub badges: Vec<Badge>,
    pub emotes: Vec<Emote>,
    /// Fields set by the source and by plugin steps, by name.
    pub fields: BTreeMap<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Writing

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    put_bytes(out, s.as_bytes());
}

/// Appends `bytes`; short slices (map keys, labels, field names) in fixed-size pieces.
///
/// A copy of a length unknown at compile time is a `memcpy` call, and in a WASM guest
/// built with bulk memory it is a `memory.copy` that wasmtime runs as a libcall, costing
/// far more than the few bytes it moves; fixed-size pieces compile to plain loads and
/// stores.
#[inline]
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() > 32 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let mut rest = bytes;
    while let Some((piece, tail)) = rest.split_first_chunk::<8>() {
        out.extend_from_slice(piece);
        rest = tail;
    }
    if let Some((piece, tail)) = rest.split_first_chunk::<4>() {
        out.extend_from_slice(piece);
        rest = tail;
    }
    if let Some((piece, tail)) = rest.split_first_chunk::<2>() {
        out.extend_from_slice(piece);
        rest = tail;
    }
    if let Some(&b) = rest.first() {
        out.push(b);
    }
}

/// Appends one encoded value.
pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Int(i) => {
            out.push(3);
            put_zigzag(out, *i);
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(5);
            put_str(out, s);
        }
        Value::List(l) => {
            out.push(6);
            put_varint(out, l.len() as u64);
            for item in l {
                put_value(out, item);
            }
        }
        Value::Map(m) => {
            out.push(7);
            put_varint(out, m.len() as u64);
            for (k, item) in m {
                put_str(out, k);
                put_value(out, item);
            }
        }
    }
}

/// Appends one encoded borrowed value (decoding to what [`put_value`] of its owned form
/// decodes to).
pub fn put_value_ref(out: &mut Vec<u8>, v: &ValueRef<'_>) {
    match *v {
        ValueRef::Null => out.push(0),
        ValueRef::Bool(false) => out.push(1),
        ValueRef::Bool(true) => out.push(2),
        ValueRef::Int(i) => {
            out.push(3);
            put_zigzag(out, i);
        }
        ValueRef::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        ValueRef::Str(s) => {
            out.push(5);
            put_str(out, s);
        }
        ValueRef::List(l) => {
            out.push(6);
            put_varint(out, l.len() as u64);
            for item in l {
                put_value_ref(out, item);
            }
        }
        ValueRef::Map(m) => {
            out.push(7);
            put_varint(out, m.len() as u64);
            for (k, item) in m {
                put_str(out, k);
                put_value_ref(out, item);
            }
        }
        ValueRef::Value(v) => put_value(out, v),
    }
}

/// The part of a message body that no plugin changes (everything before `fields`).
///
/// The host encodes it once per message and reuses it for every step, so a chain of N steps
/// pays for re-encoding only the fields.
pub fn encode_header(m: &ChatMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header_into(&mut out, m);
    out
}

/// Appends the encoded header of `m` (see [`encode_header`]) to `out`.
pub fn encode_header_into(out: &mut Vec<u8>, m: &ChatMessage) {
    let core = [
        &m.id,
        &m.kind,
        &m.channel,
        &m.channel_id,
        &m.user,
        &m.user_id,
        &m.display_name,
        &m.text,
    ];
    let strs_len: usize = core.iter().map(|s| s.len()).sum::<usize>()
        + m.badges
            .iter()
            .map(|b| b.name.len() + b.version.len())
            .sum::<usize>()
        + m.emotes.iter().map(|e| e.id.len()).sum::<usize>();
    out.reserve(strs_len + 32 + 4 * (m.badges.len() + m.emotes.len()));
    put_varint(out, strs_len as u64);
    for s in core {
        out.extend_from_slice(s.as_bytes());
    }
    for b in &m.badges {
        out.extend_from_slice(b.name.as_bytes());
        out.extend_from_slice(b.version.as_bytes());
    }
    for e in &m.emotes {
        out.extend_from_slice(e.id.as_bytes());
    }
    for s in core {
        put_varint(out, s.len() as u64);
    }
    put_zigzag(out, m.ts_ms);
    put_varint(out, m.badges.len() as u64);
    for b in &m.badges {
        put_varint(out, b.name.len() as u64);
        put_varint(out, b.version.len() as u64);
    }
    put_varint(out, m.emotes.len() as u64);
    for e in &m.emotes {
        put_varint(out, e.id.len() as u64);
        put_varint(out, e.start.into());
        put_varint(out, e.end.into());
    }
}

/// Builds a batch buffer message by message.
pub struct BatchWriter {
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl BatchWriter {
    /// Starts a batch of `count` messages; exactly that many must be pushed.
    pub fn new(count: usize, reuse: Vec<u8>) -> Self {
        let mut buf = reuse;
        buf.clear();
        buf.push(FORMAT_VERSION);
        put_varint(&mut buf, count as u64);
        BatchWriter {
            buf,
            scratch: Vec::new(),
        }
    }

    /// Appends a message from its pre-encoded header and its current fields.
    pub fn push(&mut self, header: &[u8], fields: &BTreeMap<String, Value>) {
        self.scratch.clear();
        put_fields(&mut self.scratch, fields);
        put_varint(&mut self.buf, (header.len() + self.scratch.len()) as u64);
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(&self.scratch);
    }

    /// Appends a whole message, encoding its header on the way (no header buffer per
    /// message: the body is built in a scratch buffer reused across messages).
    pub fn push_message(&mut self, m: &ChatMessage) {
        self.scratch.clear();
        encode_header_into(&mut self.scratch, m);
        put_fields(&mut self.scratch, &m.fields);
        put_varint(&mut self.buf, self.scratch.len() as u64);
        self.buf.extend_from_slice(&self.scratch);
    }

    /// The finished buffer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn put_fields(out: &mut Vec<u8>, fields: &BTreeMap<String, Value>) {
    put_varint(out, fields.len() as u64);
    for (k, v) in fields {
        put_str(out, k);
        put_value(out, v);
    }
}

/// Encodes a whole batch of owned messages.
pub fn encode_batch(msgs: &[ChatMessage]) -> Vec<u8> {
    // A rough size (the core strings plus framing; fields, such as the raw IRC line, are
    // not counted), so the buffer grows less while it is filled.
    let size: usize = msgs
        .iter()
        .map(|m| 48 + m.id.len() + m.channel.len() + m.user.len() * 2 + m.text.len())
        .sum();
    let mut w = BatchWriter::new(msgs.len(), Vec::with_capacity(size + 16));
    for m in msgs {
        w.push_message(m);
    }
    w.finish()
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A bounds-checked cursor over a buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            reason,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(self.err("unexpected end of buffer"));
        };
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        // Fast path: most lengths and counts fit in one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    /// Varints of two bytes and more: message and string-region lengths and the timestamp,
    /// so several per message (not cold). One pass over the bytes, no per-byte `Result`.
    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let mut v: u64 = 0;
        for (i, &b) in rest.iter().take(10).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        if rest.len() < 10 {
            self.pos = self.buf.len();
            return Err(self.err("unexpected end of buffer"));
        }
        self.pos += 10;
        Err(self.err("varint longer than 10 bytes"))
    }

    /// A length or count, checked against what the buffer could possibly hold so a hostile
    /// count cannot make the reader pre-allocate gigabytes.
    #[inline]
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let v = self.varint()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if v > remaining {
            return Err(self.err("length exceeds buffer"));
        }
        Ok(v as usize)
    }

    #[inline]
    pub fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(self.err("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(self.err("unexpected end of buffer"))?;
        self.pos = end;
        Ok(s)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.len()?;
        let start = self.pos;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            offset: start,
            reason: "string is not valid UTF-8",
        })
    }

    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn f64_le(&mut self) -> Result<f64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("value nested too deeply"));
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(self.zigzag()?),
            4 => Value::Float(self.f64_le()?),
            5 => Value::Str(self.str()?.to_owned()),
            6 => {
                let n = self.len()?;
                let mut l = Vec::with_capacity(n);
                for _ in 0..n {
                    l.push(self.value_at(depth + 1)?);
                }
                Value::List(l)
            }
            7 => {
                let n = self.len()?;
                let mut m = BTreeMap::new();
                for _ in 0..n {
                    let k = self.str()?.to_owned();
                    m.insert(k, self.value_at(depth + 1)?);
                }
                Value::Map(m)
            }
            _ => return Err(self.err("unknown value tag")),
        })
    }

    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("value nested too deeply"));
        }
        match self.u8()? {
            0..=2 => {}
            3 => {
                self.varint()?;
            }
            4 => {
                self.bytes(8)?;
            }
            5 => {
                self.str()?;
            }
            6 => {
                for _ in 0..self.len()? {
                    self.skip_value(depth + 1)?;
                }
            }
            7 => {
                for _ in 0..self.len()? {
                    self.str()?;
                    self.skip_value(depth + 1)?;
                }
            }
            _ => return Err(self.err("unknown value tag")),
        }
        Ok(())
    }
}

/// A message borrowed from a batch buffer: the zero-copy view plugins receive.
///
/// Nothing is decoded until a plugin asks: the first accessor call reads the framing of the
/// message's strings, and each accessor checks its own string to be UTF-8; badges, emotes
/// and fields are walked only when their accessors are called. A step that reads nothing
/// (a filter that only looks at `channel()` of some messages, or the no-op reference step)
/// pays only for framing.
///
/// The UTF-8 check is not cached: each call of a string accessor ([`Message::text`],
/// [`Message::id`], ..., [`Message::badges`], [`Message::emotes`]) checks its string again
/// (one pass over its bytes). A plugin that reads a string more than once per message
/// should keep the `&str` the first call returns; it borrows the batch, not the view.
///
/// Accessors never panic. When the host hands over a malformed message (a host bug), they
/// return empty values and the message records a [`DecodeError`]; the SDK turns that into a
/// failed call, so the step's `on_error` policy applies to that message instead of the plugin
/// silently seeing empty strings.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    body: &'a [u8],
    head: OnceCell<Head<'a>>,
    error: OnceCell<DecodeError>,
}

/// The decoded fixed part of a message: the framing of its strings, not yet validated.
#[derive(Debug, Clone, Copy)]
struct Head<'a> {
    /// All of the message's strings, back to back, as raw bytes: each string is checked
    /// to be UTF-8 only when an accessor reads it.
    strs: &'a [u8],
    /// Offset of `strs` in the message body (for error offsets).
    strs_at: usize,
    /// End of each core string in `strs` (each starts where the previous one ends); the
    /// last one is also where the badge strings start.
    ends: [usize; 8],
    ts_ms: i64,
    badges: &'a [u8],
    emotes: &'a [u8],
    /// Where emote ids start in `strs`.
    emote_strs_at: usize,
    /// Encoded fields, validated when read.
    fields: &'a [u8],
}

/// What accessors of a malformed message see.
const EMPTY_HEAD: Head<'static> = Head {
    strs: &[],
    strs_at: 0,
    ends: [0; 8],
    ts_ms: 0,
    badges: &[0],
    emotes: &[0],
    emote_strs_at: 0,
    fields: &[0],
};

/// Takes the next `len` bytes of an already validated string region.
fn take_str<'a>(
    strs: &'a str,
    at: &mut usize,
    len: u64,
    offset: usize,
) -> Result<&'a str, DecodeError> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .ok_or(DecodeError {
            offset,
            reason: "string length overflow",
        })?;
    let s = strs.get(*at..end).ok_or(DecodeError {
        offset,
        reason: "string outside its region or not on a character boundary",
    })?;
    *at = end;
    Ok(s)
}

/// Advances `at` past a string of `len` bytes, which must fit in a region of `size`.
fn skip_str(at: &mut usize, len: u64, size: usize, offset: usize) -> Result<(), DecodeError> {
    match usize::try_from(len).ok().and_then(|l| at.checked_add(l)) {
        Some(end) if end <= size => {
            *at = end;
            Ok(())
        }
        _ => Err(DecodeError {
            offset,
            reason: "string outside its region",
        }),
    }
}

impl<'a> Head<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let n = r.len()?;
        let strs_at = r.pos;
        let strs = r.bytes(n)?;
        let mut at = 0;
        let mut ends = [0; 8];
        for end in &mut ends {
            let len = r.varint()?;
            skip_str(&mut at, len, n, r.pos)?;
            *end = at;
        }
        let ts_ms = r.zigzag()?;
        let start = r.pos;
        for _ in 0..r.len()? {
            let (a, b) = (r.varint()?, r.varint()?);
            skip_str(&mut at, a, n, r.pos)?;
            skip_str(&mut at, b, n, r.pos)?;
        }
        let badges = &body[start..r.pos];
        let emote_strs_at = at;
        let start = r.pos;
        for _ in 0..r.len()? {
            let len = r.varint()?;
            skip_str(&mut at, len, n, r.pos)?;
            u32::try_from(r.varint()?).map_err(|_| r.err("emote position too large"))?;
            u32::try_from(r.varint()?).map_err(|_| r.err("emote position too large"))?;
        }
        let emotes = &body[start..r.pos];
        if at != n {
            return Err(r.err("string region longer than its strings"));
        }
        Ok(Head {
            strs,
            strs_at,
            ends,
            ts_ms,
            badges,
            emotes,
            emote_strs_at,
            fields: &body[r.pos..],
        })
    }
}

impl<'a> Message<'a> {
    /// Wraps one message body; nothing is decoded yet.
    fn new(body: &'a [u8]) -> Self {
        Message {
            body,
            head: OnceCell::new(),
            error: OnceCell::new(),
        }
    }

    fn fail(&self, e: DecodeError) {
        // The first error is the one worth reporting.
        let _ = self.error.set(e);
    }

    fn head(&self) -> &Head<'a> {
        if let Some(h) = self.head.get() {
            return h;
        }
        match Head::decode(self.body) {
            Ok(h) => self.head.get_or_init(|| h),
            Err(e) => {
                self.fail(e);
                self.head.get_or_init(|| EMPTY_HEAD)
            }
        }
    }

    /// `strs[from..to]` of the head, checked to be UTF-8 (a failure is recorded and reads
    /// as ""). The check runs on every call: nothing is cached (see [`Message`]).
    fn str_range(&self, from: usize, to: usize) -> &'a str {
        let h = *self.head();
        match h.strs.get(from..to).map(std::str::from_utf8) {
            Some(Ok(s)) => s,
            _ => {
                self.fail(DecodeError {
                    offset: h.strs_at + from,
                    reason: "string is not valid UTF-8",
                });
                ""
            }
        }
    }

    /// Core string `k` (0 = id ... 7 = text).
    fn core(&self, k: usize) -> &'a str {
        let ends = self.head().ends;
        let from = k.checked_sub(1).and_then(|p| ends.get(p)).copied();
        self.str_range(from.unwrap_or(0), ends.get(k).copied().unwrap_or(0))
    }

    /// Twitch message id (`id` tag); unique.
    pub fn id(&self) -> &'a str {
        self.core(0)
    }
    /// Event kind: `privmsg`, or a USERNOTICE kind such as `sub`, `raid`.
    pub fn kind(&self) -> &'a str {
        self.core(1)
    }
    /// Channel login, without `#`.
    pub fn channel(&self) -> &'a str {
        self.core(2)
    }
    /// Channel's numeric Twitch id (`room-id`).
    pub fn channel_id(&self) -> &'a str {
        self.core(3)
    }
    /// Sender login.
    pub fn user(&self) -> &'a str {
        self.core(4)
    }
    /// Sender's numeric Twitch id.
    pub fn user_id(&self) -> &'a str {
        self.core(5)
    }
    /// Sender's display name.
    pub fn display_name(&self) -> &'a str {
        self.core(6)
    }
    /// The chat text.
    ///
    /// Checked to be UTF-8 on every call (like every string accessor): keep the result
    /// instead of calling this several times per message.
    pub fn text(&self) -> &'a str {
        self.core(7)
    }
    /// Milliseconds since the Unix epoch (`tmi-sent-ts`).
    pub fn ts_ms(&self) -> i64 {
        self.head().ts_ms
    }

    /// Why this message could not be decoded, if an accessor found it malformed.
    pub fn decode_error(&self) -> Option<&DecodeError> {
        self.error.get()
    }

    /// Badges as `(name, version)` pairs (their strings are checked to be UTF-8 here).
    ///
    /// When a badge string is not valid UTF-8 or does not start and end on a character
    /// boundary, none is returned and the message records a [`DecodeError`] (so the call
    /// fails), like the core string accessors.
    pub fn badges(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let h = *self.head();
        let mut r = Reader::new(h.badges);
        let strs = self.str_range(h.ends[7], h.emote_strs_at);
        let mut at = 0;
        let mut n = r.len().unwrap_or(0);
        // The iterator cannot record an error (it does not borrow `self`), so check every
        // boundary here first: nothing may be dropped silently.
        let checked = (|| {
            let mut r = Reader::new(h.badges);
            let mut at = 0;
            for _ in 0..r.len()? {
                let (a, b) = (r.varint()?, r.varint()?);
                let offset = h.strs_at + h.ends[7] + at;
                take_str(strs, &mut at, a, offset)?;
                let offset = h.strs_at + h.ends[7] + at;
                take_str(strs, &mut at, b, offset)?;
            }
            Ok(())
        })();
        if let Err(e) = checked {
            self.fail(DecodeError {
                reason: "badge string not on a character boundary",
                ..e
            });
            n = 0;
        }
        (0..n).map_while(move |_| {
            let (a, b) = (r.varint().ok()?, r.varint().ok()?);
            Some((
                take_str(strs, &mut at, a, 0).ok()?,
                take_str(strs, &mut at, b, 0).ok()?,
            ))
        })
    }

    /// Emotes as `(id, start, end)`, character positions inclusive (the ids are checked
    /// to be UTF-8 here; [`Message::emote_positions`] skips them).
    ///
    /// When an id is not valid UTF-8 or does not start and end on a character boundary,
    /// none is returned and the message records a [`DecodeError`] (so the call fails),
    /// like the core string accessors.
    pub fn emotes(&self) -> impl Iterator<Item = (&'a str, u32, u32)> + 'a {
        let h = *self.head();
        let mut r = Reader::new(h.emotes);
        let strs = self.str_range(h.emote_strs_at, h.strs.len());
        let mut at = 0;
        let mut n = r.len().unwrap_or(0);
        // As in `badges`: check every boundary before iterating.
        let checked = (|| {
            let mut r = Reader::new(h.emotes);
            let mut at = 0;
            for _ in 0..r.len()? {
                let len = r.varint()?;
                let offset = h.strs_at + h.emote_strs_at + at;
                take_str(strs, &mut at, len, offset)?;
                r.varint()?;
                r.varint()?;
            }
            Ok(())
        })();
        if let Err(e) = checked {
            self.fail(DecodeError {
                reason: "emote id not on a character boundary",
                ..e
            });
            n = 0;
        }
        (0..n).map_while(move |_| {
            let len = r.varint().ok()?;
            let id = take_str(strs, &mut at, len, 0).ok()?;
            let s = u32::try_from(r.varint().ok()?).ok()?;
            let e = u32::try_from(r.varint().ok()?).ok()?;
            Some((id, s, e))
        })
    }

    /// Emote positions as `(start, end)`, character positions inclusive: what
    /// [`Message::emotes`] gives without the ids, which are then not read at all.
    pub fn emote_positions(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        let mut r = Reader::new(self.head().emotes);
        let n = r.len().unwrap_or(0);
        (0..n).map_while(move |_| {
            r.varint().ok()?;
            let s = u32::try_from(r.varint().ok()?).ok()?;
            let e = u32::try_from(r.varint().ok()?).ok()?;
            Some((s, e))
        })
    }

    /// A field an earlier step (or the source) set, decoded.
    pub fn field(&self, name: &str) -> Option<Value> {
        let found = (|| {
            let mut r = Reader::new(self.head().fields);
            for _ in 0..r.len()? {
                if r.str()? == name {
                    return r.value().map(Some);
                }
                r.skip_value(0)?;
            }
            Ok(None)
        })();
        found.unwrap_or_else(|e| {
            self.fail(e);
            None
        })
    }

    /// All fields, decoded.
    pub fn fields(&self) -> Vec<(&'a str, Value)> {
        let all = (|| {
            let mut r = Reader::new(self.head().fields);
            let n = r.len()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((r.str()?, r.value()?));
            }
            if !r.is_empty() {
                return Err(r.err("trailing bytes after message"));
            }
            Ok(v)
        })();
        all.unwrap_or_else(|e| {
            self.fail(e);
            Vec::new()
        })
    }

    /// Copies the view into an owned message.
    pub fn to_owned_message(&self) -> ChatMessage {
        ChatMessage {
            id: self.id().into(),
            kind: self.kind().into(),
            channel: self.channel().into(),
            channel_id: self.channel_id().into(),
            user: self.user().into(),
            user_id: self.user_id().into(),
            display_name: self.display_name().into(),
            text: self.text().into(),
            ts_ms: self.ts_ms(),
            badges: self
                .badges()
                .map(|(n, v)| Badge {
                    name: n.into(),
                    version: v.into(),
                })
                .collect(),
            emotes: self
                .emotes()
                .map(|(id, start, end)| Emote {
                    id: id.into(),
                    start,
                    end,
                })
                .collect(),
            fields: self
                .fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }
}

/// Splits a batch buffer into (undecoded) messages: only the framing is checked here.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != FORMAT_VERSION {
        return Err(DecodeError {
            offset: 0,
            reason: "unsupported batch format version",
        });
    }
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.len()?;
        out.push(Message::new(r.bytes(len)?));
    }
    if !r.is_empty() {
        return Err(r.err("trailing bytes after batch"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Actions

/// An alert a plugin raises. The host routes it by `topic` to the sinks in `[alerts]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alert {
    /// Alert topic, mapped to delivery sinks in the pipeline's `[alerts]` table.
    pub topic: String,
    /// `info`, `warning`, `critical`, ...
    pub severity: String,
    /// One-line summary (the SNS subject).
    pub title: String,
    /// Human-readable body.
    pub body: String,
    /// Identifies the alert occurrence; the host delivers each key at most once.
    pub dedupe_key: String,
    /// Key/value attributes subscribers can filter on.
    pub attributes: Vec<(String, String)>,
}

/// What a plugin asks the host to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set (or replace) a field on the message.
    Set { name: String, value: Value },
    /// Drop the message: later steps and the sink never see it.
    Drop { reason: String },
    /// Raise an alert.
    Alert(Alert),
    /// Emit a record (for example a per-window aggregate) into a named table.
    Record {
        table: String,
        key: String,
        value: Value,
    },
    /// Report a metric sample.
    Metric {
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    },
}

pub(crate) fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_varint(out, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
}

/// Appends one encoded action.
pub fn put_action(out: &mut Vec<u8>, a: &Action) {
    match a {
        Action::Set { name, value } => {
            out.push(0);
            put_str(out, name);
            put_value(out, value);
        }
        Action::Drop { reason } => {
            out.push(1);
            put_str(out, reason);
        }
        Action::Alert(al) => {
            out.push(2);
            for s in [&al.topic, &al.severity, &al.title, &al.body, &al.dedupe_key] {
                put_str(out, s);
            }
            put_pairs(out, &al.attributes);
        }
        Action::Record { table, key, value } => {
            out.push(3);
            put_str(out, table);
            put_str(out, key);
            put_value(out, value);
        }
        Action::Metric {
            name,
            value,
            labels,
        } => {
            out.push(4);
            put_str(out, name);
            out.extend_from_slice(&value.to_le_bytes());
            put_pairs(out, labels);
        }
    }
}

/// Writes the output buffer: one action list per message, in order.
pub struct OutputWriter {
    buf: Vec<u8>,
    count_at: Option<usize>,
    count: u32,
}

impl OutputWriter {
    pub fn new(messages: usize) -> Self {
        let mut buf = Vec::with_capacity(8 + messages * 8);
        buf.push(FORMAT_VERSION);
        put_varint(&mut buf, messages as u64);
        OutputWriter {
            buf,
            count_at: None,
            count: 0,
        }
    }

    fn close_message(&mut self) {
        if let Some(at) = self.count_at.take() {
            self.buf[at..at + 4].copy_from_slice(&self.count.to_le_bytes());
        }
    }

    /// Starts the action list of the next message.
    pub fn begin_message(&mut self) {
        self.close_message();
        self.count_at = Some(self.buf.len());
        self.count = 0;
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Appends an action to the current message's list.
    pub fn action(&mut self, a: &Action) {
        put_action(&mut self.buf, a);
        self.count += 1;
    }

    /// Appends `count` actions already encoded (each as [`put_action`] writes it).
    pub fn encoded(&mut self, count: u32, actions: &[u8]) {
        self.buf.extend_from_slice(actions);
        self.count += count;
    }

    /// Makes room for `bytes` more bytes of output.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.close_message();
        self.buf
    }
}

fn pairs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.len()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.str()?.to_owned(), r.str()?.to_owned()));
    }
    Ok(v)
}

/// Decodes a plugin's output: one action list per message. `expected` is the batch size;
/// any other count is an error, so a plugin cannot silently lose or invent messages.
pub fn decode_output(buf: &[u8], expected: usize) -> Result<Vec<Vec<Action>>, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != FORMAT_VERSION {
        return Err(DecodeError {
            offset: 0,
            reason: "unsupported output format version",
        });
    }
    let n = r.len()?;
    if n != expected {
        return Err(DecodeError {
            offset: 1,
            reason: "output has a different number of action lists than the batch had messages",
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let count = r.u32_le()? as usize;
        if count > buf.len() {
            return Err(r.err("action count exceeds buffer"));
        }
        let mut actions = Vec::with_capacity(count);
        for _ in 0..count {
            actions.push(action(&mut r)?);
        }
        out.push(actions);
    }
    if !r.is_empty() {
        return Err(r.err("trailing bytes after output"));
    }
    Ok(out)
}

/// Decodes `count` actions encoded back to back (one message's list without its count).
pub fn decode_actions(buf: &[u8], count: usize) -> Result<Vec<Action>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut actions = Vec::with_capacity(count.min(buf.len()));
    for _ in 0..count {
        actions.push(action(&mut r)?);
    }
    if !r.is_empty() {
        return Err(r.err("trailing bytes after actions"));
    }
    Ok(actions)
}

fn action(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
    Ok(match r.u8()? {
        0 => Action::Set {
            name: r.str()?.to_owned(),
            value: r.value()?,
        },
        1 => Action::Drop {
            reason: r.str()?.to_owned(),
        },
        2 => Action::Alert(Alert {
            topic: r.str()?.to_owned(),
            severity: r.str()?.to_owned(),
            title: r.str()?.to_owned(),
            body: r.str()?.to_owned(),
            dedupe_key: r.str()?.to_owned(),
            attributes: pairs(r)?,
        }),
        3 => Action::Record {
            table: r.str()?.to_owned(),
            key: r.str()?.to_owned(),
            value: r.value()?,
        },
        4 => Action::Metric {
            name: r.str()?.to_owned(),
            value: r.f64_le()?,
            labels: pairs(r)?,
        },
        _ => return Err(r.err("unknown action tag")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChatMessage {
        ChatMessage {
            id: "a1".into(),
            kind: "privmsg".into(),
            channel: "chan".into(),
            channel_id: "42".into(),
            user: "bob".into(),
            user_id: "7".into(),
            display_name: "Bob".into(),
            text: "hello Kappa ünïcode".into(),
            ts_ms: 1_700_000_000_123,
            badges: vec![Badge {
                name: "subscriber".into(),
                version: "12".into(),
            }],
            emotes: vec![Emote {
                id: "25".into(),
                start: 6,
                end: 10,
            }],
            fields: [(
                "sentiment".to_string(),
                Value::map([("compound", Value::Float(0.5)), ("n", Value::Int(-3))]),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn batch_round_trips() {
        let msgs = vec![sample(), ChatMessage::default()];
        let buf = encode_batch(&msgs);
        let views = decode_batch(&buf).unwrap();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].to_owned_message(), msgs[0]);
        assert_eq!(views[1].to_owned_message(), msgs[1]);
        assert_eq!(
            views[0].field("sentiment").unwrap().get("n"),
            Some(&Value::Int(-3))
        );
        assert_eq!(views[0].field("missing"), None);
    }

    #[test]
    fn malformed_message_is_reported_not_panicked() {
        let msgs = vec![sample()];
        let mut buf = encode_batch(&msgs);
        // version, count, body_len, strs_len, then the first string byte ("a" of the id):
        // make it an invalid UTF-8 lead byte.
        buf[4] = 0xff;
        let views = decode_batch(&buf).unwrap();
        assert!(
            views[0].decode_error().is_none(),
            "framing alone decodes nothing"
        );
        // Only the strings a plugin reads are checked: the text is fine...
        assert_eq!(views[0].text(), "hello Kappa ünïcode");
        assert_eq!(views[0].channel(), "chan");
        assert_eq!(views[0].emote_positions().collect::<Vec<_>>(), [(6, 10)]);
        assert!(views[0].decode_error().is_none());
        // ...the id is not.
        assert_eq!(views[0].id(), "");
        assert_eq!(
            views[0].decode_error().map(|e| (e.reason, e.offset)),
            Some(("string is not valid UTF-8", 1))
        );
        // A string cut inside a character fails too: give the id "é" one byte less and the
        // kind one more, so each holds half of the "é".
        let mut m = sample();
        m.id = "é".into();
        (m.badges, m.emotes, m.fields) = (vec![], vec![], BTreeMap::new());
        let mut buf = encode_batch(&[m]);
        let strs_len = usize::from(buf[3]);
        assert!(buf[2] < 0x80 && buf[3] < 0x80, "one-byte lengths");
        assert_eq!((buf[4 + strs_len], buf[5 + strs_len]), (2, 7));
        (buf[4 + strs_len], buf[5 + strs_len]) = (1, 8);
        let views = decode_batch(&buf).unwrap();
        assert_eq!(views[0].text(), "hello Kappa ünïcode");
        assert!(views[0].decode_error().is_none());
        assert_eq!((views[0].id(), views[0].kind()), ("", ""));
        assert!(views[0].decode_error().is_some());
    }

    #[test]
    fn badge_and_emote_strings_cut_inside_a_character_fail() {
        // One badge ("é", "1") or two emote ids ("é", "x"), no fields and a zero timestamp,
        // so every length is one byte and the badge list starts right after the core
        // string lengths and the timestamp.
        let encode = |badge: bool| {
            let mut m = sample();
            m.ts_ms = 0;
            m.fields = BTreeMap::new();
            if badge {
                m.badges[0] = Badge {
                    name: "é".into(),
                    version: "1".into(),
                };
                m.emotes.clear();
            } else {
                m.badges.clear();
                m.emotes[0].id = "é".into();
                m.emotes.push(Emote {
                    id: "x".into(),
                    start: 0,
                    end: 4,
                });
            }
            let buf = encode_batch(&[m]);
            assert!(buf[2] < 0x80 && buf[3] < 0x80, "one-byte lengths");
            // version, count, body_len, strs_len, strs, 8 core lengths, ts: the badge count.
            let badges_at = 4 + usize::from(buf[3]) + 8 + 1;
            (buf, badges_at)
        };

        // The badge name "é" one byte less and its version one more: the region ("é1") is
        // valid UTF-8, but each string holds half of the "é".
        let (mut buf, at) = encode(true);
        assert_eq!((buf[at], buf[at + 1], buf[at + 2]), (1, 2, 1));
        (buf[at + 1], buf[at + 2]) = (1, 2);
        let views = decode_batch(&buf).unwrap();
        assert_eq!(views[0].text(), "hello Kappa ünïcode");
        assert!(views[0].decode_error().is_none());
        assert_eq!(views[0].badges().count(), 0);
        assert_eq!(
            views[0].decode_error().map(|e| e.reason),
            Some("badge string not on a character boundary")
        );

        // The same for emote ids "é" and "x" made 1 and 2 bytes long. The badge count (0),
        // the emote count (2), then (length, start, end) per emote.
        let (mut buf, at) = encode(false);
        assert_eq!(
            (buf[at], buf[at + 1], buf[at + 2], buf[at + 5]),
            (0, 2, 2, 1)
        );
        (buf[at + 2], buf[at + 5]) = (1, 2);
        let views = decode_batch(&buf).unwrap();
        assert!(views[0].emote_positions().eq([(6, 10), (0, 4)]));
        assert!(views[0].decode_error().is_none(), "positions skip the ids");
        assert_eq!(views[0].emotes().count(), 0);
        assert_eq!(
            views[0].decode_error().map(|e| e.reason),
            Some("emote id not on a character boundary")
        );
    }

    #[test]
    fn borrowed_values_encode_like_owned_ones() {
        let owned = Value::Bool(false);
        let inner = [ValueRef::Int(-3), ValueRef::Str("é"), ValueRef::Null];
        let v = ValueRef::Map(&[
            ("b", ValueRef::Float(0.25)),
            ("a", ValueRef::List(&inner)),
            ("c", ValueRef::Value(&owned)),
            ("d", ValueRef::Bool(true)),
        ]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        put_value_ref(&mut a, &v);
        put_value(&mut b, &v.to_value());
        // Keys in the order given, so compare decoded values (maps are sorted on decode).
        assert_eq!(Reader::new(&a).value().unwrap(), v.to_value());
        assert_eq!(Reader::new(&b).value().unwrap(), v.to_value());
        // A repeated key keeps its last value, as the map it decodes into would.
        let mut c = Vec::new();
        put_value_ref(
            &mut c,
            &ValueRef::Map(&[("k", ValueRef::Int(1)), ("k", ValueRef::Int(2))]),
        );
        assert_eq!(
            Reader::new(&c).value().unwrap(),
            Value::map([("k", Value::Int(2))])
        );
    }

    #[test]
    fn push_message_writes_what_push_with_a_header_writes() {
        let mut m = sample();
        m.fields
            .insert("raw".into(), Value::Str("@a=b :x PRIVMSG #c :hi".into()));
        let mut w1 = BatchWriter::new(1, Vec::new());
        w1.push(&encode_header(&m), &m.fields);
        let mut w2 = BatchWriter::new(1, Vec::new());
        w2.push_message(&m);
        assert_eq!(w1.finish(), w2.finish());
    }

    #[test]
    fn output_round_trips() {
        let mut w = OutputWriter::new(2);
        w.begin_message();
        let set = Action::Set {
            name: "x".into(),
            value: Value::List(vec![Value::Null, Value::Bool(true), "s".into()]),
        };
        w.action(&set);
        w.begin_message();
        let al = Action::Alert(Alert {
            topic: "t".into(),
            attributes: vec![("k".into(), "v".into())],
            ..Alert::default()
        });
        w.action(&al);
        let m = Action::Metric {
            name: "m".into(),
            value: 1.5,
            labels: vec![],
        };
        w.action(&m);
        let buf = w.finish();
        assert_eq!(
            decode_output(&buf, 2).unwrap(),
            vec![vec![set], vec![al, m]]
        );
        assert!(decode_output(&buf, 3).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = encode_batch(&[sample(), sample()]);
        // Every truncation and every single-byte corruption must decode or fail cleanly.
        for cut in 0..good.len() {
            let _ = decode_batch(&good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                if let Ok(v) = decode_batch(&bad) {
                    for m in v {
                        let _ = m.to_owned_message();
                        let _ = m.field("sentiment");
                    }
                }
            }
        }
        assert!(decode_output(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f], 1).is_err());
        // version, one list, one action: set "" to a list nested 200 deep.
        let mut deep = vec![1u8, 1, 1, 0, 0, 0, 0, 0];
        deep.extend(std::iter::repeat_n(6u8, 200).flat_map(|t| [t, 1]));
        assert!(decode_output(&deep, 1).is_err());
    }
}
