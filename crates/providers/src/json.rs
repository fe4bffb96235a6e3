//! JSON pieces the chat model borrows from a caller's body rather than copying: translating a
//! large agent request (tens of KB of prompts, tool descriptions and schemas) is then mostly
//! copying bytes, where decoding every string into a `Value` and escaping it again cost
//! ~3/4 of the time (issue #21).
//!
//! What a borrowed piece leaves unchecked (a `RawValue` is only scanned, not parsed), the
//! decoders check with [`Strict`] and [`Str::json`], so a body is accepted or refused exactly
//! as a `serde_json::Value` parse would.

use std::{borrow::Cow, fmt};

use serde::{
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    Serialize, Serializer,
};
use serde_json::{value::RawValue, Value};

/// Text in the chat model: either a JSON string literal as it was sent (quotes and escapes
/// included), which a JSON encoder copies verbatim, or plain text.
#[derive(Clone)]
pub enum Str<'a> {
    /// A JSON string literal as it was sent, quotes included: valid (checked by
    /// [`Str::json`] or [`Str::literal`]: surrogate escapes paired).
    Json(&'a str),
    /// Plain text.
    Text(Cow<'a, str>),
}

impl<'a> Str<'a> {
    /// `raw` as text when it is a JSON string literal a `serde_json::Value` parse accepts;
    /// `Err(raw)` when it is another JSON value. A literal the parse would refuse (a lone
    /// surrogate escape) is an error.
    pub fn json(raw: &'a RawValue) -> Result<Result<Self, &'a RawValue>, serde_json::Error> {
        match Self::literal(raw.get())? {
            Some(s) => Ok(Ok(s)),
            None => Ok(Err(raw)),
        }
    }

    /// `s` as text when it is a JSON string literal a `serde_json::Value` parse accepts,
    /// `None` when it is another JSON value; `s` must be JSON serde_json has scanned (a
    /// `RawValue`'s text, or a piece of a body [`crate::split`] accepted).
    pub(crate) fn literal(s: &'a str) -> Result<Option<Self>, serde_json::Error> {
        if !s.starts_with('"') {
            return Ok(None);
        }
        // Scanning a RawValue does not check `\u` escapes; decoding does. Only literals that
        // have one pay for it.
        static UNICODE_ESCAPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));
        if UNICODE_ESCAPE.find(s.as_bytes()).is_some() && !scanned_is_strict(s, 0) {
            serde_json::from_str::<String>(s)?;
        }
        Ok(Some(Str::Json(s)))
    }

    /// The text. Borrowed unless a JSON literal has escapes to undo.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            Str::Text(t) => Cow::Borrowed(t),
            // `Str::json` checked that the literal decodes.
            Str::Json(s) => literal_text(s).unwrap_or(Cow::Borrowed("")),
        }
    }

    /// About how many bytes it takes as JSON.
    pub fn json_len(&self) -> usize {
        match self {
            Str::Json(raw) => raw.len(),
            Str::Text(t) => t.len().saturating_add(2),
        }
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        match self {
            Str::Text(t) => t.is_empty(),
            Str::Json(raw) => *raw == "\"\"",
        }
    }

    /// Whether the text is empty or only whitespace (`str::trim`'s).
    pub fn is_blank(&self) -> bool {
        if let Str::Json(raw) = self {
            let s = raw;
            let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or_default();
            // Past leading spaces and `\n`, `\r`, `\t` escapes, a visible ASCII character other
            // than an escape's backslash is in the text as it is, and is not whitespace: only
            // literals that go on otherwise are decoded.
            let b = inner.as_bytes();
            let mut i = 0;
            loop {
                match (b.get(i), b.get(i.saturating_add(1))) {
                    (None, _) => return true,
                    (Some(b' '), _) => i = i.saturating_add(1),
                    (Some(b'\\'), Some(b'n' | b'r' | b't')) => i = i.saturating_add(2),
                    (Some(c), _) if c.is_ascii_graphic() && *c != b'\\' => return false,
                    _ => break,
                }
            }
        }
        self.as_str().trim().is_empty()
    }

    /// Whether the text starts with `prefix`, which must be plain ASCII without quotes or
    /// backslashes (it is then spelled the same inside a literal, unless escaped).
    pub fn starts_with(&self, prefix: &str) -> bool {
        match self {
            Str::Text(t) => t.starts_with(prefix),
            Str::Json(raw) if !raw.contains('\\') => {
                raw.get(1..).is_some_and(|s| s.starts_with(prefix))
            }
            Str::Json(_) => self.as_str().starts_with(prefix),
        }
    }

    /// Whether the text, past JSON whitespace, starts with `{` or `[` (so that it might parse
    /// as a JSON object or array); `None` when that cannot be told cheaply (the text is all
    /// whitespace, or a literal spells its first character with an escape).
    pub fn opens_container(&self) -> Option<bool> {
        let first = match self {
            Str::Text(t) => t
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .bytes()
                .next()?,
            Str::Json(s) => {
                let b = s
                    .get(1..s.len().saturating_sub(1))
                    .unwrap_or_default()
                    .as_bytes();
                let mut i = 0;
                loop {
                    match (b.get(i), b.get(i.saturating_add(1))) {
                        (None, _) => return None,
                        (Some(b' '), _) => i = i.saturating_add(1),
                        (Some(b'\\'), Some(b'n' | b'r' | b't')) => i = i.saturating_add(2),
                        (Some(b'\\'), _) => return None,
                        (Some(c), _) => break *c,
                    }
                }
            }
        };
        Some(matches!(first, b'{' | b'['))
    }

    /// Passes the inside of the JSON string literal for this text (what goes between the
    /// quotes) to `push`.
    fn push_inner(&self, push: &mut impl FnMut(&str)) {
        fn inner(lit: &str) -> &str {
            lit.get(1..lit.len().saturating_sub(1)).unwrap_or_default()
        }
        match self {
            Str::Json(raw) => push(inner(raw)),
            // Writing a `str` cannot fail.
            Str::Text(t) => push(inner(
                &serde_json::to_string(t.as_ref()).unwrap_or_default(),
            )),
        }
    }

    /// Appends the text as a JSON string: a literal as it is, plain text escaped.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Str::Json(raw) => out.extend_from_slice(raw.as_bytes()),
            Str::Text(t) => write_str(out, t),
        }
    }

    /// The owned equivalent, for a model that must outlive the body it borrowed from.
    pub fn into_owned(self) -> Str<'static> {
        Str::Text(Cow::Owned(self.as_str().into_owned()))
    }
}

impl Default for Str<'_> {
    fn default() -> Self {
        Str::Text(Cow::Borrowed(""))
    }
}

impl From<String> for Str<'_> {
    fn from(s: String) -> Self {
        Str::Text(Cow::Owned(s))
    }
}

impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str::Text(Cow::Borrowed(s))
    }
}

impl<'a> From<Cow<'a, str>> for Str<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        Str::Text(s)
    }
}

impl From<&Str<'_>> for Value {
    fn from(s: &Str<'_>) -> Self {
        Value::String(s.as_str().into_owned())
    }
}

impl From<Str<'_>> for Value {
    fn from(s: Str<'_>) -> Self {
        match s {
            Str::Text(t) => Value::String(t.into_owned()),
            Str::Json(_) => Value::from(&s),
        }
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<str> for Str<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_str(), f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// A JSON literal goes out as it came in (serde_json's writer copies a `RawValue`); into a
/// `Value` it is decoded, so Value-building encoders see plain text either way.
impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Str::Json(raw) => RawLiteral(raw).serialize(s),
            Str::Text(t) => s.serialize_str(t),
        }
    }
}

impl fmt::Debug for Joined<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.parts).finish()
    }
}

/// Texts joined by `sep` as one JSON string, each piece's literal copied as it is: escaping
/// is per character, so escaped pieces concatenate.
pub struct Joined<'s, 'a> {
    parts: Vec<&'s Str<'a>>,
    sep: &'static str,
    prefix: &'static str,
}

impl<'s, 'a> Joined<'s, 'a> {
    /// `parts` joined by `sep`, after `prefix`; both spelled as inside a JSON string (`\\n`
    /// for a newline).
    pub fn new(parts: Vec<&'s Str<'a>>, sep: &'static str, prefix: &'static str) -> Self {
        Joined { parts, sep, prefix }
    }
    fn literal(&self) -> String {
        let len: usize = self
            .parts
            .iter()
            .map(|p| p.json_len().saturating_add(self.sep.len()))
            .fold(self.prefix.len() + 2, usize::saturating_add);
        let mut out = String::with_capacity(len);
        self.pieces(|piece| out.push_str(piece));
        out
    }

    /// The joined literal, quotes included, piece by piece to `push`.
    fn pieces(&self, mut push: impl FnMut(&str)) {
        push("\"");
        push(self.prefix);
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                push(self.sep);
            }
            p.push_inner(&mut push);
        }
        push("\"");
    }
}

impl Joined<'_, '_> {
    /// Appends the joined text as one JSON string, as its `Serialize` writes it.
    fn write(&self, out: &mut Vec<u8>) {
        if let ([one], "") = (&self.parts[..], self.prefix) {
            return one.write(out);
        }
        // The pieces are literals already; only the separator and prefix (constants) could
        // spoil the literal, and each is checked on its own, which costs no scan of the text.
        if !(joinable(self.sep) && joinable(self.prefix)) {
            // As the `Serialize` impl does: a wrong constant fails, and nothing is written.
            return;
        }
        self.pieces(|piece| out.extend_from_slice(piece.as_bytes()));
    }
}

impl Serialize for Joined<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let ([one], "") = (&self.parts[..], self.prefix) {
            return one.serialize(s);
        }
        // The pieces are literals already; only a wrong `sep` or `prefix` could spoil the
        // literal, and it must fail, not corrupt: each is checked on its own (checking the
        // whole literal, as this once did, scanned every text again).
        if !(joinable(self.sep) && joinable(self.prefix)) {
            return Err(serde::ser::Error::custom(
                "a separator that is not the inside of a JSON string",
            ));
        }
        RawLiteral(&self.literal()).serialize(s)
    }
}

/// Whether `piece` is the inside of a JSON string literal as it is spelled (escapes whole).
fn joinable(piece: &str) -> bool {
    let lit = format!("\"{piece}\"");
    serde_json::from_str::<&RawValue>(&lit).is_ok()
}

/// JSON text written as it is by serde_json's writer, as a [`RawValue`] is (this is how a
/// `RawValue` serializes itself: a struct under serde_json's private name, which its writer
/// copies verbatim), without the `RawValue`, which can only be made by scanning the text
/// again or by borrowing it from a parse. The text must be valid JSON: only this module makes
/// one, from literals it has checked. `out_writes_as_serde_does` pins the behaviour.
struct RawLiteral<'t>(&'t str);

impl Serialize for RawLiteral<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        const TOKEN: &str = "$serde_json::private::RawValue";
        let mut st = s.serialize_struct(TOKEN, 1)?;
        st.serialize_field(TOKEN, self.0)?;
        st.end()
    }
}

/// Opaque JSON in the chat model (a tool's schema): the caller's bytes when decoded from a
/// body, or a value. Encoders that pass it on copy the bytes; those that look inside parse it.
#[derive(Clone)]
pub enum Json<'a> {
    /// Valid JSON as sent (checked by [`Strict`]).
    Raw(&'a str),
    /// A value.
    Value(Value),
}

impl Json<'_> {
    /// The value, parsed when it is raw.
    pub fn to_value(&self) -> Cow<'_, Value> {
        match self {
            Json::Value(v) => Cow::Borrowed(v),
            // Checked by `Strict` when it was decoded.
            Json::Raw(raw) => Cow::Owned(serde_json::from_str(raw).unwrap_or(Value::Null)),
        }
    }

    /// About how many bytes it takes as JSON (a guess for a value).
    pub fn json_len(&self) -> usize {
        match self {
            Json::Raw(raw) => raw.len(),
            Json::Value(_) => 256,
        }
    }

    /// Whether it is a JSON object.
    pub fn is_object(&self) -> bool {
        match self {
            Json::Value(v) => v.is_object(),
            Json::Raw(raw) => raw.starts_with('{'),
        }
    }

    /// Whether it is an object whose field `key` is a non-empty object (the last such field
    /// when the key repeats, as a `Value` holds it). Raw JSON is scanned, not built.
    pub fn has_nonempty_object(&self, key: &str) -> bool {
        match self {
            Json::Value(v) => v
                .get(key)
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty()),
            Json::Raw(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw);
                de::Deserializer::deserialize_any(&mut de, FieldProbe(key)).unwrap_or(false)
            }
        }
    }

    /// The owned equivalent.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Value(v) => Json::Value(v),
            Json::Raw(_) => Json::Value(self.to_value().into_owned()),
        }
    }
}

impl Default for Json<'_> {
    fn default() -> Self {
        Json::Value(Value::Null)
    }
}

impl From<Value> for Json<'_> {
    fn from(v: Value) -> Self {
        Json::Value(v)
    }
}

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Json<'_> {
    fn eq(&self, other: &Value) -> bool {
        *self.to_value() == *other
    }
}

impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(raw) => RawLiteral(raw).serialize(s),
            Json::Value(v) => v.serialize(s),
        }
    }
}

/// A JSON document an encoder writes: a tree like `Value`, but its texts, schemas and
/// arguments borrowed from the chat model (a literal from the caller's body is copied as it
/// is, see [`Str`]) and its keys static, so building it copies no text and writing it escapes
/// only what was not already a literal. Objects keep their keys in the order given: encoders
/// give them sorted, the order the `Value` maps this replaced wrote.
#[derive(Debug)]
pub(crate) enum Out<'r, 'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    /// Text to escape.
    Text(&'r str),
    /// Owned text to escape.
    String(String),
    /// A chat-model text.
    Str(&'r Str<'a>),
    /// Chat-model JSON (a schema).
    Json(&'r Json<'a>),
    /// A value (small settings, tool-call arguments).
    Value(&'r Value),
    /// An owned value.
    Owned(Value),
    /// A tool call's arguments.
    Args(&'r serde_json::Map<String, Value>),
    /// Texts joined as one string.
    Joined(Joined<'r, 'a>),
    Array(Vec<Out<'r, 'a>>),
    Object(Vec<(&'static str, Out<'r, 'a>)>),
    /// `{key: [items], "role": role}`: a conversation turn, without an object to allocate.
    Turn(&'static str, Vec<Out<'r, 'a>>, &'static str),
}

impl<'r, 'a> Out<'r, 'a> {
    /// An object of these fields, in this order.
    pub(crate) fn obj<const N: usize>(fields: [(&'static str, Out<'r, 'a>); N]) -> Self {
        Out::Object(Vec::from(fields))
    }

    /// A number as `Value::from(f64)` writes it (`null` when not finite).
    pub(crate) fn f64(x: f64) -> Self {
        Out::Owned(Value::from(x))
    }

    /// The document as bytes, `hint` bytes reserved: what `serde_json::to_writer` writes
    /// for it, byte for byte, but written directly (keys, brackets and texts that need no
    /// escape copied as they are; serde's writer escaped every key and text a byte at a time).
    pub(crate) fn to_vec(&self, hint: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(hint);
        self.write(&mut out);
        out
    }

    /// Appends the document as `serde_json`'s compact writer writes it.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Out::Null => out.extend_from_slice(b"null"),
            Out::Bool(true) => out.extend_from_slice(b"true"),
            Out::Bool(false) => out.extend_from_slice(b"false"),
            Out::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Out::I64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Out::Text(t) => write_str(out, t),
            Out::String(t) => write_str(out, t),
            Out::Str(t) => t.write(out),
            Out::Json(Json::Raw(raw)) => out.extend_from_slice(raw.as_bytes()),
            Out::Json(Json::Value(v)) | Out::Owned(v) => write_value(out, v),
            Out::Value(v) => write_value(out, v),
            Out::Args(m) => write_map(out, m),
            Out::Joined(j) => j.write(out),
            Out::Array(items) => write_array(out, items),
            Out::Object(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_key(out, k);
                    v.write(out);
                }
                out.push(b'}');
            }
            Out::Turn(key, items, role) => {
                out.push(b'{');
                write_key(out, key);
                write_array(out, items);
                out.extend_from_slice(b",\"role\":");
                write_str(out, role);
                out.push(b'}');
            }
        }
    }
}

/// `"key":`.
fn write_key(out: &mut Vec<u8>, key: &str) {
    if needs_escape(key.as_bytes()) {
        write_str(out, key);
        out.push(b':');
        return;
    }
    // One copy of `"key":` assembled on the stack (keys are short names).
    let k = key.as_bytes();
    let mut buf = [b'"'; 40];
    match buf.get_mut(1..k.len().saturating_add(1)) {
        Some(inner) if k.len() <= 37 => {
            inner.copy_from_slice(k);
            buf[k.len() + 2] = b':';
            out.extend_from_slice(&buf[..k.len() + 3]);
        }
        _ => {
            out.push(b'"');
            out.extend_from_slice(k);
            out.extend_from_slice(b"\":");
        }
    }
}

fn write_array(out: &mut Vec<u8>, items: &[Out<'_, '_>]) {
    out.push(b'[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        v.write(out);
    }
    out.push(b']');
}

/// Appends `v` as `serde_json`'s compact writer writes it: containers and strings directly
/// (its writer escapes a string a byte at a time), numbers and literals by `serde_json`.
fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Object(m) => write_map(out, m),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        // Writing a value to a Vec cannot fail.
        _ => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

/// A map of values (a tool call's arguments) as JSON text, as `serde_json::to_string` writes
/// it.
pub(crate) fn map_text(m: &serde_json::Map<String, Value>) -> String {
    let mut out = Vec::with_capacity(64);
    write_map(&mut out, m);
    // Only ever whole strings and ASCII punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends a map of values (a tool call's arguments) as `serde_json` writes it, in its order.
fn write_map(out: &mut Vec<u8>, m: &serde_json::Map<String, Value>) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

impl Serialize for Out<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Out::Null => s.serialize_unit(),
            Out::Bool(b) => s.serialize_bool(*b),
            Out::U64(n) => s.serialize_u64(*n),
            Out::I64(n) => s.serialize_i64(*n),
            Out::Text(t) => s.serialize_str(t),
            Out::String(t) => s.serialize_str(t),
            Out::Str(t) => t.serialize(s),
            Out::Json(j) => j.serialize(s),
            Out::Value(v) => v.serialize(s),
            Out::Owned(v) => v.serialize(s),
            Out::Args(m) => m.serialize(s),
            Out::Joined(j) => j.serialize(s),
            Out::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Out::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Out::Turn(key, items, role) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry(key, items)?;
                map.serialize_entry("role", role)?;
                map.end()
            }
        }
    }
}

/// Reads an object, telling whether its field `.0` is a non-empty object.
struct FieldProbe<'k>(&'k str);

impl<'de> Visitor<'de> for FieldProbe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.0))? {
            if is_key {
                found = map.next_value_seed(NonEmptyObject)?;
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A map key: whether it is `.0`.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

/// A value: whether it is an object with at least one field.
struct NonEmptyObject;

impl<'de> DeserializeSeed<'de> for NonEmptyObject {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NonEmptyObject {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut any = false;
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            map.next_value::<de::IgnoredAny>()?;
            any = true;
        }
        Ok(any)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// serde_json's nesting limit for a `Value`: a container this many levels deep is refused.
pub(crate) const MAX_DEPTH: usize = 128;

/// Checks, without building anything, that a JSON value is one a `serde_json::Value` parse
/// accepts (strings decode, numbers fit, nesting under [`MAX_DEPTH`] counting the `.0`
/// containers around it). Used for what a decoder skips or keeps as raw bytes.
#[derive(Clone, Copy)]
pub(crate) struct Strict(pub usize);

impl Strict {
    /// Checks a raw value found inside `self.0` containers.
    pub(crate) fn check(self, raw: &RawValue) -> Result<(), serde_json::Error> {
        self.check_text(raw.get())
    }

    /// Checks JSON text serde_json has scanned (see [`scanned_is_strict`]).
    pub(crate) fn check_text(self, raw: &str) -> Result<(), serde_json::Error> {
        if scanned_is_strict(raw, self.0) {
            return Ok(());
        }
        // Refused, or unsure: the parse gives the verdict, and serde's words for it.
        let mut de = serde_json::Deserializer::from_str(raw);
        self.deserialize(&mut de)?;
        de.end()
    }

    fn enter<E: de::Error>(self) -> Result<Strict, E> {
        let depth = self.0.saturating_add(1);
        if depth >= MAX_DEPTH {
            return Err(E::custom("recursion limit exceeded"));
        }
        Ok(Strict(depth))
    }
}

/// Whether `raw`, a value serde_json has scanned (a [`RawValue`], so its syntax is checked:
/// brackets, escapes, literals, number syntax), found inside `depth` containers, is one
/// [`Strict`] accepts, told by one pass over its bytes that jumps from quote to backslash
/// inside strings: what a scan leaves unchecked is only `\u` escapes that are lone
/// surrogates, numbers too large for an `f64`, and nesting. `false` when refused or unsure
/// (a long or exponent number is handed to serde_json alone).
pub(crate) fn scanned_is_strict(raw: &str, depth: usize) -> bool {
    let b = raw.as_bytes();
    let mut depth = depth;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => match string_end_checked(b, i.saturating_add(1)) {
                Some(end) => i = end,
                None => return false,
            },
            b'{' | b'[' => {
                depth = depth.saturating_add(1);
                if depth >= MAX_DEPTH {
                    return false;
                }
                i = i.saturating_add(1);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i = i.saturating_add(1);
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = b.get(i) {
                    i = i.saturating_add(1);
                }
                let num = b.get(start..i).unwrap_or_default();
                // Fifteen digits and no exponent always fit an `f64`.
                if (num.len() > 15 || num.iter().any(|c| matches!(c, b'e' | b'E')))
                    && serde_json::from_slice::<Value>(num).is_err()
                {
                    return false;
                }
            }
            _ => i = i.saturating_add(1),
        }
    }
    true
}

/// Past the closing quote of the scanned string whose text starts at `i`; `None` when a
/// `\u` escape in it is a lone surrogate (or the string is cut short).
fn string_end_checked(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let j = i.checked_add(memchr::memchr2(b'"', b'\\', b.get(i..)?)?)?;
        if b.get(j) == Some(&b'"') {
            return j.checked_add(1);
        }
        if b.get(j.saturating_add(1)) != Some(&b'u') {
            i = j.saturating_add(2);
            continue;
        }
        let unit = hex4(b, j.saturating_add(2))?;
        i = j.saturating_add(6);
        match unit {
            0xD800..=0xDBFF => {
                // A leading surrogate: a trailing one must follow at once.
                if b.get(i..i.saturating_add(2)) != Some(&b"\\u"[..]) {
                    return None;
                }
                if !(0xDC00..=0xDFFF).contains(&hex4(b, i.saturating_add(2))?) {
                    return None;
                }
                i = i.saturating_add(6);
            }
            0xDC00..=0xDFFF => return None,
            _ => {}
        }
    }
}

/// The text of the JSON string literal `lit` (quotes included, syntax checked as for
/// [`unescape`]): borrowed from it when it has no escape, else unescaped; `None` when it is
/// not quoted or does not decode.
pub(crate) fn literal_text(lit: &str) -> Option<Cow<'_, str>> {
    let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    unescape(lit).map(Cow::Owned)
}

/// The text of the JSON string literal `lit` (quotes included), whose syntax serde_json or
/// [`crate::scan`] has checked: what `serde_json::from_str::<String>` gives, without its
/// reader (one copy of each run between escapes); `None` where that parse fails (a lone
/// surrogate escape).
pub(crate) fn unescape(lit: &str) -> Option<String> {
    let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
    let b = inner.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    // Escapes come every few bytes in escaped JSON (a tool call's arguments): a byte loop
    // finds a near one sooner than a SIMD search set up for each, which takes over past 16.
    let next = |rest: &[u8]| {
        let near = rest.get(..16).unwrap_or(rest);
        match near.iter().position(|&c| c == b'\\') {
            Some(p) => Some(p),
            None if near.len() < rest.len() => {
                memchr::memchr(b'\\', rest.get(16..)?).map(|p| p.saturating_add(16))
            }
            None => None,
        }
    };
    while let Some(off) = next(b.get(i..)?) {
        let k = i.checked_add(off)?;
        out.push_str(inner.get(i..k)?);
        i = k.checked_add(2)?;
        let c = match *b.get(k.checked_add(1)?)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(b, i)?;
                i = i.checked_add(4)?;
                match unit {
                    0xD800..=0xDBFF => {
                        if b.get(i..i.checked_add(2)?)? != b"\\u" {
                            return None;
                        }
                        let low = hex4(b, i.checked_add(2)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        i = i.checked_add(6)?;
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(unit)?,
                }
            }
            _ => return None,
        };
        out.push(c);
    }
    out.push_str(inner.get(i..)?);
    Some(out)
}

/// The four hex digits at `i` as a number.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = std::str::from_utf8(b.get(i..i.saturating_add(4))?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

// === stream events: typed, borrowing decoding and direct writing (issue #21) ===

/// A JSON object decoded as `T`. Derived struct decoders would take an array too (its
/// elements as the fields in order), which a `Value` lookup never does: this one refuses it.
pub(crate) struct Obj<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The first element of a JSON array (`None` when empty), the others checked and skipped.
pub(crate) struct First<T>(pub Option<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for First<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element::<T>()?;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Whether a field is there at all, `null` included (`Option` cannot tell `null` from
/// absent; `Value::get` can).
#[derive(Default)]
pub(crate) struct Present(pub bool);

impl<'de> serde::Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| Present(true))
    }
}

/// Appends `s` as a JSON string, escaped exactly as serializing a `Value` escapes it. Text
/// with nothing to escape (most of it: keys, names, types) is copied between quotes at once.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing to a Vec cannot fail, and a `&str` always serializes.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len().saturating_add(2));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether `b` has a byte a JSON string must escape (`"`, `\`, a control character): eight
/// bytes at a time, no branch per byte.
fn needs_escape(b: &[u8]) -> bool {
    if b.len() < 32 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    let (words, tail) = b.as_chunks::<8>();
    let hit = words.iter().fold(0, |acc, w| {
        acc | switchyard_types::swar::json_string_stop(u64::from_le_bytes(*w))
    });
    hit != 0 || tail.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// Valid JSON `text` on one line: as it is when it has no line break, else with the
/// whitespace between tokens left out (a line break can only be that: inside a string it is
/// escaped). What goes into an SSE `data:` line must not break it.
pub(crate) fn one_line(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Appends an integer, as serializing a `Value` writes it.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_the_value_and_breaks_no_line() {
        for text in [
            "{\"a\": [1, 2]}",
            "{\n  \"a\\\"\\n\": \"x \\\\\",\r\n  \"b\": [ {\"c\" :\t\"\\u00e9 y\"} ]\n}",
            "[\n]",
            "\"line\\nbreak\"",
        ] {
            let line = one_line(text);
            assert!(!line.contains(['\n', '\r']), "{line}");
            let (a, b): (Value, Value) = (
                serde_json::from_str(text).unwrap(),
                serde_json::from_str(&line).unwrap(),
            );
            assert_eq!(a, b, "{text}");
        }
        assert!(matches!(one_line("{\"a\": 1}"), Cow::Borrowed(_)));
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    /// `Strict` accepts exactly what a `Value` parse does, nesting limit included.
    #[test]
    fn strict_agrees_with_value() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        for s in [
            r#"{"a": [1, 2.5, -3, "x\n", null, true]}"#.to_string(),
            "1e400".into(),
            r#""\ud800""#.into(),
            r#""\ud83d\ude00""#.into(),
            deep(127),
            deep(128),
            format!("{{\"a\":{}}}", deep(126)),
            format!("{{\"a\":{}}}", deep(127)),
        ] {
            let by_value = serde_json::from_str::<Value>(&s).is_ok();
            let by_strict = RawValue::from_string(s.clone())
                .map_err(|_| ())
                .and_then(|r| Strict(0).check(&r).map_err(|_| ()))
                .is_ok();
            assert_eq!(by_value, by_strict, "{s}");
        }
    }

    /// The byte scan agrees with the parse on every scanned value it accepts, and accepts the
    /// common ones.
    #[test]
    fn scanned_is_strict_agrees_with_strict() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        let cases = [
            r#"{"a": [1, 2.5, -3, "x\n", null, true, false]}"#.to_string(),
            r#""""#.into(),
            r#""\\u""#.into(),
            r#""\\ud800""#.into(),
            r#""\"\ud800""#.into(),
            r#""\ud800""#.into(),
            r#""\udc00""#.into(),
            r#""\ud800\u0041""#.into(),
            r#""\ud800\n""#.into(),
            r#""\ud800x""#.into(),
            r#""\ud83d\ude00 \u00e9 \u0000 \uFFFF \uDBFF\uDFFF""#.into(),
            r#"{"\ud800": 1}"#.into(),
            r#"{"a\"}": "[[", "b": "\\"}"#.into(),
            "1e400".into(),
            "-1e400".into(),
            "1e-400".into(),
            "1.5E+10".into(),
            "123456789012345678901234567890".into(),
            "1".repeat(400),
            format!("[{}]", "9".repeat(310)),
            "-12345678901234567890".into(),
            "0.000000000000000000001".into(),
            deep(127),
            deep(128),
            format!("{{\"a\":{}}}", deep(126)),
            format!("{{\"a\":{}}}", deep(127)),
            "\"é 😀 \\/\"".into(),
        ];
        for s in &cases {
            let Ok(r) = RawValue::from_string(s.clone()) else {
                continue;
            };
            for depth in [0, 1, 3] {
                let strict = Strict(depth).check(&r).is_ok();
                let fast = scanned_is_strict(r.get(), depth);
                assert!(
                    !fast || strict,
                    "accepted what Strict refuses: {s} at {depth}"
                );
                if !s.contains('e') && !s.contains('E') && s.len() < 100 {
                    assert_eq!(fast, strict, "{s} at {depth}");
                }
            }
        }
    }

    /// `unescape` decodes what serde_json decodes, and fails where it fails.
    #[test]
    fn unescape_agrees_with_serde() {
        let cases = [
            r#""""#,
            r#""plain""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""a\u0000b\u001fc\u00e9\u20ac\uFFFF""#,
            r#""\ud83d\ude00 x \uD83D\uDE00""#,
            r#""\udbff\udfff""#,
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\n""#,
            r#""\ud800\u0041""#,
            r#""\ud800\ud800""#,
            r#""\udc00""#,
            r#""é 😀 \n é""#,
            r#""\\u0041""#,
            r#""a text longer than sixteen bytes before its first \n escape, and \u00e9 after""#,
            r#""sixteen bytes..\"x""#,
            r#""seventeen bytes..\"x""#,
            r#""{\"path\": \"/repo/a.py\", \"limit\": 200}""#,
        ];
        for lit in cases {
            assert_eq!(
                unescape(lit),
                serde_json::from_str::<String>(lit).ok(),
                "{lit}"
            );
        }
    }

    #[test]
    fn str_json_checks_surrogates_and_decodes() {
        assert!(Str::json(&raw(r#""\ud800""#)).is_err());
        let r = raw(r#""a\"b\u00e9""#);
        let s = Str::json(&r).unwrap().unwrap();
        assert_eq!(s.as_str(), "a\"bé");
        assert!(Str::json(&raw("5")).unwrap().is_err());
        assert!(Str::json(&raw(r#""""#)).unwrap().unwrap().is_empty());
        for (lit, blank) in [
            (r#""  ""#, true),
            (r#"" \n\t ""#, true),
            (r#""\u3000""#, true),
            ("\"\u{3000}\"", true),
            (r#"" x ""#, false),
            (r#""\n x""#, false),
            (r#""\n\t\r \\""#, false),
            (r#""\n\\n""#, false),
            (r#""\n\u0020\n""#, true),
            ("\"\u{e9}\"", false),
        ] {
            let r = raw(lit);
            assert_eq!(Str::json(&r).unwrap().unwrap().is_blank(), blank, "{lit}");
        }
    }

    /// `has_nonempty_object` on raw JSON reads it as a `Value` would (last repeated key wins).
    #[test]
    fn raw_field_probe_agrees_with_value() {
        for s in [
            r#"{"type":"object","properties":{"a":{}}}"#,
            r#"{"properties":{}}"#,
            r#"{"properties":{"a":1},"properties":{}}"#,
            r#"{"properties":{},"properties":{"a":1}}"#,
            r#"{"propert\u0069es":{"a":1}}"#,
            r#"{"properties":[1]}"#,
            r#"{"x":{"properties":{"a":1}}}"#,
            r#"[{"properties":{"a":1}}]"#,
            r#""properties""#,
        ] {
            let r = raw(s);
            let by_value = Json::Value(serde_json::from_str(s).unwrap());
            assert_eq!(
                Json::Raw(r.get()).has_nonempty_object("properties"),
                by_value.has_nonempty_object("properties"),
                "{s}"
            );
        }
    }

    /// `opens_container` says no only for texts a JSON parse cannot read as an object or array.
    #[test]
    fn opens_container_is_safe() {
        for (lit, want) in [
            (r#""{\"a\": 1}""#, Some(true)),
            (r#"" \n\t[1]""#, Some(true)),
            (r#""plain""#, Some(false)),
            (r#""\n 5""#, Some(false)),
            (r#""\u007b}""#, None),
            (r#"" \n ""#, None),
            (r#""""#, None),
        ] {
            let r = raw(lit);
            let s = Str::json(&r).unwrap().unwrap();
            assert_eq!(s.opens_container(), want, "{lit}");
            let text = Str::from(s.as_str().into_owned());
            assert_eq!(
                text.opens_container(),
                want.or(text.opens_container()),
                "{lit}"
            );
        }
    }

    /// The direct writer writes what serde_json's writer writes for the same document.
    #[test]
    fn out_writes_as_serde_does() {
        let texts = [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\u{1f}\n\t\r\u{8}\u{c}",
            "é 😀 \u{7f} /",
            "a long text without anything to escape, past thirty-two bytes",
            "a long text with one \"quote\" past the thirty-two bytes of the short test",
        ];
        let lits = [
            r#""""#,
            r#""x\ny \u00e9 \ud83d\ude00 \/ \"""#,
            r#""\u0000\u001f""#,
        ];
        let raws: Vec<_> = lits.iter().map(|l| raw(l)).collect();
        let strs: Vec<Str> = raws
            .iter()
            .map(|r| Str::json(r).unwrap().unwrap())
            .chain(texts.iter().map(|t| Str::from(*t)))
            .collect();
        let schema = raw(r#"{"type": "object", "properties": {"a\n": {}}}"#);
        let schema = Json::Raw(schema.get());
        let value = serde_json::json!({"k\"": ["v\u{1}", 1.5, -2, null, true], "s": "t\n"});
        let vjson = Json::Value(value.clone());
        let args = value.as_object().unwrap().clone();
        let mut items: Vec<Out> = texts.iter().map(|t| Out::Text(t)).collect();
        items.extend(texts.iter().map(|t| Out::String(t.to_string())));
        items.extend(strs.iter().map(Out::Str));
        items.extend([
            Out::Null,
            Out::Bool(true),
            Out::Bool(false),
            Out::U64(u64::MAX),
            Out::I64(i64::MIN),
            Out::f64(0.1),
            Out::f64(f64::NAN),
            Out::Json(&schema),
            Out::Json(&vjson),
            Out::Value(&value),
            Out::Owned(Value::String("o\"".into())),
            Out::Args(&args),
            Out::Joined(Joined::new(strs.iter().collect(), "\\n\\n", "Error: ")),
            Out::Joined(Joined::new(vec![&strs[1]], "", "")),
            Out::Joined(Joined::new(vec![], "\\n", "")),
            Out::Array(vec![]),
            Out::Object(vec![]),
        ]);
        let doc = Out::obj([
            ("a", Out::Array(items)),
            ("k\"ey", Out::Text("v")),
            ("turn", Out::Turn("content", vec![Out::Text("x")], "user")),
        ]);
        let joined = Joined::new(strs.iter().collect(), "\\n", "> ");
        let by_serde = serde_json::to_string(&joined).unwrap();
        let mut direct = Vec::new();
        joined.write(&mut direct);
        assert_eq!(by_serde.as_bytes(), direct);
        assert_eq!(
            serde_json::to_value(&joined).unwrap(),
            serde_json::from_str::<Value>(&by_serde).unwrap()
        );
        assert!(serde_json::to_string(&Joined::new(vec![&strs[0], &strs[1]], "\"", "")).is_err());
        let ours = doc.to_vec(0);
        assert_eq!(
            String::from_utf8(ours.clone()).unwrap(),
            serde_json::to_string(&doc).unwrap()
        );
        serde_json::from_slice::<Value>(&ours).unwrap();
    }

    /// `write_value` writes what serde_json's compact writer writes, on random documents
    /// with every kind of value, escapes and non-ASCII text, nested.
    #[test]
    fn values_are_written_as_serde_writes_them() {
        fn gen(rng: &mut fastrand::Rng, depth: usize) -> Value {
            let texts = [
                "",
                "a",
                "q\"",
                "b\\s",
                "\u{1}\n\t\u{1f}",
                "é 😀",
                "/x/y.py",
                "\u{7f}",
            ];
            let text = |rng: &mut fastrand::Rng| {
                (0..rng.usize(0..3))
                    .map(|_| texts[rng.usize(..texts.len())])
                    .collect::<String>()
            };
            match rng.u8(..if depth > 4 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(rng.bool()),
                2 => Value::from(rng.i64(..)),
                3 => Value::from(rng.u64(..)),
                4 => Value::from(rng.f64() * 1e6 - 5e5),
                5 => Value::String(text(rng)),
                6 => Value::Array((0..rng.usize(0..4)).map(|_| gen(rng, depth + 1)).collect()),
                _ => Value::Object(
                    (0..rng.usize(0..4))
                        .map(|_| (text(rng), gen(rng, depth + 1)))
                        .collect(),
                ),
            }
        }
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..3_000 {
            let v = gen(&mut rng, 0);
            let mut ours = Vec::new();
            write_value(&mut ours, &v);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
            if let Value::Object(m) = &v {
                assert_eq!(Out::Args(m).to_vec(0), serde_json::to_vec(m).unwrap());
                assert_eq!(map_text(m), serde_json::to_string(m).unwrap());
            }
        }
    }

    #[test]
    fn joined_is_the_literal_of_the_joined_text() {
        let a = raw(r#""x\ny""#);
        let a = Str::json(&a).unwrap().unwrap();
        let b = Str::from("q\"");
        let j = Joined::new(vec![&a, &b], "\\n\\n", "Error: ");
        let out = serde_json::to_string(&j).unwrap();
        assert_eq!(
            serde_json::from_str::<String>(&out).unwrap(),
            "Error: x\ny\n\nq\""
        );
    }
}
