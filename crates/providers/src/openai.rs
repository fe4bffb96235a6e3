//! OpenAI wire format: request passthrough with model rewrite, usage extraction, and stream
//! chunk inspection.
//!
//! When the caller and the backend both speak OpenAI, the gateway does not build a typed
//! model of the request: it splits the top-level object into raw fields, rewrites `model` and
//! `stream_options`, and copies every other field byte for byte. That keeps fields the gateway
//! does not know about (new OpenAI parameters, vendor extensions) intact and costs one pass.

use std::borrow::Cow;

use serde::Deserialize;

use crate::{
    rewrite::{Editor, Rewrite},
    scan, Operation, Usage,
};

pub mod chat;
pub(crate) mod wire;

/// A request the gateway cannot accept, with the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a JSON object.
    #[error("the request body is not valid JSON: {0}")]
    Json(String),
    /// A required parameter is missing.
    #[error("you must provide a '{0}' parameter")]
    Missing(&'static str),
    /// A parameter has the wrong type.
    #[error("'{param}' must be {expected}")]
    Type {
        /// The parameter.
        param: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// The operation cannot stream.
    #[error("'stream' is not supported for this endpoint")]
    StreamUnsupported,
}

impl DecodeError {
    /// The request parameter at fault, for the error body's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            DecodeError::Json(_) => None,
            DecodeError::Missing(p) => Some(p),
            DecodeError::Type { param, .. } => Some(param),
            DecodeError::StreamUnsupported => Some("stream"),
        }
    }
}

pub(crate) use crate::split::Field;

/// An OpenAI request decoded just enough to route and forward it.
pub struct Request<'a> {
    /// The caller's body, which `fields` borrow from.
    body: &'a [u8],
    fields: Vec<Field<'a>>,
    /// The model the client asked for.
    pub model: Cow<'a, str>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client itself asked for the usage chunk (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// The client's `max_tokens` / `max_completion_tokens`, for token estimates.
    pub max_tokens: Option<u64>,
}

impl<'a> Request<'a> {
    /// The body's top-level fields, raw, in order (for the affinity key).
    pub fn raw_fields(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Decodes the body of an OpenAI request for `op`.
    pub fn decode(op: Operation, body: &'a [u8]) -> Result<Self, DecodeError> {
        let fields = split_fields(body)?;
        let mut model = None;
        let mut stream = false;
        let mut client_wants_usage = false;
        let mut max_tokens = None;
        let mut has_input = false;
        let input_param = match op {
            Operation::ChatCompletions | Operation::Messages | Operation::CountTokens => "messages",
            Operation::Completions => "prompt",
            Operation::Embeddings | Operation::Responses => "input",
        };
        for (k, v) in &fields {
            match k.as_ref() {
                "model" => {
                    let m: Cow<'a, str> = Cow::deserialize(
                        &mut serde_json::Deserializer::from_str(v),
                    )
                    .map_err(|_| DecodeError::Type {
                        param: "model",
                        expected: "a string",
                    })?;
                    model = Some(m);
                }
                "stream" => {
                    stream = match *v {
                        "true" => true,
                        "false" | "null" => false,
                        _ => {
                            return Err(DecodeError::Type {
                                param: "stream",
                                expected: "a boolean",
                            })
                        }
                    }
                }
                "stream_options" => {
                    #[derive(Deserialize)]
                    struct StreamOptions {
                        #[serde(default)]
                        include_usage: Option<bool>,
                    }
                    if *v != "null" {
                        let so: StreamOptions =
                            serde_json::from_str(v).map_err(|_| DecodeError::Type {
                                param: "stream_options",
                                expected: "an object",
                            })?;
                        client_wants_usage = so.include_usage.unwrap_or(false);
                    }
                }
                "max_output_tokens" if op == Operation::Responses => {
                    max_tokens =
                        serde_json::from_str::<Option<u64>>(v).map_err(|_| DecodeError::Type {
                            param: "max_output_tokens",
                            expected: "a non-negative integer",
                        })?;
                }
                "max_tokens" | "max_completion_tokens" => {
                    max_tokens =
                        serde_json::from_str::<Option<u64>>(v).map_err(|_| DecodeError::Type {
                            param: "max_tokens",
                            expected: "a non-negative integer",
                        })?;
                }
                p if p == input_param => has_input = *v != "null",
                _ => {}
            }
        }
        let model = model.ok_or(DecodeError::Missing("model"))?;
        if model.is_empty() {
            return Err(DecodeError::Missing("model"));
        }
        // A Responses request may leave `input` out (a stored prompt, or a turn that only
        // continues `previous_response_id`): the provider judges it.
        if !has_input && op != Operation::Responses {
            return Err(DecodeError::Missing(input_param));
        }
        if stream && !op.can_stream() {
            return Err(DecodeError::StreamUnsupported);
        }
        Ok(Request {
            body,
            fields,
            model,
            stream,
            client_wants_usage: stream && client_wants_usage,
            max_tokens,
        })
    }

    /// The upstream body: `model` replaced by `upstream_model`, for streams
    /// `stream_options.include_usage` forced on so usage is known for every stream, and
    /// with `cap` (the field the upstream takes it in, and the number) an output cap added;
    /// every other byte the caller's.
    pub fn rewrite(&self, upstream_model: &str, cap: Option<(&str, u64)>) -> Rewrite {
        edit_fields(self.body, &self.fields, upstream_model, cap, self.stream)
    }

    /// [`Request::rewrite`] written out whole.
    pub fn encode(&self, upstream_model: &str) -> Vec<u8> {
        self.rewrite(upstream_model, None).to_vec(self.body)
    }

    /// The upstream body with only `model` replaced by `upstream_model` (and `cap` added, as
    /// for [`Request::rewrite`]): for a Responses passthrough, whose `stream_options` has no
    /// `include_usage` (its streams always end with usage).
    pub fn rewrite_model_only(&self, upstream_model: &str, cap: Option<(&str, u64)>) -> Rewrite {
        model_only(self.body, &self.fields, upstream_model, cap)
    }

    /// A rough token count of the prompt (bytes / 4), for limits that must act before the
    /// upstream reports real usage.
    pub fn estimated_input_tokens(&self) -> u64 {
        let bytes: usize = self.fields.iter().map(|(_, v)| v.len()).sum();
        (bytes as u64).div_ceil(4)
    }
}

/// Splits a JSON object body into its top-level fields, values left raw.
pub(crate) fn split_fields(body: &[u8]) -> Result<Vec<Field<'_>>, DecodeError> {
    crate::split::fields(body).map_err(|e| DecodeError::Json(e.to_string()))
}

/// `body`, split into `fields`, with `model` replaced and `cap` added as the first field
/// (other formats' passthrough).
pub(crate) fn model_only(
    body: &[u8],
    fields: &[Field<'_>],
    upstream_model: &str,
    cap: Option<(&str, u64)>,
) -> Rewrite {
    edit_fields(body, fields, upstream_model, cap, false)
}

/// What a passthrough changes in the caller's body, one edit per field: every `model`
/// rewritten, the output cap placed (see [`place_cap`]), and with `ask_usage`
/// `stream_options.include_usage` forced on (added last when the caller sent none). The
/// body itself keeps every other byte; the fallback, for an edit that cannot be placed,
/// writes the same fields out one by one.
fn edit_fields(
    body: &[u8],
    fields: &[Field<'_>],
    upstream_model: &str,
    cap: CapAt<'_>,
    ask_usage: bool,
) -> Rewrite {
    let (first, in_place) = place_cap(fields, cap);
    let edit = |k: &str| match k {
        "model" => Some(Edit::Model(upstream_model)),
        "stream_options" if ask_usage => Some(Edit::StreamOptions),
        k => in_place
            .filter(|(name, _)| k == *name)
            .map(|(_, n)| Edit::Cap(n)),
    };
    let add_stream_options = ask_usage && !fields.iter().any(|(k, _)| k == "stream_options");
    const STREAM_OPTIONS: &[u8] = br#""stream_options":{"include_usage":true}"#;

    let mut e = Editor::new(body);
    if let Some((name, n)) = first {
        e.insert_first(name, n);
    }
    for (k, v) in fields {
        if let Some(edit) = edit(k) {
            e.replace(v, |out| edit.write(out, v));
        }
    }
    if add_stream_options {
        e.insert_last(STREAM_OPTIONS);
    }
    e.finish(|| {
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 80);
        out.push(b'{');
        if let Some((name, n)) = first {
            write_str(&mut out, name);
            out.push(b':');
            Edit::Cap(n).write(&mut out, "");
            out.push(b',');
        }
        for (k, v) in fields {
            write_str(&mut out, k);
            out.push(b':');
            match edit(k) {
                Some(edit) => edit.write(&mut out, v),
                None => out.extend_from_slice(v.as_bytes()),
            }
            out.push(b',');
        }
        if add_stream_options {
            out.extend_from_slice(STREAM_OPTIONS);
            out.push(b',');
        }
        // The last separator, or the opening brace of an empty object.
        match out.last_mut() {
            Some(last @ b',') => *last = b'}',
            _ => out.push(b'}'),
        }
        out
    })
}

/// A field's new value in a passthrough.
#[derive(Clone, Copy)]
enum Edit<'m> {
    Model(&'m str),
    Cap(u64),
    /// The caller's `stream_options` with `include_usage` on.
    StreamOptions,
}

impl Edit<'_> {
    /// Writes the new value; `raw` is the caller's.
    fn write(self, out: &mut Vec<u8>, raw: &str) {
        match self {
            Edit::Model(m) => write_str(out, m),
            Edit::Cap(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            Edit::StreamOptions => write_stream_options(out, raw),
        }
    }
}

/// Where the reserved output cap goes: added as the first field (`.0`), or, when the caller's
/// body already has that field (it can only be `null` there, or there would be no cap to
/// add), written as that field's value (`.1`). Added beside a caller's `"max_tokens": null`,
/// the cap would be a duplicate key that upstreams resolve to the last one: no cap at all.
type CapAt<'c> = Option<(&'c str, u64)>;

fn place_cap<'c>(fields: &[Field<'_>], cap: CapAt<'c>) -> (CapAt<'c>, CapAt<'c>) {
    match cap {
        Some((name, _)) if fields.iter().any(|(k, _)| k == name) => (None, cap),
        _ => (cap, None),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Merges `include_usage: true` into the client's `stream_options`, keeping its other keys.
fn write_stream_options(out: &mut Vec<u8>, raw: &str) {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).unwrap_or_default();
    map.insert("include_usage".into(), serde_json::Value::Bool(true));
    let _ = serde_json::to_writer(&mut *out, &map);
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek's name for the cached part of the prompt.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// Tokens written to the prompt cache: not OpenAI's (it does not charge for writes) but
    /// the name relays (OpenRouter, this gateway) give Anthropic's cache writes in this format.
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let details = u.prompt_tokens_details.unwrap_or_default();
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: details
                .cached_tokens
                .or(u.prompt_cache_hit_tokens)
                .unwrap_or(0),
            cache_write_tokens: details.cache_write_tokens.unwrap_or(0),
        }
    }
}

/// What the gateway needs from a non-streamed response body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// The body is one well-formed JSON object and nothing else: what every non-streamed
    /// answer of the format promises. A body that is not (cut short, an HTML page behind a
    /// 200) is the upstream's failure, never relayed as a success.
    pub well_formed: bool,
    /// A Responses API answer's `id` (read for that format only).
    pub response_id: Option<String>,
}

/// Reads usage and the first finish reason from a complete (non-streamed) OpenAI response,
/// in one pass that decodes only those two values (see [`crate::scan`]): the generated text
/// around them is skipped, not parsed, though checked, so the same pass also says whether
/// the body is well-formed.
pub fn inspect_response(body: &[u8]) -> ResponseInfo {
    let mut info = ResponseInfo::default();
    let mut c = scan::Cursor::new(body);
    if !c.enter(b'{') {
        return info;
    }
    while let Some(key) = c.key() {
        if scan::key_is(key, "choices") && c.enter(b'[') {
            while c.element() {
                if !c.enter(b'{') {
                    c.value();
                    continue;
                }
                while let Some(key) = c.key() {
                    let Some(value) = c.value() else { break };
                    if info.finish_reason.is_none() && scan::key_is(key, "finish_reason") {
                        info.finish_reason = serde_json::from_slice(value).ok().flatten();
                    }
                }
            }
            continue;
        }
        if scan::key_is(key, "usage") {
            info.usage = usage(&mut c);
        } else if c.value().is_none() {
            break;
        }
    }
    info.well_formed = c.complete();
    info
}

/// The OpenAI `usage` object at the cursor, which is left past it. Read in place when its
/// counts are plain integers (nearly always), else decoded by `serde_json`, whose verdict
/// (e.g. no usage for a fractional or repeated count) stands.
fn usage(c: &mut scan::Cursor<'_>) -> Option<Usage> {
    /// `Some(usage)` when the walk could read it all; `None` leaves it to `serde_json`.
    fn walk(c: &mut scan::Cursor<'_>) -> Option<Option<Usage>> {
        if !c.enter(b'{') {
            return (c.value()? == b"null").then_some(None);
        }
        // prompt, completion, cached, cache writes, DeepSeek's cache hits.
        let mut counts: [Option<u64>; 5] = [None; 5];
        let mut set = |slot: usize, raw: &[u8]| -> Option<()> {
            let n = scan::plain_u64(raw)?;
            counts[slot].replace(n).is_none().then_some(())
        };
        while let Some(key) = c.key() {
            if scan::key_is(key, "prompt_tokens_details") && c.enter(b'{') {
                while let Some(key) = c.key() {
                    let value = c.value()?;
                    if scan::key_is(key, "cached_tokens") && value != b"null" {
                        set(2, value)?;
                    } else if scan::key_is(key, "cache_write_tokens") && value != b"null" {
                        set(3, value)?;
                    }
                }
                continue;
            }
            let value = c.value()?;
            if scan::key_is(key, "prompt_tokens") {
                set(0, value)?;
            } else if scan::key_is(key, "completion_tokens") {
                set(1, value)?;
            } else if scan::key_is(key, "prompt_cache_hit_tokens") && value != b"null" {
                set(4, value)?;
            } else if scan::key_is(key, "prompt_tokens_details") && value != b"null" {
                return None; // neither an object nor null: serde_json rejects it
            }
        }
        if c.failed() {
            return None;
        }
        Some(Some(Usage {
            input_tokens: counts[0].unwrap_or(0),
            output_tokens: counts[1].unwrap_or(0),
            cached_input_tokens: counts[2].or(counts[4]).unwrap_or(0),
            cache_write_tokens: counts[3].unwrap_or(0),
        }))
    }
    let start = *c;
    if let Some(found) = walk(c) {
        return found;
    }
    *c = start;
    let raw = c.value()?;
    serde_json::from_slice::<Option<WireUsage>>(raw)
        .ok()
        .flatten()
        .map(Usage::from)
}

/// What the gateway needs from one streamed chunk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Usage carried by this chunk.
    pub usage: Option<Usage>,
    /// True for the extra chunk that only exists to carry usage (`choices: []`). It is passed
    /// on only to clients that asked for it.
    pub usage_only: bool,
    /// True when the chunk carries generated content (for time-to-first-token).
    pub has_content: bool,
    /// True when a choice reports a `finish_reason`.
    pub finished: bool,
    /// That finish reason.
    pub finish_reason: Option<String>,
}

/// Whether a streamed chunk may carry usage or a finish reason, found by scanning its bytes
/// for a `"usage"` or `"finish_reason"` key whose value is not `null`. Once the first token
/// has been seen that is all the gateway wants from a chunk, and the content chunks that make
/// up nearly all of a stream need no parse (measured: parsing was 15% of the relay's CPU).
/// The scan cannot miss: inside a JSON string every quote is escaped, so a quoted name
/// followed by a colon is always a key; a string value equal to the name is followed by
/// something else and skipped; any hit is confirmed by [`inspect_chunk`]. Each name is
/// searched for once with a prebuilt finder ([`scan::has_live_member`]): a search at every
/// quote cost about three times as much on a typical chunk.
pub fn may_carry_usage_or_finish(data: &[u8]) -> bool {
    use memchr::memmem::Finder;
    static KEYS: std::sync::LazyLock<[Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| [Finder::new(b"\"finish_reason\""), Finder::new(b"\"usage\"")]);
    KEYS.iter().any(|key| scan::has_live_member(data, key))
}

/// Inspects one `data:` payload of an OpenAI chat or completions stream.
pub fn inspect_chunk(data: &[u8]) -> ChunkInfo {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(default, borrow)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        delta: Option<Delta<'a>>,
        #[serde(default, borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        finish_reason: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(default, borrow)]
        content: Option<Cow<'a, str>>,
        #[serde(default)]
        tool_calls: Option<serde::de::IgnoredAny>,
        #[serde(default, borrow)]
        reasoning_content: Option<Cow<'a, str>>,
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return ChunkInfo::default();
    };
    let choices = chunk.choices.unwrap_or_default();
    let has_content = choices.iter().any(|c| {
        c.text.as_deref().is_some_and(|t| !t.is_empty())
            || c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|t| !t.is_empty())
                    || d.reasoning_content
                        .as_deref()
                        .is_some_and(|t| !t.is_empty())
                    || d.tool_calls.is_some()
            })
    });
    let finish_reason = choices
        .iter()
        .find_map(|c| c.finish_reason.as_deref())
        .map(str::to_owned);
    let usage = chunk.usage.map(Usage::from);
    ChunkInfo {
        usage_only: choices.is_empty() && usage.is_some(),
        usage,
        has_content,
        finished: finish_reason.is_some(),
        finish_reason,
    }
}

#[cfg(test)]
mod tests;
