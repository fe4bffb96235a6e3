//! A Responses request parsed in one pass into borrowed pieces, as the chat decoders parse
//! theirs ([`crate::anthropic::wire`], [`crate::openai::wire`]): input texts, instructions,
//! tool descriptions and schemas stay in the body; the small fields become `Value`s, which the
//! decoder reads as it read the whole body as one `Value`. `tools` and `instructions` are also
//! kept as the caller's bytes, which the response echoes.
//!
//! What is accepted as JSON is exactly what a `Value` parse accepts: every raw piece is checked
//! ([`Strict`], [`Str::json`]).

use std::borrow::Cow;

use serde::de::{DeserializeSeed, MapAccess};
use serde_json::{value::RawValue, Map, Value};

pub(super) use crate::anthropic::wire::parse;
use crate::anthropic::wire::{
    err, key_text, many_at, noted_at, raw_str, raw_str_at, raw_str_noted, value_at, FromCursor,
    FromMap, Many, ManySeed, Member, TopLevel,
};
use crate::json::{Str, Strict};
use crate::openai::wire::{
    content, content_at, skip_at, small_str_at, Content, Key, KeySeed, SmallStr,
};
use crate::scan::Cursor;

/// A top-level field.
pub(super) enum Top<'a> {
    Input(Many<'a, Item<'a>>),
    /// The list as parsed, and its bytes.
    Tools(Many<'a, ToolDef<'a>>, &'a str),
    /// A string literal as [`Str::Json`], another value as `Err(value)`; and its bytes.
    Instructions(Result<Str<'a>, Value>, &'a str),
    Other(Value),
}

/// The body: its fields sorted by name, the last of a repeated name winning (how a `Value`
/// map holds them), or the non-object the body was.
pub(super) type Body<'a> = TopLevel<Top<'a>>;

/// An input item: what the decoder reads of each kind of item, the rest values.
#[derive(Default)]
pub(super) struct Item<'a> {
    pub ty: Option<Result<Cow<'a, str>, Value>>,
    pub role: Option<Result<Cow<'a, str>, Value>>,
    /// A message's `content`, a reasoning item's too.
    pub content: Option<Content<'a>>,
    /// A function call output's `output`.
    pub output: Option<Content<'a>>,
    /// A reasoning item's `summary`.
    pub summary: Option<Content<'a>>,
    pub call_id: Option<Result<Cow<'a, str>, Value>>,
    pub name: Option<Result<Cow<'a, str>, Value>>,
    pub namespace: Option<Result<Cow<'a, str>, Value>>,
    pub arguments: Option<Result<Cow<'a, str>, Value>>,
    pub encrypted_content: Option<Result<Cow<'a, str>, Value>>,
}

/// A tool: `description` and `parameters` raw, a namespace's `tools` parsed, the rest values.
#[derive(Default)]
pub(super) struct ToolDef<'a> {
    pub description: Option<Result<Str<'a>, Value>>,
    pub parameters: Option<&'a str>,
    pub tools: Option<Many<'a, ToolDef<'a>>>,
    pub other: Map<String, Value>,
}

impl<'de> Member<'de> for Top<'de> {
    fn member<A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self, A::Error> {
        Ok(match key {
            "input" => Top::Input(map.next_value_seed(ManySeed::<Item>::at(1))?),
            "tools" => {
                let raw: &'de RawValue = map.next_value()?;
                Strict(1).check(raw).map_err(err)?;
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let tools = ManySeed::<ToolDef>::at(1)
                    .deserialize(&mut de)
                    .map_err(err)?;
                Top::Tools(tools, raw.get())
            }
            "instructions" => {
                let raw: &'de RawValue = map.next_value()?;
                Top::Instructions(raw_str(raw, 1)?, raw.get())
            }
            _ => Top::Other(map.next_value()?),
        })
    }

    const RAW: bool = true;

    fn member_at(key: &str, doc: &'de str, c: &mut Cursor<'de>) -> Option<Self> {
        Some(match key {
            "input" => Top::Input(many_at(doc, c, 1)?),
            "tools" => {
                // Kept as the caller's bytes for the echo, so checked whole as `Strict` checks
                // them; what the walk noted on the way says whether that needs a second pass.
                let start = c.offset();
                c.take_unchecked();
                let tools = many_at(doc, c, 1)?;
                let raw = doc.get(start..c.offset())?.trim_start();
                let n = c.take_unchecked();
                if n.unicode || n.long_number || n.nesting >= crate::json::MAX_DEPTH {
                    Strict(1).check_text(raw).ok()?;
                }
                Top::Tools(tools, raw)
            }
            "instructions" => {
                let (raw, n) = noted_at(doc, c)?;
                Top::Instructions(raw_str_noted(raw, n, 1)?, raw)
            }
            _ => Top::Other(value_at(doc, c, 1)?),
        })
    }
}

impl<'de> FromCursor<'de> for Item<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut it = Item::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            let slot = match &*k {
                "content" => {
                    it.content = Some(content_at(doc, c, depth)?);
                    continue;
                }
                "output" => {
                    it.output = Some(content_at(doc, c, depth)?);
                    continue;
                }
                "summary" => {
                    it.summary = Some(content_at(doc, c, depth)?);
                    continue;
                }
                "type" => &mut it.ty,
                "role" => &mut it.role,
                "call_id" => &mut it.call_id,
                "name" => &mut it.name,
                "namespace" => &mut it.namespace,
                "arguments" => &mut it.arguments,
                "encrypted_content" => &mut it.encrypted_content,
                _ => {
                    skip_at(doc, c, depth)?;
                    continue;
                }
            };
            *slot = Some(small_str_at(doc, c, depth)?);
        }
        (!c.failed()).then_some(it)
    }
}

impl<'de> FromCursor<'de> for ToolDef<'de> {
    fn from_cursor(doc: &'de str, c: &mut Cursor<'de>, depth: usize) -> Option<Self> {
        let mut t = ToolDef::default();
        while let Some(k) = c.key() {
            let k = key_text(doc, k)?;
            match &*k {
                "description" => t.description = Some(raw_str_at(doc, c, depth)?),
                // Noted, for the check of the whole `tools` list (see `Top::member_at`).
                "parameters" => t.parameters = Some(noted_at(doc, c)?.0),
                "tools" => t.tools = Some(many_at(doc, c, depth)?),
                _ => {
                    t.other.insert(k.into_owned(), value_at(doc, c, depth)?);
                }
            }
        }
        (!c.failed()).then_some(t)
    }
}

impl<'de> FromMap<'de> for Item<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        const KEYS: &[&str] = &[
            "type",
            "role",
            "content",
            "output",
            "summary",
            "call_id",
            "name",
            "namespace",
            "arguments",
            "encrypted_content",
        ];
        let mut it = Item::default();
        while let Some(k) = map.next_key_seed(KeySeed(KEYS))? {
            let slot = match k {
                Key::Known("content") | Key::Known("output") | Key::Known("summary") => {
                    let raw: &'de RawValue = map.next_value()?;
                    let c = Some(content(raw, depth)?);
                    match k {
                        Key::Known("content") => it.content = c,
                        Key::Known("output") => it.output = c,
                        _ => it.summary = c,
                    }
                    continue;
                }
                Key::Known("type") => &mut it.ty,
                Key::Known("role") => &mut it.role,
                Key::Known("call_id") => &mut it.call_id,
                Key::Known("name") => &mut it.name,
                Key::Known("namespace") => &mut it.namespace,
                Key::Known("arguments") => &mut it.arguments,
                Key::Known(_) => &mut it.encrypted_content,
                Key::Other(_) => {
                    map.next_value_seed(Strict(depth))?;
                    continue;
                }
            };
            *slot = Some(map.next_value_seed(SmallStr)?);
        }
        Ok(it)
    }
}

impl<'de> FromMap<'de> for ToolDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut t = ToolDef::default();
        while let Some(k) = map.next_key_seed(KeySeed(&["description", "parameters", "tools"]))? {
            match k {
                Key::Known("description") => {
                    let raw: &'de RawValue = map.next_value()?;
                    t.description = Some(raw_str(raw, depth)?);
                }
                Key::Known("parameters") => {
                    let raw: &'de RawValue = map.next_value()?;
                    t.parameters = Some(raw.get());
                }
                Key::Known(_) => t.tools = Some(map.next_value_seed(ManySeed::at(depth))?),
                Key::Other(k) => {
                    t.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(t)
    }
}
