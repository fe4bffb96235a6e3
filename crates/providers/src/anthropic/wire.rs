//! A Messages request parsed in one pass into borrowed pieces (the seeds for lists of
//! objects, [`ManySeed`] and [`FromMap`], serve the OpenAI chat decoder too): the texts, tool descriptions
//! and schemas stay in the body (see [`crate::json`]); the small fields become `Value`s, which
//! the decoder reads as it would read the whole body as one `Value`.
//!
//! Parsing only parses: whether a field has the right type is the decoder's to say, after the
//! whole body is known to be JSON, so its errors come in the same order as before and a body
//! that is not JSON is always refused as such. What is accepted as JSON is exactly what a
//! `Value` parse accepts: every skipped or raw piece is checked ([`Strict`], [`Str::json`]).

use std::{borrow::Cow, collections::BTreeMap, fmt, marker::PhantomData};

use serde::de::{
    self, value::MapAccessDeserializer, DeserializeSeed, MapAccess, SeqAccess, Visitor,
};
use serde_json::{value::RawValue, Map, Value};

use crate::{
    json::{self, scanned_is_strict, unescape, Str, Strict},
    scan::{Cursor, Unchecked},
};

/// A field that may be a string, a list of `T`, or something else (null, a wrong type: kept
/// as a `Value` for the decoder to refuse).
pub(crate) enum Many<'a, T> {
    Text(Cow<'a, str>),
    List(Vec<T>),
    Other(Value),
}

/// A top-level field.
pub(super) enum Top<'a> {
    Blocks(Many<'a, Block<'a>>),
    Messages(Many<'a, Msg<'a>>),
    Tools(Many<'a, ToolDef<'a>>),
    Other(Value),
}

/// The body: its fields sorted by name, the last of a repeated name winning (how a `Value`
/// map holds them), or the non-object the body was.
pub(super) type Body<'a> = TopLevel<Top<'a>>;

/// A message: `content` parsed, every other field a `Value`.
#[derive(Default)]
pub(super) struct Msg<'a> {
    pub content: Option<Many<'a, Block<'a>>>,
    pub other: Map<String, Value>,
}

/// A content block: its large strings raw, its `type` borrowed, a tool result's `content`
/// parsed, the rest values. Each field holds the last of a repeated key, as a `Value` map
/// holds it.
#[derive(Default)]
pub(super) struct Block<'a> {
    /// `type` when it is a string, another value as `Err(value)`.
    pub ty: Option<Result<Cow<'a, str>, Value>>,
    /// `text`, `thinking`, `signature`, `data`, in this order: string literals as
    /// [`Str::Json`], other values as `Err(value)`.
    pub strs: [Option<Result<Str<'a>, Value>>; 4],
    pub content: Option<Many<'a, Block<'a>>>,
    pub other: Map<String, Value>,
}

impl<'a> Block<'a> {
    /// The slot in [`Block::strs`] of a raw string field.
    fn slot(key: &str) -> Option<usize> {
        Some(match key {
            "text" => 0,
            "thinking" => 1,
            "signature" => 2,
            "data" => 3,
            _ => return None,
        })
    }

    /// A string field as `Value::get(..).and_then(Value::as_str)` would see it.
    pub fn str(&self, key: &str) -> Option<&Str<'a>> {
        self.raw(key).and_then(|r| r.as_ref().ok())
    }

    /// Whether the field is there and not null.
    pub fn raw(&self, key: &str) -> Option<&Result<Str<'a>, Value>> {
        self.strs
            .get(Self::slot(key)?)?
            .as_ref()
            .filter(|v| !matches!(v, Err(Value::Null)))
    }

    /// `type` as `Value::get("type").and_then(Value::as_str)` would see it.
    pub fn ty(&self) -> Option<&str> {
        match &self.ty {
            Some(Ok(t)) => Some(t),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.other.get(key)
    }
}

/// A tool definition: `description` and `input_schema` raw, `name` borrowed, the rest values.
#[derive(Default)]
pub(super) struct ToolDef<'a> {
    /// `name` when it is a string, another value as `Err(value)`.
    pub name: Option<Result<Cow<'a, str>, Value>>,
    pub description: Option<Result<Str<'a>, Value>>,
    pub input_schema: Option<&'a str>,
    pub other: Map<String, Value>,
}

/// A request body as the one-pass decoders read it: its members by name, each parsed by `T`
/// from its key, or `Other` when the body is JSON but not an object.
pub(crate) enum TopLevel<T> {
    Object(BTreeMap<String, T>),
    Other,
}

/// A top-level member of a request body, parsed according to its key.
pub(crate) trait Member<'de>: Sized {
    fn member<A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self, A::Error>;

    /// Whether [`Member::member_at`] parses members (see [`parse`]).
    const RAW: bool = false;

    /// The member at the cursor, walking `doc` (see [`parse_walk`]); `None` when unsure
    /// (then the one-pass serde parse decides).
    fn member_at(_key: &str, _doc: &'de str, _c: &mut Cursor<'de>) -> Option<Self> {
        None
    }
}

/// Parses a request body (Messages, Chat Completions, Responses) member by member.
pub(crate) fn parse<'de, T: Member<'de>>(
    body: &'de [u8],
) -> Result<TopLevel<T>, serde_json::Error> {
    if T::RAW && !force_serde() {
        if let Some(top) = parse_walk(body) {
            return Ok(top);
        }
    }
    // Checked once here rather than piece by piece: a raw piece borrowed from bytes is
    // checked again when it is made. A body that is not UTF-8 is not JSON either.
    // simdutf8's check gives std's verdict with the SIMD the CPU has (std's was 5 % of a
    // Claude Code request's translation); std's words name the fault when there is one.
    let text = match simdutf8::basic::from_utf8(body) {
        Ok(text) => text,
        Err(_) => std::str::from_utf8(body).map_err(<serde_json::Error as de::Error>::custom)?,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let b = BodySeed(PhantomData).deserialize(&mut de)?;
    de.end()?;
    Ok(b)
}

#[cfg(test)]
thread_local! {
    /// Tests set it to compare the walk with the one-pass serde parse.
    pub(crate) static FORCE_SERDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn force_serde() -> bool {
    #[cfg(test)]
    return FORCE_SERDE.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

/// The body parsed by one walk of [`Cursor`] (which checks the syntax as it goes, and skips
/// strings from quote to backslash), its large texts and schemas borrowed as they are passed:
/// serde_json captured each as a `RawValue` with a byte-at-a-time scan. What the walk leaves
/// unchecked is checked as the one-pass parse checks it: UTF-8 at once (simdutf8), raw pieces
/// by [`Strict`] and [`Str::literal`], small fields by a `Value` parse after their nesting
/// ([`scanned_is_strict`]). At any doubt or fault this answers `None`, and the one-pass parse
/// gives the verdict and its error.
pub(crate) fn parse_walk<'de, T: Member<'de>>(body: &'de [u8]) -> Option<TopLevel<T>> {
    let doc = simdutf8::basic::from_utf8(body).ok()?;
    let mut c = Cursor::new(doc.as_bytes());
    if !c.enter(b'{') {
        return None;
    }
    let mut out = BTreeMap::new();
    while let Some(k) = c.key() {
        let k = key_text(doc, k)?;
        let v = T::member_at(&k, doc, &mut c)?;
        out.insert(k.into_owned(), v);
    }
    c.complete().then_some(TopLevel::Object(out))
}

/// `part`, a slice of `doc`, as the `str` it is in `doc`.
pub(crate) fn sub<'d>(doc: &'d str, part: &[u8]) -> Option<&'d str> {
    let start = (part.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    doc.get(start..start.checked_add(part.len())?)
}

/// A key the cursor returned (raw, without its quotes), decoded.
pub(crate) fn key_text<'d>(doc: &'d str, key: &[u8]) -> Option<Cow<'d, str>> {
    let k = sub(doc, key)?;
    if !k.contains('\\') {
        return Some(Cow::Borrowed(k));
    }
    let start = (key.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    let lit = doc.get(start.checked_sub(1)?..start.checked_add(key.len())?.checked_add(1)?)?;
    unescape(lit).map(Cow::Owned)
}

/// The value at the cursor as raw text.
pub(crate) fn raw_at<'d>(doc: &'d str, c: &mut Cursor<'d>) -> Option<&'d str> {
    let v = c.value()?;
    sub(doc, v)
}

/// The value at the cursor as raw text, with what the walk left unchecked in it.
pub(crate) fn noted_at<'d>(doc: &'d str, c: &mut Cursor<'d>) -> Option<(&'d str, Unchecked)> {
    let (v, n) = c.value_noting()?;
    Some((sub(doc, v)?, n))
}

/// Whether a value the cursor walked, found inside `depth` containers, is one [`Strict`]
/// accepts, told by what the walk noted (`n`) rather than by a second pass over it: without
/// a `\u` escape or a long number, only its nesting is left to check ([`scanned_is_strict`]
/// checks no more). `false` when unsure: [`Strict`] then decides.
pub(crate) fn noted_strict(n: Unchecked, depth: usize) -> bool {
    !n.unicode && !n.long_number && depth.saturating_add(n.nesting) < json::MAX_DEPTH
}

/// The value at the cursor as raw text passed on as written (a tool's schema), found inside
/// `depth` containers and checked by [`Strict`] as the one-pass parse checks it.
pub(crate) fn strict_raw_at<'d>(doc: &'d str, c: &mut Cursor<'d>, depth: usize) -> Option<&'d str> {
    let (raw, n) = noted_at(doc, c)?;
    if !noted_strict(n, depth) {
        Strict(depth).check_text(raw).ok()?;
    }
    Some(raw)
}

/// The value at the cursor, found inside `depth` containers, as a `Value` (`None` when
/// nested deeper than a `Value` parse of the whole body accepts).
pub(crate) fn value_at<'d>(doc: &'d str, c: &mut Cursor<'d>, depth: usize) -> Option<Value> {
    let (v, n) = noted_at(doc, c)?;
    if let Some(simple) = simple_value(v) {
        return Some(simple);
    }
    if !(noted_strict(n, depth) || scanned_is_strict(v, depth)) {
        return None;
    }
    serde_json::from_str(v).ok()
}

/// The value of `raw`, a scalar the cursor walked, when it is one of the common kinds whose
/// value needs no parse: a string without escapes, a literal, a plain non-negative integer
/// (what `serde_json::from_str` would give, without setting up its reader); `None` for others.
fn simple_value(raw: &str) -> Option<Value> {
    match raw.as_bytes().first()? {
        b'"' => {
            let inner = raw.get(1..raw.len().checked_sub(1)?)?;
            (!inner.contains('\\')).then(|| Value::String(inner.to_string()))
        }
        b't' if raw == "true" => Some(Value::Bool(true)),
        b'f' if raw == "false" => Some(Value::Bool(false)),
        b'n' if raw == "null" => Some(Value::Null),
        _ => crate::scan::plain_u64(raw.as_bytes()).map(Value::from),
    }
}

/// [`raw_str_text`] on the value at the cursor: a string literal the walk saw no `\u` escape
/// in has no surrogate to check, and is taken as it is.
pub(crate) fn raw_str_at<'d>(
    doc: &'d str,
    c: &mut Cursor<'d>,
    depth: usize,
) -> Option<Result<Str<'d>, Value>> {
    let (raw, n) = noted_at(doc, c)?;
    raw_str_noted(raw, n, depth)
}

/// [`raw_str_text`] on raw text the cursor walked, with what the walk noted in it.
pub(crate) fn raw_str_noted(
    raw: &str,
    n: Unchecked,
    depth: usize,
) -> Option<Result<Str<'_>, Value>> {
    if raw.starts_with('"') && !n.unicode {
        return Some(Ok(Str::Json(raw)));
    }
    raw_str_text(raw, depth)
}

/// [`raw_str`] on raw text.
pub(crate) fn raw_str_text(raw: &str, depth: usize) -> Option<Result<Str<'_>, Value>> {
    match Str::literal(raw).ok()? {
        Some(s) => Some(Ok(s)),
        None => {
            Strict(depth).check_text(raw).ok()?;
            Some(Err(serde_json::from_str(raw).ok()?))
        }
    }
}

/// Something parsed from an object the cursor has entered, found inside `depth` containers
/// (the raw-text counterpart of [`FromMap`]).
pub(crate) trait FromCursor<'de>: Sized + Default {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self>;
}

/// [`ManySeed`] on the value at the cursor, found inside `depth` containers.
pub(crate) fn many_at<'de, T: FromCursor<'de>>(
    doc: &'de str,
    c: &mut Cursor<'de>,
    depth: usize,
) -> Option<Many<'de, T>> {
    if c.enter(b'[') {
        let mut out = Vec::new();
        while c.element() {
            if c.enter(b'{') {
                out.push(T::from_cursor(doc, c, depth.saturating_add(2))?);
            } else {
                // Not an object: read as an empty one, an array checked as `ItemSeed` does.
                let v = raw_at(doc, c)?;
                if v.starts_with('[') {
                    Strict(depth.saturating_add(1)).check_text(v).ok()?;
                }
                out.push(T::default());
            }
        }
        return (!c.failed()).then_some(Many::List(out));
    }
    let v = raw_at(doc, c)?;
    if v.starts_with('"') {
        return json::literal_text(v).map(Many::Text);
    }
    Some(Many::Other(serde_json::from_str(v).ok()?))
}

impl<'de> FromCursor<'de> for Msg<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut m = Msg::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            if k == "content" {
                m.content = Some(many_at(doc, c, depth)?);
            } else {
                m.other.insert(k.into_owned(), value_at(doc, c, depth)?);
            }
        }
        (!c.failed()).then_some(m)
    }
}

impl<'de> FromCursor<'de> for Block<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut b = Block::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            match &*k {
                "type" => b.ty = Some(crate::openai::wire::small_str_at(doc, c, depth)?),
                "content" => b.content = Some(many_at(doc, c, depth)?),
                key => match Block::slot(key) {
                    Some(i) => *b.strs.get_mut(i)? = Some(raw_str_at(doc, c, depth)?),
                    None => {
                        b.other.insert(k.into_owned(), value_at(doc, c, depth)?);
                    }
                },
            }
        }
        (!c.failed()).then_some(b)
    }
}

impl<'de> FromCursor<'de> for ToolDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut t = ToolDef::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            match &*k {
                "name" => t.name = Some(crate::openai::wire::small_str_at(doc, c, depth)?),
                "description" => t.description = Some(raw_str_at(doc, c, depth)?),
                "input_schema" => t.input_schema = Some(strict_raw_at(doc, c, depth)?),
                _ => {
                    t.other.insert(k.into_owned(), value_at(doc, c, depth)?);
                }
            }
        }
        (!c.failed()).then_some(t)
    }
}

pub(crate) fn err<E: de::Error>(e: serde_json::Error) -> E {
    E::custom(e)
}

/// A string field kept raw: a literal as [`Str::Json`], anything else parsed to a `Value`.
pub(crate) fn raw_str<'a, E: de::Error>(
    raw: &'a RawValue,
    depth: usize,
) -> Result<Result<Str<'a>, Value>, E> {
    match Str::json(raw).map_err(err)? {
        Ok(s) => Ok(Ok(s)),
        Err(raw) => {
            Strict(depth).check(raw).map_err(err)?;
            Ok(Err(serde_json::from_str(raw.get()).map_err(err)?))
        }
    }
}

/// What a `Value` built from a map would hold, for fields parsed as values.
fn value_from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Value, A::Error> {
    de::Deserialize::deserialize(MapAccessDeserializer::new(map))
}

// === seeds ===

struct BodySeed<T>(PhantomData<T>);

impl<'de, T: Member<'de>> DeserializeSeed<'de> for BodySeed<T> {
    type Value = TopLevel<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TopLevel<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Member<'de>> Visitor<'de> for BodySeed<T> {
    type Value = TopLevel<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<T>, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = T::member(&k, &mut map)?;
            out.insert(k, v);
        }
        Ok(TopLevel::Object(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<T>, A::Error> {
        while seq.next_element_seed(Strict(1))?.is_some() {}
        Ok(TopLevel::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
    fn visit_unit<E>(self) -> Result<TopLevel<T>, E> {
        Ok(TopLevel::Other)
    }
}

impl<'de> Member<'de> for Top<'de> {
    fn member<A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self, A::Error> {
        Ok(match key {
            "system" => Top::Blocks(map.next_value_seed(ManySeed::<Block>::at(1))?),
            "messages" => Top::Messages(map.next_value_seed(ManySeed::<Msg>::at(1))?),
            "tools" => Top::Tools(map.next_value_seed(ManySeed::<ToolDef>::at(1))?),
            _ => Top::Other(map.next_value()?),
        })
    }

    const RAW: bool = true;

    fn member_at(key: &str, doc: &'de str, c: &mut Cursor<'de>) -> Option<Self> {
        Some(match key {
            "system" => Top::Blocks(many_at(doc, c, 1)?),
            "messages" => Top::Messages(many_at(doc, c, 1)?),
            "tools" => Top::Tools(many_at(doc, c, 1)?),
            _ => Top::Other(value_at(doc, c, 1)?),
        })
    }
}

/// Something parsed from a map at a known nesting depth (the containers around the map).
pub(crate) trait FromMap<'de>: Sized {
    /// Parses the map, whose values are inside `depth` containers.
    fn from_map<A: MapAccess<'de>>(map: A, depth: usize) -> Result<Self, A::Error>;
}

/// A [`Many`] of `T`, found inside `depth` containers.
pub(crate) struct ManySeed<T> {
    depth: usize,
    t: PhantomData<T>,
}

impl<T> ManySeed<T> {
    pub(crate) fn at(depth: usize) -> Self {
        ManySeed {
            depth,
            t: PhantomData,
        }
    }
}

impl<'de, T: FromMap<'de> + Default> DeserializeSeed<'de> for ManySeed<T> {
    type Value = Many<'de, T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: FromMap<'de> + Default> Visitor<'de> for ManySeed<T> {
    type Value = Many<'de, T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        // The list is one container deep, its items one more. An item that is not an object
        // reads as an empty one, as `Value::get` reads it: the decoder names what it lacks.
        let item = ItemSeed::<T>(self.depth + 1, PhantomData);
        while let Some(t) = seq.next_element_seed(item)? {
            out.push(t.unwrap_or_default());
        }
        Ok(Many::List(out))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Many::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Many::Text(Cow::Owned(s.to_string())))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Many::Other(value_from_map(map)?))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Many::Other(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Many::Other(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Many::Other(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Many::Other(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Many::Other(Value::Null))
    }
}

/// One list item: `Some` when it is an object, `None` (checked) when not.
pub(crate) struct ItemSeed<T>(pub(crate) usize, pub(crate) PhantomData<T>);

impl<T> Clone for ItemSeed<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ItemSeed<T> {}

impl<'de, T: FromMap<'de>> DeserializeSeed<'de> for ItemSeed<T> {
    type Value = Option<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: FromMap<'de>> Visitor<'de> for ItemSeed<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map, self.0 + 1).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Strict(self.0).visit_seq(seq)?;
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

impl<'de> FromMap<'de> for Msg<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut m = Msg::default();
        while let Some(k) = map.next_key::<String>()? {
            if k == "content" {
                m.content = Some(map.next_value_seed(ManySeed::at(depth))?);
            } else {
                m.other.insert(k, map.next_value()?);
            }
        }
        Ok(m)
    }
}

impl<'de> FromMap<'de> for Block<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut b = Block::default();
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "type" => b.ty = Some(map.next_value_seed(crate::openai::wire::SmallStr)?),
                "content" => b.content = Some(map.next_value_seed(ManySeed::at(depth))?),
                key => match Block::slot(key).and_then(|i| b.strs.get_mut(i)) {
                    Some(slot) => {
                        let raw: &'de RawValue = map.next_value()?;
                        *slot = Some(raw_str(raw, depth)?);
                    }
                    None => {
                        b.other.insert(k, map.next_value()?);
                    }
                },
            }
        }
        Ok(b)
    }
}

impl<'de> FromMap<'de> for ToolDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut t = ToolDef::default();
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "name" => t.name = Some(map.next_value_seed(crate::openai::wire::SmallStr)?),
                "description" => {
                    let raw: &'de RawValue = map.next_value()?;
                    t.description = Some(raw_str(raw, depth)?);
                }
                "input_schema" => {
                    let raw: &'de RawValue = map.next_value()?;
                    Strict(depth).check(raw).map_err(err)?;
                    t.input_schema = Some(raw.get());
                }
                _ => {
                    t.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(t)
    }
}
