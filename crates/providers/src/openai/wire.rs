//! A Chat Completions request parsed in one pass into borrowed pieces, as
//! [`crate::anthropic::wire`] parses a Messages request: message texts, tool descriptions and
//! schemas stay in the body (see [`crate::json`]); the small fields become `Value`s, which the
//! decoder reads as it read the whole body as one `Value`.
//!
//! Parsing only parses: whether a field has the right type is the decoder's to say, after the
//! whole body is known to be JSON, so its errors come in the same order as before. What is
//! accepted as JSON is exactly what a `Value` parse accepts: every raw piece is checked
//! ([`Strict`], [`Str::json`]). Its content and key seeds serve the Responses decoder too.

use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

use crate::anthropic::wire::{
    err, key_text, many_at, noted_at, noted_strict, raw_at, raw_str, raw_str_at, strict_raw_at,
    value_at, FromCursor, FromMap, ItemSeed, ManySeed, Member, TopLevel,
};
pub(super) use crate::anthropic::wire::{parse, Many};
use crate::{
    json::{literal_text, scanned_is_strict, Str, Strict},
    scan::Cursor,
};

/// A top-level field.
pub(super) enum Top<'a> {
    Messages(Many<'a, Msg<'a>>),
    Tools(Many<'a, ToolDef<'a>>),
    Other(Value),
}

/// The body: its fields sorted by name, the last of a repeated name winning (how a `Value`
/// map holds them), or the non-object the body was.
pub(super) type Body<'a> = TopLevel<Top<'a>>;

/// A message's (or a tool message's) `content`.
pub(crate) enum Content<'a> {
    /// A string, as its literal.
    Text(Str<'a>),
    /// A list of content parts.
    Parts(Vec<PartDef<'a>>),
    /// Anything else, null included.
    Other(Value),
}

/// A message: `content` and `reasoning_content` raw, `role` and `tool_call_id` borrowed when
/// they are strings, every other field a `Value`.
#[derive(Default)]
pub(super) struct Msg<'a> {
    pub content: Option<Content<'a>>,
    /// A string literal as [`Str::Json`], another value as `Err(value)`.
    pub reasoning_content: Option<Result<Str<'a>, Value>>,
    pub role: Option<Result<Cow<'a, str>, Value>>,
    pub tool_call_id: Option<Result<Cow<'a, str>, Value>>,
    pub tool_calls: Option<Many<'a, CallDef<'a>>>,
    pub other: Map<String, Value>,
}

/// A tool call in an assistant message: what the decoder reads of it, the rest checked and
/// skipped.
#[derive(Default)]
pub(super) struct CallDef<'a> {
    pub id: Option<Result<Cow<'a, str>, Value>>,
    /// Parsed when it is an object.
    pub function: Option<Result<FunctionCall<'a>, Value>>,
}

/// A tool call's `function`.
#[derive(Default)]
pub(super) struct FunctionCall<'a> {
    pub name: Option<Result<Cow<'a, str>, Value>>,
    pub arguments: Option<Result<Cow<'a, str>, Value>>,
}

/// A content part: `text` raw, the rest values.
#[derive(Default)]
pub(crate) struct PartDef<'a> {
    pub text: Option<Result<Str<'a>, Value>>,
    pub other: Map<String, Value>,
}

/// A tool: its `function` parsed when it is an object, the rest values.
#[derive(Default)]
pub(super) struct ToolDef<'a> {
    pub function: Option<Result<FunctionDef<'a>, Value>>,
    pub other: Map<String, Value>,
}

/// A tool's function: `description` and `parameters` raw, the rest values.
#[derive(Default)]
pub(super) struct FunctionDef<'a> {
    pub description: Option<Result<Str<'a>, Value>>,
    pub parameters: Option<&'a str>,
    pub other: Map<String, Value>,
}

impl<'de> Member<'de> for Top<'de> {
    fn member<A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self, A::Error> {
        Ok(match key {
            "messages" => Top::Messages(map.next_value_seed(ManySeed::<Msg>::at(1))?),
            "tools" => Top::Tools(map.next_value_seed(ManySeed::<ToolDef>::at(1))?),
            _ => Top::Other(map.next_value()?),
        })
    }

    const RAW: bool = true;

    fn member_at(key: &str, doc: &'de str, c: &mut Cursor<'de>) -> Option<Self> {
        Some(match key {
            "messages" => Top::Messages(many_at(doc, c, 1)?),
            "tools" => Top::Tools(many_at(doc, c, 1)?),
            _ => Top::Other(value_at(doc, c, 1)?),
        })
    }
}

// === the walk (see `anthropic::wire::parse_walk`): each seed's counterpart on raw text ===

/// [`content`] on the value at the cursor.
pub(crate) fn content_at<'a>(
    doc: &'a str,
    c: &mut Cursor<'a>,
    depth: usize,
) -> Option<Content<'a>> {
    if c.enter(b'[') {
        // `PartsSeed`: items one container deeper, their fields one more.
        let mut parts = Vec::new();
        while c.element() {
            if c.enter(b'{') {
                parts.push(PartDef::from_cursor(doc, c, depth.saturating_add(2))?);
            } else {
                let v = raw_at(doc, c)?;
                if v.starts_with('[') {
                    Strict(depth.saturating_add(1)).check_text(v).ok()?;
                }
                parts.push(PartDef::default());
            }
        }
        return (!c.failed()).then_some(Content::Parts(parts));
    }
    let (v, n) = noted_at(doc, c)?;
    if v.starts_with('"') {
        if !n.unicode {
            return Some(Content::Text(Str::Json(v)));
        }
        return Some(Content::Text(Str::literal(v).ok()??));
    }
    if !noted_strict(n, depth) {
        Strict(depth).check_text(v).ok()?;
    }
    Some(Content::Other(serde_json::from_str(v).ok()?))
}

/// [`SmallStr`] on the value at the cursor.
pub(crate) fn small_str_at<'a>(
    doc: &'a str,
    c: &mut Cursor<'a>,
    depth: usize,
) -> Option<Result<Cow<'a, str>, Value>> {
    let v = raw_at(doc, c)?;
    if v.starts_with('"') {
        return literal_text(v).map(Ok);
    }
    if !scanned_is_strict(v, depth) {
        return None;
    }
    Some(Err(serde_json::from_str(v).ok()?))
}

/// [`ObjectSeed`] on the value at the cursor.
fn object_at<'a, T: FromCursor<'a>>(
    doc: &'a str,
    c: &mut Cursor<'a>,
    depth: usize,
) -> Option<Result<T, Value>> {
    if c.enter(b'{') {
        return T::from_cursor(doc, c, depth.saturating_add(1)).map(Ok);
    }
    let v = raw_at(doc, c)?;
    if v.starts_with('[') {
        Strict(depth).check_text(v).ok()?;
        return Some(Err(Value::Array(Vec::new())));
    }
    Some(Err(serde_json::from_str(v).ok()?))
}

/// Skips the value at the cursor, checked as [`Strict`] checks it.
pub(crate) fn skip_at<'a>(doc: &'a str, c: &mut Cursor<'a>, depth: usize) -> Option<()> {
    strict_raw_at(doc, c, depth).map(|_| ())
}

impl<'de> FromCursor<'de> for Msg<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut m = Msg::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            match &*k {
                "content" => m.content = Some(content_at(doc, c, depth)?),
                "reasoning_content" => m.reasoning_content = Some(raw_str_at(doc, c, depth)?),
                "role" => m.role = Some(small_str_at(doc, c, depth)?),
                "tool_call_id" => m.tool_call_id = Some(small_str_at(doc, c, depth)?),
                "tool_calls" => m.tool_calls = Some(many_at(doc, c, depth)?),
                _ => {
                    m.other.insert(k.into_owned(), value_at(doc, c, depth)?);
                }
            }
        }
        (!c.failed()).then_some(m)
    }
}

impl<'de> FromCursor<'de> for PartDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut p = PartDef::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            if k == "text" {
                p.text = Some(raw_str_at(doc, c, depth)?);
            } else {
                let raw = strict_raw_at(doc, c, depth)?;
                p.other
                    .insert(k.into_owned(), serde_json::from_str(raw).ok()?);
            }
        }
        (!c.failed()).then_some(p)
    }
}

impl<'de> FromCursor<'de> for ToolDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut t = ToolDef::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            if k == "function" {
                t.function = Some(object_at(doc, c, depth)?);
            } else {
                t.other.insert(k.into_owned(), value_at(doc, c, depth)?);
            }
        }
        (!c.failed()).then_some(t)
    }
}

impl<'de> FromCursor<'de> for FunctionDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut f = FunctionDef::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            match &*k {
                "description" => f.description = Some(raw_str_at(doc, c, depth)?),
                "parameters" => f.parameters = Some(strict_raw_at(doc, c, depth)?),
                _ => {
                    f.other.insert(k.into_owned(), value_at(doc, c, depth)?);
                }
            }
        }
        (!c.failed()).then_some(f)
    }
}

impl<'de> FromCursor<'de> for CallDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut d = CallDef::default();
        while let Some(k) = c.key() {
            match &*key_text(doc, k)? {
                "id" => d.id = Some(small_str_at(doc, c, depth)?),
                "function" => d.function = Some(object_at(doc, c, depth)?),
                _ => skip_at(doc, c, depth)?,
            }
        }
        (!c.failed()).then_some(d)
    }
}

impl<'de> FromCursor<'de> for FunctionCall<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut f = FunctionCall::default();
        while let Some(k) = c.key() {
            match &*key_text(doc, k)? {
                "name" => f.name = Some(small_str_at(doc, c, depth)?),
                "arguments" => f.arguments = Some(small_str_at(doc, c, depth)?),
                _ => skip_at(doc, c, depth)?,
            }
        }
        (!c.failed()).then_some(f)
    }
}

/// A `content` found inside `depth` containers.
pub(crate) fn content<'a, E: de::Error>(raw: &'a RawValue, depth: usize) -> Result<Content<'a>, E> {
    let s = raw.get();
    if s.starts_with('"') {
        return match Str::json(raw).map_err(err)? {
            Ok(t) => Ok(Content::Text(t)),
            Err(_) => Err(E::custom("a string literal that is not a string")),
        };
    }
    if s.starts_with('[') {
        // Parsed on its own: every piece is checked at its depth in the body (`PartDef`), so
        // the nesting limit counts from the body, not from the list.
        let mut de = serde_json::Deserializer::from_str(s);
        let parts = PartsSeed(depth).deserialize(&mut de).map_err(err)?;
        return Ok(Content::Parts(parts));
    }
    // Checked where it is (nesting counted from the body), then parsed on its own.
    Strict(depth).check(raw).map_err(err)?;
    Ok(Content::Other(serde_json::from_str(s).map_err(err)?))
}

/// A list of content parts; an item that is not an object reads as an empty one, as
/// `Value::get` reads it.
struct PartsSeed(usize);

impl<'de> DeserializeSeed<'de> for PartsSeed {
    type Value = Vec<PartDef<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PartsSeed {
    type Value = Vec<PartDef<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let item = ItemSeed::<PartDef>(self.0 + 1, PhantomData);
        while let Some(p) = seq.next_element_seed(item)? {
            out.push(p.unwrap_or_default());
        }
        Ok(out)
    }
}

impl<'de> FromMap<'de> for Msg<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        const KEYS: &[&str] = &[
            "content",
            "reasoning_content",
            "role",
            "tool_call_id",
            "tool_calls",
        ];
        let mut m = Msg::default();
        while let Some(k) = map.next_key_seed(KeySeed(KEYS))? {
            match k {
                Key::Known("content") => {
                    let raw: &'de RawValue = map.next_value()?;
                    m.content = Some(content(raw, depth)?);
                }
                Key::Known("reasoning_content") => {
                    let raw: &'de RawValue = map.next_value()?;
                    m.reasoning_content = Some(raw_str(raw, depth)?);
                }
                Key::Known("role") => m.role = Some(map.next_value_seed(SmallStr)?),
                Key::Known("tool_calls") => {
                    m.tool_calls = Some(map.next_value_seed(ManySeed::at(depth))?)
                }
                Key::Known(_) => m.tool_call_id = Some(map.next_value_seed(SmallStr)?),
                Key::Other(k) => {
                    m.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(m)
    }
}

/// A map key: one of `.0` (no copy), or another.
pub(crate) struct KeySeed(pub(crate) &'static [&'static str]);

pub(crate) enum Key {
    Known(&'static str),
    Other(String),
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Key, E> {
        Ok(match self.0.iter().find(|k| **k == s) {
            Some(k) => Key::Known(k),
            None => Key::Other(s.to_string()),
        })
    }
}

/// A short string field, borrowed when the body spells it without escapes; another value
/// as the `Value` it is.
pub(crate) struct SmallStr;

impl<'de> DeserializeSeed<'de> for SmallStr {
    type Value = Result<Cow<'de, str>, Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SmallStr {
    type Value = Result<Cow<'de, str>, Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Owned(s.to_string())))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Err(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Err(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Value::Null))
    }
}

impl<'de> FromMap<'de> for PartDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut p = PartDef::default();
        while let Some(k) = map.next_key::<String>()? {
            let raw: &'de RawValue = map.next_value()?;
            if k == "text" {
                p.text = Some(raw_str(raw, depth)?);
            } else {
                Strict(depth).check(raw).map_err(err)?;
                p.other
                    .insert(k, serde_json::from_str(raw.get()).map_err(err)?);
            }
        }
        Ok(p)
    }
}

impl<'de> FromMap<'de> for ToolDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut t = ToolDef::default();
        while let Some(k) = map.next_key::<String>()? {
            if k == "function" {
                t.function = Some(map.next_value_seed(ObjectSeed::at(depth))?);
            } else {
                t.other.insert(k, map.next_value()?);
            }
        }
        Ok(t)
    }
}

impl<'de> FromMap<'de> for FunctionDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut f = FunctionDef::default();
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "description" => {
                    let raw: &'de RawValue = map.next_value()?;
                    f.description = Some(raw_str(raw, depth)?);
                }
                "parameters" => {
                    let raw: &'de RawValue = map.next_value()?;
                    Strict(depth).check(raw).map_err(err)?;
                    f.parameters = Some(raw.get());
                }
                _ => {
                    f.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(f)
    }
}

/// A value found inside `.0` containers: parsed as a `T` when it is an object, a `Value`
/// otherwise (whose content the decoders only tell from null).
pub(crate) struct ObjectSeed<T>(usize, PhantomData<T>);

impl<T> ObjectSeed<T> {
    pub(crate) fn at(depth: usize) -> Self {
        ObjectSeed(depth, PhantomData)
    }
}

impl<'de, T: FromMap<'de>> DeserializeSeed<'de> for ObjectSeed<T> {
    type Value = Result<T, Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: FromMap<'de>> Visitor<'de> for ObjectSeed<T> {
    type Value = Result<T, Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map, self.0 + 1).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Strict(self.0).visit_seq(seq)?;
        Ok(Err(Value::Array(Vec::new())))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Err(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(Value::Null))
    }
}

impl<'de> FromMap<'de> for CallDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut c = CallDef::default();
        while let Some(k) = map.next_key_seed(KeySeed(&["id", "function"]))? {
            match k {
                Key::Known("id") => c.id = Some(map.next_value_seed(SmallStr)?),
                Key::Known(_) => c.function = Some(map.next_value_seed(ObjectSeed::at(depth))?),
                Key::Other(_) => map.next_value_seed(Strict(depth))?,
            }
        }
        Ok(c)
    }
}

impl<'de> FromMap<'de> for FunctionCall<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut f = FunctionCall::default();
        while let Some(k) = map.next_key_seed(KeySeed(&["name", "arguments"]))? {
            match k {
                Key::Known("name") => f.name = Some(map.next_value_seed(SmallStr)?),
                Key::Known(_) => f.arguments = Some(map.next_value_seed(SmallStr)?),
                Key::Other(_) => map.next_value_seed(Strict(depth))?,
            }
        }
        Ok(f)
    }
}
