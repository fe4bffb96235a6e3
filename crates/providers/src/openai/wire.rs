//! A Chat Completions request parsed in one pass into borrowed pieces, as
//! [`crate::anthropic::wire`] parses a Messages request: message texts, tool descriptions and
//! schemas stay in the body (see [`crate::json`]); the small fields become `Value`s, which the
//! decoder reads as it read the whole body as one `Value`.
//!
//! Parsing only parses: whether a field has the right type is the decoder's to say, after the
//! whole body is known to be JSON, so its errors come in the same order as before. What is
//! accepted as JSON is exactly what a `Value` parse accepts: every raw piece is checked
//! ([`Strict`], [`Str::json`]).

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

pub(super) use crate::anthropic::wire::Many;
use crate::anthropic::wire::{err, raw_str, FromMap, ItemSeed, ManySeed};
use crate::json::{Str, Strict};

/// A top-level field.
pub(super) enum Top<'a> {
    Messages(Many<'a, Msg<'a>>),
    Tools(Many<'a, ToolDef<'a>>),
    Other(Value),
}

/// The body: its fields sorted by name, the last of a repeated name winning (how a `Value`
/// map holds them), or the non-object the body was.
pub(super) enum Body<'a> {
    Object(BTreeMap<String, Top<'a>>),
    Other,
}

/// A message's (or a tool message's) `content`.
pub(super) enum Content<'a> {
    /// A string, as its literal.
    Text(Str<'a>),
    /// A list of content parts.
    Parts(Vec<PartDef<'a>>),
    /// Anything else, null included.
    Other(Value),
}

/// A message: `content` and `reasoning_content` raw, every other field a `Value`.
#[derive(Default)]
pub(super) struct Msg<'a> {
    pub content: Option<Content<'a>>,
    /// A string literal as [`Str::Json`], another value as `Err(value)`.
    pub reasoning_content: Option<Result<Str<'a>, Value>>,
    pub other: Map<String, Value>,
}

/// A content part: `text` raw, the rest values.
#[derive(Default)]
pub(super) struct PartDef<'a> {
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
    pub parameters: Option<&'a RawValue>,
    pub other: Map<String, Value>,
}

/// Parses a Chat Completions body.
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
                "messages" => Top::Messages(map.next_value_seed(ManySeed::<Msg>::at(1))?),
                "tools" => Top::Tools(map.next_value_seed(ManySeed::<ToolDef>::at(1))?),
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

/// A `content` found inside `depth` containers.
fn content<'a, E: de::Error>(raw: &'a RawValue, depth: usize) -> Result<Content<'a>, E> {
    let s = raw.get();
    if s.starts_with('"') {
        return match Str::json(raw).map_err(err)? {
            Ok(t) => Ok(Content::Text(t)),
            Err(_) => Err(E::custom("a string literal that is not a string")),
        };
    }
    // Checked where it is (nesting counted from the body), then parsed on its own.
    Strict(depth).check(raw).map_err(err)?;
    if s.starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(s);
        let parts = PartsSeed(depth).deserialize(&mut de).map_err(err)?;
        return Ok(Content::Parts(parts));
    }
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
        let mut m = Msg::default();
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "content" => {
                    let raw: &'de RawValue = map.next_value()?;
                    m.content = Some(content(raw, depth)?);
                }
                "reasoning_content" => {
                    let raw: &'de RawValue = map.next_value()?;
                    m.reasoning_content = Some(raw_str(raw, depth)?);
                }
                _ => {
                    m.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(m)
    }
}

impl<'de> FromMap<'de> for PartDef<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Self, A::Error> {
        let mut p = PartDef::default();
        while let Some(k) = map.next_key::<String>()? {
            if k == "text" {
                let raw: &'de RawValue = map.next_value()?;
                p.text = Some(raw_str(raw, depth)?);
            } else {
                p.other.insert(k, map.next_value()?);
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
                t.function = Some(map.next_value_seed(FunctionSeed(depth))?);
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
                    f.parameters = Some(raw);
                }
                _ => {
                    f.other.insert(k, map.next_value()?);
                }
            }
        }
        Ok(f)
    }
}

/// A tool's `function` found inside `.0` containers: parsed when it is an object, a `Value`
/// otherwise.
struct FunctionSeed(usize);

impl<'de> DeserializeSeed<'de> for FunctionSeed {
    type Value = Result<FunctionDef<'de>, Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FunctionSeed {
    type Value = Result<FunctionDef<'de>, Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        FunctionDef::from_map(map, self.0 + 1).map(Ok)
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
