//! OpenAI wire format: response bodies, stream chunks, error envelopes and embeddings.
//!
//! Field names and nesting follow the public API reference; the official Python SDK parses
//! these bodies, so a renamed or missing field is a test failure elsewhere.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// Stable so that tests can compare whole bodies modulo ids and timestamps.
pub const SYSTEM_FINGERPRINT: &str = "fp_switchyard_mock";
const OWNED_BY: &str = "switchyard-mock";
const ID_LEN: usize = 29;
const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// Reply text pieces; the first has no leading space so the concatenation reads as a sentence.
const FIRST_PIECE: &str = "Mock";
const PIECES: [&str; 12] = [
    " reply",
    " from",
    " switchyard",
    " with",
    " deterministic",
    " content",
    " for",
    " demos,",
    " tests",
    " and",
    " benchmarks",
    ".",
];

/// Which endpoint family a completion answers; decides the chunk shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions` (legacy text completions)
    Text,
}

/// An OpenAI error body plus the status it is sent with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

/// One generated reply, shared by the streamed and non-streamed renderings so both carry
/// the same text and usage.
#[derive(Debug, Clone)]
pub struct Completion {
    api: Api,
    id: String,
    created: u64,
    model: String,
    pieces: u32,
    finish_reason: &'static str,
    prompt_tokens: u64,
    /// The part of the prompt the simulated cache served.
    cached_tokens: u64,
}

/// The SSE event sequence of one streamed completion, produced lazily frame by frame.
#[derive(Debug)]
pub struct StreamPlan {
    completion: Completion,
    include_usage: bool,
    reset_after: Option<u32>,
    next: Step,
}

/// What a stream yields next.
#[derive(Debug)]
pub enum StreamEvent {
    /// One complete `data: …\n\n` event.
    Frame(Bytes),
    /// Abort the response without finishing it.
    Reset,
}

/// One input of an embeddings request.
#[derive(Debug, Clone, Copy)]
pub enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

/// How embedding vectors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    /// Little-endian `f32`s, base64-encoded; the Python SDK's default.
    Base64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Role,
    Content(u32),
    Finish,
    Usage,
    Done,
    End,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatCompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct TextCompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [TextChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// `usage` is absent without `include_usage`, `null` on ordinary chunks with it, and an object
/// on the final chunk; hence the nested option.
#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChatChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChatChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: EmbeddingVector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

// === impl ApiError ===

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub(crate) fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// An error with this status and message (other dialects render their own shapes).
    pub fn status_message(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, "invalid_request_error", message)
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided",
        )
        .with_code("invalid_api_key")
    }

    pub fn invalid_json() -> Self {
        Self::invalid_request("We could not parse the JSON body of your request.")
    }

    /// OpenAI's answer to a `previous_response_id` it does not hold (never stored, stored
    /// under another project's key, or expired).
    pub fn previous_response_not_found(id: &str) -> Self {
        Self::invalid_request(format!("Previous response with id '{id}' not found."))
            .with_param("previous_response_id")
            .with_code("previous_response_not_found")
    }

    pub fn missing_model() -> Self {
        Self::invalid_request("you must provide a model parameter")
    }

    pub fn missing_param(param: &'static str) -> Self {
        Self::invalid_request(format!("Missing required parameter: '{param}'."))
            .with_param(param)
            .with_code("missing_required_parameter")
    }

    pub fn empty_array(param: &'static str) -> Self {
        Self::invalid_request(format!(
            "Invalid '{param}': empty array. Expected an array with minimum length 1, \
             but got an empty array instead."
        ))
        .with_param(param)
        .with_code("empty_array")
    }

    pub fn invalid_type(param: &'static str, expected: &'static str) -> Self {
        Self::invalid_request(format!("Invalid type for '{param}': expected {expected}."))
            .with_param(param)
            .with_code("invalid_type")
    }

    pub fn invalid_value(param: &'static str, message: &'static str) -> Self {
        Self::invalid_request(message)
            .with_param(param)
            .with_code("invalid_value")
    }

    pub fn bad_knob(err: &crate::faults::KnobError) -> Self {
        Self::invalid_request(err.to_string())
    }

    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "Request body too large.",
        )
    }

    pub fn unreadable_body() -> Self {
        Self::invalid_request("Could not read the request body.")
    }

    pub fn not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} not allowed for {path}"),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model '{model}' does not exist"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// A model the presented key may not use: OpenAI answers a project without access to a
    /// model with 403 `model_not_found` (the key stays good for every other model).
    pub fn model_forbidden(model: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("Project `proj_switchyard_mock` does not have access to model `{model}`"),
        )
        .with_code("model_not_found")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The mock failed to encode its response.",
        )
    }

    /// The body a real provider sends with `status`, for `x-mock-status`.
    pub fn injected(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::invalid_api_key(),
            429 => Self::new(
                status,
                "rate_limit_error",
                "Rate limit reached for requests (injected by switchyard-mock).",
            )
            .with_code("rate_limit_exceeded"),
            503 => Self::new(
                status,
                "server_error",
                "The server is overloaded or not ready yet (injected by switchyard-mock).",
            ),
            500..=599 => Self::new(
                status,
                "server_error",
                "The server had an error while processing your request (injected by switchyard-mock).",
            ),
            _ => Self::new(
                status,
                "invalid_request_error",
                format!("Injected HTTP {} by switchyard-mock.", status.as_u16()),
            ),
        }
    }

    /// The `{"error": {...}}` envelope.
    pub fn to_bytes(&self) -> Bytes {
        let envelope = ErrorEnvelope {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        to_json(&envelope).unwrap_or_else(|_| {
            Bytes::from_static(
                br#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#,
            )
        })
    }
}

// === impl Completion ===

impl Completion {
    /// Plans a reply of `chunks` pieces, cut short by `max_tokens` (one piece counts as one
    /// token) with `finish_reason: "length"`, as a real model stops at its limit.
    pub fn new(
        api: Api,
        model: &str,
        prompt_tokens: u64,
        chunks: u32,
        max_tokens: Option<u64>,
    ) -> Self {
        let (pieces, finish_reason) = match max_tokens {
            Some(max) if max < u64::from(chunks) => {
                (u32::try_from(max).unwrap_or(chunks), "length")
            }
            _ => (chunks, "stop"),
        };
        let prefix = match api {
            Api::Chat => "chatcmpl-",
            Api::Text => "cmpl-",
        };
        Self {
            api,
            id: new_id(prefix),
            created: unix_now(),
            model: model.to_owned(),
            pieces,
            finish_reason,
            prompt_tokens,
            cached_tokens: 0,
        }
    }

    /// Notes the tokens the prompt cache served (never more than the prompt).
    pub fn set_cached(&mut self, tokens: u64) {
        self.cached_tokens = tokens.min(self.prompt_tokens);
    }

    pub fn usage(&self) -> Usage {
        let completion_tokens = u64::from(self.pieces);
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self.cached_tokens,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
            },
        }
    }

    /// The whole reply text: exactly the concatenation of the streamed deltas.
    pub fn text(&self) -> String {
        (0..self.pieces).map(piece).collect()
    }

    /// The non-streamed response body.
    pub fn to_json(&self) -> serde_json::Result<Bytes> {
        let text = self.text();
        match self.api {
            Api::Chat => to_json(&ChatCompletionBody {
                id: &self.id,
                object: "chat.completion",
                created: self.created,
                model: &self.model,
                choices: [ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: &text,
                        refusal: None,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: self.finish_reason,
                }],
                usage: self.usage(),
                system_fingerprint: SYSTEM_FINGERPRINT,
            }),
            Api::Text => to_json(&TextCompletionBody {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                choices: [TextChoice {
                    text: &text,
                    index: 0,
                    logprobs: None,
                    finish_reason: Some(self.finish_reason),
                }],
                usage: self.usage(),
                system_fingerprint: SYSTEM_FINGERPRINT,
            }),
        }
    }

    /// The streamed rendering; `reset_after` aborts it after that many content chunks.
    pub fn into_stream(self, include_usage: bool, reset_after: Option<u32>) -> StreamPlan {
        // Legacy completions have no role delta, so they start with content.
        let next = match self.api {
            Api::Chat => Step::Role,
            Api::Text => Step::Content(0),
        };
        StreamPlan {
            completion: self,
            include_usage,
            reset_after,
            next,
        }
    }
}

// === impl StreamPlan ===

impl StreamPlan {
    /// True once the plan has nothing left to yield.
    pub fn is_end(&self) -> bool {
        matches!(self.next, Step::End)
    }

    /// The next event, or `None` after `[DONE]` (or after a reset).
    pub fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            let frame = match self.next {
                Step::End => return None,
                Step::Role => {
                    self.next = Step::Content(0);
                    self.chunk(Some("assistant"), Some(""), None)
                }
                Step::Content(i) if i >= self.completion.pieces => {
                    self.next = Step::Finish;
                    continue;
                }
                Step::Content(i) => {
                    if self.reset_after.is_some_and(|n| i >= n) {
                        return Some(self.reset());
                    }
                    self.next = Step::Content(i + 1);
                    self.chunk(None, Some(piece(i)), None)
                }
                Step::Finish => {
                    // A reset asked for beyond the reply's length still cuts the stream,
                    // so the caller always sees the fault it requested.
                    if self.reset_after.is_some() {
                        return Some(self.reset());
                    }
                    self.next = if self.include_usage {
                        Step::Usage
                    } else {
                        Step::Done
                    };
                    let finish = self.completion.finish_reason;
                    self.chunk(None, None, Some(finish))
                }
                Step::Usage => {
                    self.next = Step::Done;
                    self.usage_chunk()
                }
                Step::Done => {
                    self.next = Step::End;
                    Some(Bytes::from_static(DONE_FRAME))
                }
            };
            // Encoding these fixed shapes cannot fail; should it ever, cutting the stream is
            // the only answer left once headers are out.
            return Some(match frame {
                Some(bytes) => StreamEvent::Frame(bytes),
                None => self.reset(),
            });
        }
    }

    fn reset(&mut self) -> StreamEvent {
        self.next = Step::End;
        StreamEvent::Reset
    }

    fn usage_field(&self) -> Option<Option<Usage>> {
        self.include_usage.then_some(None)
    }

    fn chunk(
        &self,
        role: Option<&'static str>,
        content: Option<&str>,
        finish_reason: Option<&str>,
    ) -> Option<Bytes> {
        let c = &self.completion;
        match c.api {
            Api::Chat => sse_frame(&ChatChunk {
                id: &c.id,
                object: "chat.completion.chunk",
                created: c.created,
                model: &c.model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: &[ChatChunkChoice {
                    index: 0,
                    delta: Delta { role, content },
                    logprobs: None,
                    finish_reason,
                }],
                usage: self.usage_field(),
            }),
            Api::Text => sse_frame(&TextChunk {
                id: &c.id,
                object: "text_completion",
                created: c.created,
                model: &c.model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: &[TextChoice {
                    text: content.unwrap_or(""),
                    index: 0,
                    logprobs: None,
                    finish_reason,
                }],
                usage: self.usage_field(),
            }),
        }
    }

    fn usage_chunk(&self) -> Option<Bytes> {
        let c = &self.completion;
        let usage = Some(Some(c.usage()));
        match c.api {
            Api::Chat => sse_frame(&ChatChunk {
                id: &c.id,
                object: "chat.completion.chunk",
                created: c.created,
                model: &c.model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: &[],
                usage,
            }),
            Api::Text => sse_frame(&TextChunk {
                id: &c.id,
                object: "text_completion",
                created: c.created,
                model: &c.model,
                system_fingerprint: SYSTEM_FINGERPRINT,
                choices: &[],
                usage,
            }),
        }
    }
}

// === impl EmbeddingInput ===

impl EmbeddingInput<'_> {
    /// Same estimate as for prompts: a token per four characters, or the token count.
    pub fn tokens(&self) -> u64 {
        match self {
            Self::Text(text) => estimate_tokens(text.chars().count()),
            Self::Tokens(tokens) => tokens.len() as u64,
        }
    }

    /// A unit vector seeded by the input's hash, so equal inputs embed equally across runs.
    pub fn vector(&self, dims: usize) -> Vec<f32> {
        let mut seed = match self {
            Self::Text(text) => fnv1a(FNV_OFFSET, text.as_bytes()),
            Self::Tokens(tokens) => tokens.iter().fold(FNV_OFFSET ^ 0x7f, |h, t| {
                fnv1a(h, &t.as_u64().unwrap_or(u64::MAX).to_le_bytes())
            }),
        };
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                let bits = splitmix64(&mut seed) >> 40;
                (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Base64 of the little-endian `f32` bytes, as OpenAI sends for `encoding_format: "base64"`.
pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `/v1/embeddings` response body.
pub fn embeddings_json(
    model: &str,
    inputs: &[EmbeddingInput<'_>],
    dims: usize,
    format: EncodingFormat,
) -> serde_json::Result<Bytes> {
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = input.vector(dims);
            EmbeddingData {
                object: "embedding",
                index,
                embedding: match format {
                    EncodingFormat::Float => EmbeddingVector::Float(vector),
                    EncodingFormat::Base64 => EmbeddingVector::Base64(encode_base64(&vector)),
                },
            }
        })
        .collect();
    let prompt_tokens = inputs.iter().map(EmbeddingInput::tokens).sum();
    to_json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// The `/v1/models` response body.
pub fn models_json(models: &[String], created: u64) -> serde_json::Result<Bytes> {
    to_json(&ModelList {
        object: "list",
        data: models.iter().map(|id| model_object(id, created)).collect(),
    })
}

/// The `/v1/models/{id}` response body.
pub fn model_json(id: &str, created: u64) -> serde_json::Result<Bytes> {
    to_json(&model_object(id, created))
}

fn model_object(id: &str, created: u64) -> ModelObject<'_> {
    ModelObject {
        id,
        object: "model",
        created,
        owned_by: OWNED_BY,
    }
}

/// A rough prompt size: a token per four characters, never zero.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64 / 4).max(1)
}

/// The text of the `i`th content chunk; static so streaming allocates only the frame.
pub fn piece(i: u32) -> &'static str {
    match i.checked_sub(1) {
        None => FIRST_PIECE,
        Some(j) => PIECES[j as usize % PIECES.len()],
    }
}

/// Seconds since the epoch, as in `created`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + ID_LEN);
    id.push_str(prefix);
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(ID_LEN));
    id
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from)
}

fn sse_frame<T: Serialize>(value: &T) -> Option<Bytes> {
    let mut buf = BytesMut::with_capacity(320);
    buf.put_slice(b"data: ");
    serde_json::to_writer((&mut buf).writer(), value).ok()?;
    buf.put_slice(b"\n\n");
    Some(buf.freeze())
}

#[cfg(test)]
mod tests;
