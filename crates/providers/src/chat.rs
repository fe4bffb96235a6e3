//! The internal chat model every wire format maps to and from.
//!
//! A translated request goes `caller's format → chat::Request → backend's format`; a response
//! the other way, and a stream event by event through [`StreamEvent`]. The model keeps
//! everything some format can express and one format could need in order to round-trip
//! (Anthropic's thinking `signature`, tool-call ids, cache-aware usage), so a format pair never
//! needs to know about a third format. The OpenAI → OpenAI path never builds this model: it is
//! a byte-level passthrough (see [`crate::openai::Request`]).
//!
//! Conversions live with each format (`openai::chat`, `anthropic`): `decode_request` /
//! `encode_request`, `decode_response` / `encode_response`, and a stream decoder / encoder
//! pair joined by [`crate::transcode::Transcoder`].

use serde_json::Value;

use crate::json::Out;
pub use crate::json::{Json, Str};
use crate::Usage;

/// A chat request in the gateway's own terms.
///
/// Its text borrows from the caller's body where the decoder can (see [`Str`]), hence `'a`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request<'a> {
    /// The model the caller asked for (rewritten per target when encoding).
    pub model: String,
    /// The system prompt: the instructions before the conversation, in order. Formats with a
    /// single system string join them.
    pub system: Vec<Part<'a>>,
    /// The conversation, oldest first, as the caller sent it. It may hold [`Role::System`]
    /// turns after the first message (see [`Role::System`] for how each format carries them).
    pub messages: Vec<Message<'a>>,
    /// Tools the model may call.
    pub tools: Vec<Tool<'a>>,
    /// How the model must use the tools.
    pub tool_choice: Option<ToolChoice>,
    /// `false` asks for at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    /// Output format constraint.
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature as the caller sent it (OpenAI's range is 0–2, Anthropic's 0–1).
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini).
    pub top_k: Option<u64>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u64>,
    /// Sequences that stop generation.
    pub stop: Vec<String>,
    /// Whether the caller wants a stream.
    pub stream: bool,
    /// Extended thinking, when the caller turned it on (Anthropic's `thinking`).
    pub thinking: Option<Thinking>,
    /// OpenAI's reasoning effort (`minimal` … `high`), as the caller named it. A caller sends
    /// it only to models that take it, so OpenAI-dialect backends get it as it is; the others
    /// turn it into a thinking budget, or leave it out, which only changes how long the model
    /// deliberates.
    pub reasoning_effort: Option<String>,
    /// Anthropic's `output_config.effort`, in OpenAI's words (`low`, `medium`, `high`; `max`
    /// is read as `high`). Anthropic callers send it whatever the model, so unlike
    /// `reasoning_effort` it reaches an OpenAI-dialect backend only when the model is one of
    /// OpenAI's reasoning models (see [`Request::effort_for_openai`]).
    pub effort: Option<String>,
    /// An opaque end-user id for abuse tracking (`user`, `metadata.user_id`).
    pub user: Option<String>,
    /// What the decoder left out of the caller's request because it only tunes the provider
    /// (see `docs/forward-compatibility.md`), named as the caller sent it.
    pub dropped: Dropped,
    /// A search of the web the provider runs while it answers, when the caller declared one
    /// (Responses' `web_search` tool, Chat's `web_search_options`, Anthropic's
    /// `web_search_20250305`). Only some backends run one ([`WebSearch::runs_on`]); the
    /// gateway decides per target, by the route's settings, whether it is sent, left out or
    /// refused, and encoders send it whenever it is here.
    pub web_search: Option<WebSearch>,
}

impl<'a> Request<'a> {
    /// A thinking budget for backends that take one, from the caller's OpenAI reasoning
    /// effort (`minimal` and `none` ask for no thinking). The scale is the one LiteLLM uses,
    /// so callers moving between gateways see the same spend.
    pub fn effort_budget(&self) -> Option<u64> {
        budget_for_effort(self.reasoning_effort.as_deref()?)
    }

    /// The budget to give adaptive thinking on a backend that only takes budgets: the
    /// caller's effort on the same scale, `medium` when it named none.
    pub fn adaptive_budget(&self) -> u64 {
        self.effort
            .as_deref()
            .or(self.reasoning_effort.as_deref())
            .and_then(budget_for_effort)
            .unwrap_or(2048)
    }

    /// A thinking budget for Claude (on Anthropic or Bedrock): the caller's own budget as
    /// sent, or one made up from adaptive thinking or an OpenAI reasoning effort, but only
    /// where that cannot make Claude refuse a request that was fine without it: thinking rules
    /// out a changed temperature or top_k, a top_p under 0.95 and forced tool use, needs at
    /// least 1024 tokens, under max_tokens, and a final assistant turn that called tools must
    /// open with thinking Claude signed.
    pub fn claude_thinking_budget(&self) -> Option<u64> {
        let budget = match self.thinking {
            Some(Thinking::Budget(b)) => return Some(b),
            Some(Thinking::Adaptive) => self.adaptive_budget(),
            None => self.effort_budget()?,
        };
        let compatible = self.temperature.is_none_or(|t| t >= 1.0)
            && self.top_k.is_none()
            && self.top_p.is_none_or(|p| p >= 0.95)
            && !matches!(
                self.tool_choice,
                Some(ToolChoice::Required | ToolChoice::Tool(_))
            )
            && !self.ends_with_unsigned_tool_turn();
        if !compatible {
            return None;
        }
        match self.max_tokens {
            None => Some(budget),
            Some(max) => Some(budget.min(max.saturating_sub(1))).filter(|b| *b >= 1024),
        }
    }

    /// Whether the final assistant turn (as formats whose turns alternate join it) called
    /// tools without opening with signed thinking: a turn from another provider, or one whose
    /// reasoning the caller did not send back. Claude refuses such a turn with thinking on.
    fn ends_with_unsigned_tool_turn(&self) -> bool {
        let mut turn: Vec<&Message<'a>> = Vec::new();
        for m in self.messages.iter().rev() {
            match m.role {
                Role::System => {}
                Role::Assistant => turn.push(m),
                Role::User if turn.is_empty() => {}
                Role::User => break,
            }
        }
        let mut parts = turn.iter().rev().flat_map(|m| m.content.iter());
        let calls = parts.clone().any(|p| matches!(p, Part::ToolCall(_)));
        // What the encoders leave out does not open the turn: empty text, unsigned reasoning.
        let first = parts.find(|p| match p {
            Part::Text(t) => !t.is_empty(),
            Part::Reasoning {
                signature,
                redacted,
                ..
            } => signature.is_some() || redacted.is_some(),
            _ => true,
        });
        calls && !matches!(first, Some(Part::Reasoning { .. }))
    }

    /// The `reasoning_effort` to send an OpenAI-dialect backend serving `model`: the caller's
    /// own OpenAI setting as it is; otherwise one from Anthropic's effort or thinking, but
    /// only for OpenAI's reasoning models, since the others refuse the parameter and these
    /// settings only tune deliberation (see [`is_openai_reasoning_model`]).
    pub fn effort_for_openai(&self, model: &str) -> Option<String> {
        if let Some(e) = &self.reasoning_effort {
            return Some(e.clone());
        }
        if !is_openai_reasoning_model(model) {
            return None;
        }
        if let Some(e) = &self.effort {
            return Some(e.clone());
        }
        match self.thinking? {
            Thinking::Budget(b) => Some(effort_for_budget(b).to_string()),
            // The model's own default is what adaptive thinking without an effort means.
            Thinking::Adaptive => None,
        }
    }

    /// The same request owning all its text, free of the body it was decoded from.
    pub fn into_owned(self) -> Request<'static> {
        Request {
            system: self.system.into_iter().map(Part::into_owned).collect(),
            messages: self
                .messages
                .into_iter()
                .map(|m| Message {
                    role: m.role,
                    content: m.content.into_iter().map(Part::into_owned).collect(),
                })
                .collect(),
            tools: self
                .tools
                .into_iter()
                .map(|t| Tool {
                    name: t.name,
                    description: t.description.map(Str::into_owned),
                    parameters: t.parameters.into_owned(),
                    strict: t.strict,
                })
                .collect(),
            model: self.model,
            tool_choice: self.tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format: self.response_format,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_tokens: self.max_tokens,
            stop: self.stop,
            stream: self.stream,
            thinking: self.thinking,
            reasoning_effort: self.reasoning_effort,
            effort: self.effort,
            user: self.user,
            dropped: self.dropped,
            web_search: self.web_search,
        }
    }

    /// About how many bytes the request takes as JSON, to size an encoder's buffer once.
    pub fn size_hint(&self) -> usize {
        fn parts(ps: &[Part<'_>]) -> usize {
            ps.iter()
                .map(|p| match p {
                    Part::Text(t) => t.json_len().saturating_add(32),
                    Part::ToolResult { content, .. } => parts(content).saturating_add(64),
                    _ => 256,
                })
                .fold(0, usize::saturating_add)
        }
        let tools = self.tools.iter().map(|t| {
            let d = t.description.as_ref().map_or(0, Str::json_len);
            d.saturating_add(t.parameters.json_len()).saturating_add(64)
        });
        self.messages
            .iter()
            .map(|m| parts(&m.content).saturating_add(32))
            .chain(tools)
            .fold(
                parts(&self.system).saturating_add(1024),
                usize::saturating_add,
            )
    }

    /// The system prompt and every [`Role::System`] turn, in order: what formats with one
    /// system instruction (Anthropic as a backend, Gemini, Bedrock) fold into it.
    pub fn folded_system(&self) -> impl Iterator<Item = &Part<'a>> {
        self.system.iter().chain(
            self.messages
                .iter()
                .filter(|m| m.role == Role::System)
                .flat_map(|m| m.content.iter()),
        )
    }
}

/// The thinking budget standing for an effort level (LiteLLM's scale).
fn budget_for_effort(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(1024),
        "medium" => Some(2048),
        "high" | "xhigh" => Some(4096),
        _ => None,
    }
}

/// The effort level standing for a thinking budget, on the same scale.
fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=1024 => "low",
        1025..=2048 => "medium",
        _ => "high",
    }
}

/// Whether `model` names one of OpenAI's reasoning models (`o1`, `o3`, `o4-mini`, `gpt-5` and
/// their dated or sized variants, `codex-…`, `gpt-oss`), the models that take
/// `reasoning_effort`; a `provider/` prefix (OpenRouter's style) is looked through. A model
/// the gateway cannot recognise (an Azure deployment name, a fine-tune) is not one: a
/// setting the caller did not address to OpenAI is then left out rather than risk a 400.
pub fn is_openai_reasoning_model(model: &str) -> bool {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let family = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.']))
    };
    // `gpt-5-chat-latest` and its kin are the non-reasoning chat models.
    (family("o1") || family("o3") || family("o4-mini") || family("gpt-oss"))
        || (name.starts_with("gpt-5") && !name.contains("-chat"))
        || name.starts_with("codex-")
}

/// Who wrote a message. Tool results are [`Part::ToolResult`]s inside a user message
/// (Anthropic's shape, and the only one that keeps several results of one turn together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The caller (and tool results).
    User,
    /// The model.
    Assistant,
    /// Instructions inside the conversation, after its first message (an OpenAI `system` or
    /// `developer` message, a Responses system/developer item, an Anthropic `system` turn).
    /// Leading ones go to [`Request::system`]. OpenAI backends get them in place; formats
    /// with one system instruction fold them into it ([`Request::folded_system`]).
    System,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<'a> {
    /// Author.
    pub role: Role,
    /// Content, in order.
    pub content: Vec<Part<'a>>,
}

/// One piece of message content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part<'a> {
    /// Plain text.
    Text(Str<'a>),
    /// An image.
    Image(Image),
    /// Model reasoning. `signature` (Anthropic) must go back unchanged on the next turn, or
    /// the upstream refuses the conversation.
    Reasoning {
        /// The reasoning text (empty for redacted reasoning).
        text: Str<'a>,
        /// Anthropic's signature over the block.
        signature: Option<Str<'a>>,
        /// Anthropic's encrypted `redacted_thinking` data, when the block was redacted.
        redacted: Option<Str<'a>>,
    },
    /// A call the model made.
    ToolCall(ToolCall),
    /// The caller's answer to a tool call.
    ToolResult {
        /// The id of the call this answers.
        id: String,
        /// The result (text and images).
        content: Vec<Part<'a>>,
        /// Whether the tool failed.
        is_error: bool,
    },
}

impl Part<'_> {
    /// The same part owning all its text.
    pub fn into_owned(self) -> Part<'static> {
        match self {
            Part::Text(t) => Part::Text(t.into_owned()),
            Part::Image(i) => Part::Image(i),
            Part::Reasoning {
                text,
                signature,
                redacted,
            } => Part::Reasoning {
                text: text.into_owned(),
                signature: signature.map(Str::into_owned),
                redacted: redacted.map(Str::into_owned),
            },
            Part::ToolCall(c) => Part::ToolCall(c),
            Part::ToolResult {
                id,
                content,
                is_error,
            } => Part::ToolResult {
                id,
                content: content.into_iter().map(Part::into_owned).collect(),
                is_error,
            },
        }
    }
}

/// An image, by URL or inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Fetched by the provider.
    Url(String),
    /// Inline bytes, base64-encoded, with their media type.
    Base64 {
        /// e.g. `image/png`.
        media_type: String,
        /// The base64 text (not decoded: it is passed on as is).
        data: String,
    },
}

/// A tool call made by the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// The provider's call id, echoed back by the tool result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments: always a JSON object (Anthropic refuses anything else as `input`).
    pub arguments: serde_json::Map<String, Value>,
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool<'a> {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: Option<Str<'a>>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Json<'a>,
    /// OpenAI's `strict` (arguments must match the schema exactly), as the caller set it.
    /// Only OpenAI chat backends enforce it; the others leave it out, as they always have.
    pub strict: Option<bool>,
}

/// How the model must use tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

/// Output constraint.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: Value,
        /// OpenAI's `strict`.
        strict: Option<bool>,
    },
}

/// Extended thinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thinking {
    /// At most this many tokens (Anthropic `enabled` with `budget_tokens`).
    Budget(u64),
    /// As much as the model sees fit (Anthropic `adaptive`), guided by [`Request::effort`].
    Adaptive,
}

/// A web search the caller asked the provider to run (see [`Request::web_search`]): the
/// options every search tool shares. Anthropic's web search takes them all; Gemini's Google
/// Search grounding none of them, so they are left out there (named by
/// [`WebSearch::options_lost_on`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebSearch {
    /// Where the caller declared it: `tools[3]`, `web_search_options`.
    pub param: String,
    /// The caller's tool type (`web_search`, `web_search_preview`, `web_search_20250305`),
    /// or the parameter's name for Chat's `web_search_options`.
    pub kind: String,
    /// At most this many searches in one answer (Anthropic's `max_uses`).
    pub max_uses: Option<u64>,
    /// Only results from these domains.
    pub allowed_domains: Vec<String>,
    /// Never results from these domains.
    pub blocked_domains: Vec<String>,
    /// Where the user roughly is, to localize results.
    pub user_location: Option<UserLocation>,
}

/// An approximate user location (every search tool's `user_location`, `type: approximate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLocation {
    /// City name.
    pub city: Option<String>,
    /// Region or state.
    pub region: Option<String>,
    /// Two-letter ISO country code.
    pub country: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
}

/// What to do with a tool that runs on a provider's servers (Responses' `web_search`,
/// `file_search` …) when no backend the gateway can call runs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnsupportedTools {
    /// Leave it out of the request and name it in [`Request::dropped`]: the model answers
    /// without it.
    #[default]
    Drop,
    /// Refuse the request with a 400 naming the tool.
    Reject,
}

/// The names of what a decoder left out of the caller's request (`context_management`,
/// `cache_control`, `tools[5](web_search)` …), in the order met, each once. The gateway shows
/// them in `x-switchyard-dropped` and the access log, so names are kept short and safe for a
/// header: visible ASCII without commas, at most [`Dropped::MAX_NAME`] bytes, and at most
/// [`Dropped::MAX_NAMES`] of them (a caller can send any number of unknown fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    names: Vec<String>,
    more: bool,
}

/// Why generation stopped, in the gateway's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end of the turn.
    Stop,
    /// A stop sequence matched.
    StopSequence,
    /// The token limit was reached.
    Length,
    /// The model called tools and waits for results.
    ToolCalls,
    /// Content was filtered / refused.
    ContentFilter,
    /// The provider paused a long turn (Anthropic `pause_turn`); the caller may continue it.
    Pause,
}

/// A complete (non-streamed) chat response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The provider's response id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// The assistant's content: reasoning, text and tool calls, in order.
    pub content: Vec<Part<'static>>,
    /// Why it stopped.
    pub finish_reason: Option<FinishReason>,
    /// The matched stop sequence, when the provider says which.
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: Option<Usage>,
}

/// One step of a streamed response, between an upstream decoder and a caller encoder.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The response began (always first).
    Start {
        /// Response id.
        id: String,
        /// Answering model.
        model: String,
        /// Usage known at the start (Anthropic reports input tokens here).
        usage: Option<Usage>,
    },
    /// Generated text.
    Text(String),
    /// Reasoning text.
    Reasoning(String),
    /// The signature closing a reasoning block (Anthropic `signature_delta`).
    ReasoningSignature(String),
    /// Redacted reasoning (Anthropic `redacted_thinking`), opaque.
    RedactedReasoning(String),
    /// A tool call begins. `index` counts tool calls in this response from 0.
    ToolCallStart {
        /// Tool call index.
        index: u32,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// A piece of a tool call's JSON arguments text (pieces concatenate to the whole).
    ToolCallArguments {
        /// Tool call index.
        index: u32,
        /// The piece.
        fragment: String,
    },
    /// Generation stopped.
    Finish {
        /// Why.
        reason: FinishReason,
        /// The matched stop sequence, when known.
        stop_sequence: Option<String>,
    },
    /// Usage (may come after `Finish`; the last one wins).
    Usage(Usage),
    /// The stream ended properly.
    Done,
    /// The upstream reported an error inside the stream.
    Error {
        /// Its type/code.
        kind: String,
        /// Its message.
        message: String,
    },
}

/// A request or response the target format cannot carry, or a malformed one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The body is not valid JSON of the expected shape.
    #[error("invalid request: {message}")]
    Invalid {
        /// The parameter path at fault (`messages[2].content`).
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The parameter is valid but the backend's format cannot express it, and dropping it
    /// would change the answer.
    #[error("'{param}' is not supported by backends of provider {provider}: {why}")]
    Unsupported {
        /// The parameter path.
        param: String,
        /// The target provider.
        provider: &'static str,
        /// Why it cannot be dropped.
        why: &'static str,
    },
    /// The parameter asks for something the gateway itself does not do, whatever the backend
    /// (state kept between requests, tools that run on the provider's servers).
    #[error("'{param}' is not supported by this gateway: {why}")]
    Refused {
        /// The parameter path.
        param: String,
        /// Why.
        why: &'static str,
    },
}

// === impl WebSearch ===

impl WebSearch {
    /// Whether a backend of format `to` runs a web search of its own: Anthropic's server-side
    /// web search tool, Gemini's Google Search grounding.
    pub fn runs_on(to: crate::transcode::BackendFormat) -> bool {
        use crate::transcode::BackendFormat;
        match to {
            BackendFormat::Anthropic | BackendFormat::Gemini => true,
            BackendFormat::OpenAiChat | BackendFormat::Bedrock => false,
        }
    }

    /// The name in `x-switchyard-dropped` when the search is left out: `tools[3](web_search)`.
    pub fn dropped_name(&self) -> String {
        if self.param == self.kind {
            self.param.clone()
        } else {
            format!("{}({})", self.param, self.kind)
        }
    }

    /// The parameter a refusal names: `tools[3].type`, `web_search_options`.
    pub fn refused_param(&self) -> String {
        if self.param == self.kind {
            self.param.clone()
        } else {
            format!("{}.type", self.param)
        }
    }

    /// The refusal of a route whose `unsupportedTools` policy is `reject`, for a target that
    /// does not run the search.
    pub fn refusal(&self) -> TranslateError {
        TranslateError::Refused {
            param: self.refused_param(),
            why: "web search runs on the provider's servers: this backend has none the gateway \
                  can use (Anthropic and Gemini backends do, on a route that sets webSearch: \
                  backend), and this route refuses requests that ask for it \
                  (unsupportedTools: reject)",
        }
    }

    /// The options a backend of format `to` has no setting for, as `web_search.NAME`: the
    /// search still runs there, without them.
    pub fn options_lost_on(&self, to: crate::transcode::BackendFormat) -> Vec<&'static str> {
        use crate::transcode::BackendFormat;
        let mut lost = Vec::new();
        if to == BackendFormat::Gemini {
            if self.max_uses.is_some() {
                lost.push("web_search.max_uses");
            }
            if !self.allowed_domains.is_empty() {
                lost.push("web_search.allowed_domains");
            }
            if !self.blocked_domains.is_empty() {
                lost.push("web_search.blocked_domains");
            }
            if self.user_location.is_some() {
                lost.push("web_search.user_location");
            }
        }
        lost
    }
}

// === impl UserLocation ===

impl UserLocation {
    /// Reads `{type: approximate, city, region, country, timezone}` (the `type` and unknown
    /// fields are not checked: only the provider knows its newest kinds).
    pub fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let loc = UserLocation {
            city: s("city"),
            region: s("region"),
            country: s("country"),
            timezone: s("timezone"),
        };
        (loc != UserLocation::default()).then_some(loc)
    }

    /// `{type: approximate, …}` with the fields that are set.
    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("type".into(), "approximate".into());
        for (k, v) in [
            ("city", &self.city),
            ("region", &self.region),
            ("country", &self.country),
            ("timezone", &self.timezone),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), v.clone().into());
            }
        }
        Value::Object(o)
    }
}

// === impl Dropped ===

impl Dropped {
    /// The longest name kept (longer ones are cut).
    pub const MAX_NAME: usize = 64;
    /// The most names kept; more end [`Self::header_value`] with `...`.
    pub const MAX_NAMES: usize = 16;

    /// Notes that `name` was left out.
    pub fn push(&mut self, name: &str) {
        let clean: String = name
            .chars()
            .map(|c| match c {
                '!'..='~' if c != ',' => c,
                _ => '?',
            })
            .take(Self::MAX_NAME)
            .collect();
        if self.names.contains(&clean) {
            return;
        }
        if self.names.len() == Self::MAX_NAMES {
            self.more = true;
            return;
        }
        self.names.push(clean);
    }

    /// The names, in the order they were met.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names as one header value: `context_management, cache_control`, with a last
    /// `...` when more were left out than are kept. Always a valid header value.
    pub fn header_value(&self) -> String {
        let mut s = self.names.join(", ");
        if self.more {
            s.push_str(", ...");
        }
        s
    }
}

impl TranslateError {
    /// The parameter at fault.
    pub fn param(&self) -> &str {
        match self {
            TranslateError::Invalid { param, .. }
            | TranslateError::Unsupported { param, .. }
            | TranslateError::Refused { param, .. } => param,
        }
    }

    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Parses a tool call's arguments text into the JSON object every format can carry.
/// Empty text (a call without arguments) is `{}`; anything that is not an object is kept
/// whole under `_raw_arguments` rather than dropped, so nothing the model produced is lost.
pub fn arguments_object(text: &str) -> serde_json::Map<String, Value> {
    if text.trim().is_empty() {
        return serde_json::Map::new();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = serde_json::Map::new();
            m.insert("_raw_arguments".into(), Value::String(text.to_string()));
            m
        }
    }
}

/// The text of a list of parts (text parts only), joined without separators.
pub fn joined_text(parts: &[Part<'_>]) -> String {
    let mut s = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            s.push_str(&t.as_str());
        }
    }
    s
}

/// The conversation for a format whose user and assistant turns must alternate (Anthropic,
/// Gemini, Bedrock): a message whose role repeats joins the previous turn, which also keeps
/// a turn's tool results together. Messages with nothing to send are left out, and so are
/// [`Role::System`] turns: these formats fold them into their system instruction
/// ([`Request::folded_system`]), so the user turns around one join up.
pub(crate) struct Turns<'r, 'a>(Vec<(Side, Vec<Out<'r, 'a>>)>);

/// A side of a [`Turns`] conversation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    User,
    Assistant,
}

impl<'r, 'a> Turns<'r, 'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Turns(Vec::with_capacity(n))
    }

    pub(crate) fn push(&mut self, role: Role, blocks: Vec<Out<'r, 'a>>) {
        let side = match role {
            Role::User => Side::User,
            Role::Assistant => Side::Assistant,
            Role::System => return,
        };
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((s, last)) if *s == side => last.extend(blocks),
            _ => self.0.push((side, blocks)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `[{key: [blocks], "role": …}]`, the assistant's role named as the format names it
    /// (`key` sorts before `role`: `content`, `parts`).
    pub(crate) fn into_out(self, assistant: &'static str, key: &'static str) -> Out<'r, 'a> {
        Out::Array(
            self.0
                .into_iter()
                .map(|(role, blocks)| {
                    let role = match role {
                        Side::User => "user",
                        Side::Assistant => assistant,
                    };
                    Out::Turn(key, blocks, role)
                })
                .collect(),
        )
    }
}

/// Typed access to JSON fields for the decoders, with errors naming the parameter path.
pub(crate) mod access {
    use serde_json::Value;

    use super::TranslateError;

    pub(crate) fn field<'v>(
        v: &'v Value,
        name: &str,
        p: &str,
    ) -> Result<&'v Value, TranslateError> {
        v.get(name)
            .filter(|x| !x.is_null())
            .ok_or_else(|| TranslateError::invalid(format!("{p}.{name}"), "missing"))
    }

    pub(crate) fn str_of<'v>(v: &'v Value, p: &str) -> Result<&'v str, TranslateError> {
        v.as_str()
            .ok_or_else(|| TranslateError::invalid(p, "must be a string"))
    }

    pub(crate) fn arr_of<'v>(v: &'v Value, p: &str) -> Result<&'v Vec<Value>, TranslateError> {
        v.as_array()
            .ok_or_else(|| TranslateError::invalid(p, "must be an array"))
    }

    pub(crate) fn u64_of(v: &Value, p: &str) -> Result<u64, TranslateError> {
        v.as_u64()
            .ok_or_else(|| TranslateError::invalid(p, "must be a non-negative integer"))
    }

    pub(crate) fn f64_of(v: &Value, p: &str) -> Result<f64, TranslateError> {
        v.as_f64()
            .ok_or_else(|| TranslateError::invalid(p, "must be a number"))
    }
}
