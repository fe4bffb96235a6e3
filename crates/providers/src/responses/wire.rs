//! A Responses request parsed in one pass into borrowed pieces, as the chat decoders parse
//! theirs ([`crate::anthropic::wire`], [`crate::openai::wire`]): input texts, instructions,
//! tool descriptions and schemas stay in the body; the small fields become `Value`s, which the
//! decoder reads as it read the whole body as one `Value`. `tools` and `instructions` are also
//! kept as the caller's bytes, which the response echoes.
//!
//! What is accepted as JSON is exactly what a `Value` parse accepts: every raw piece is checked
//! ([`Strict`], [`Str::json`]).

use std::{borrow::Cow, collections::BTreeMap, fmt};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

use crate::anthropic::wire::{err, raw_str, FromMap, Many, ManySeed};
use crate::json::{Str, Strict};
use crate::openai::wire::{content, Content, Key, KeySeed, SmallStr};

/// A top-level field.
pub(super) enum Top<'a> {
    Input(Many<'a, Item<'a>>),
    /// The list as parsed, and its bytes.
    Tools(Many<'a, ToolDef<'a>>, &'a RawValue),
    /// A string literal as [`Str::Json`], another value as `Err(value)`; and its bytes.
    Instructions(Result<Str<'a>, Value>, &'a RawValue),
    Other(Value),
}

/// The body: its fields sorted by name, the last of a repeated name winning (how a `Value`
/// map holds them), or the non-object the body was.
pub(super) enum Body<'a> {
    Object(BTreeMap<String, Top<'a>>),
    Other,
}

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
    pub parameters: Option<&'a RawValue>,
    pub tools: Option<Many<'a, ToolDef<'a>>>,
    pub other: Map<String, Value>,
}

/// Parses a Responses body.
pub(super) fn parse(body: &[u8]) -> Result<Body<'_>, serde_json::Error> {
    // Checked once here rather than piece by piece. A body that is not UTF-8 is not JSON.
    let text = std::str::from_utf8(body).map_err(<serde_json::Error as de::Error>::custom)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let b = BodySeed.deserialize(&mut de)?;
    de.end()?;
    Ok(b)
}

struct BodySeed;

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Body<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Body<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed {
    type Value = Body<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = match k.as_str() {
                "input" => Top::Input(map.next_value_seed(ManySeed::<Item>::at(1))?),
                "tools" => {
                    let raw: &'de RawValue = map.next_value()?;
                    Strict(1).check(raw).map_err(err)?;
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    let tools = ManySeed::<ToolDef>::at(1)
                        .deserialize(&mut de)
                        .map_err(err)?;
                    Top::Tools(tools, raw)
                }
                "instructions" => {
                    let raw: &'de RawValue = map.next_value()?;
                    Top::Instructions(raw_str(raw, 1)?, raw)
                }
                _ => Top::Other(map.next_value()?),
            };
            out.insert(k, v);
        }
        Ok(Body::Object(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<'de>, A::Error> {
        while seq.next_element_seed(Strict(1))?.is_some() {}
        Ok(Body::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
    fn visit_unit<E>(self) -> Result<Body<'de>, E> {
        Ok(Body::Other)
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
                    t.parameters = Some(raw);
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
