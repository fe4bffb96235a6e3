//! Stream transcoding between wire formats: upstream event (SSE, or event-stream for Bedrock) → internal events → the
//! caller's SSE events, one event at a time (nothing is held back beyond the event being
//! translated), and whole-response translation for non-streamed answers.

use crate::{
    anthropic, bedrock,
    chat::{self, FinishReason, StreamEvent, TranslateError},
    gemini,
    openai::{self, chat::Dialect},
    responses, Usage,
};

/// A chat wire format a caller speaks (and a backend may speak too, except Responses, which
/// is passed through whole to backends that serve it and never translated to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions.
    OpenAiChat,
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses (`/v1/responses`): callers only; translated from every backend's chat
    /// API, except towards backends that serve it (passed through, see `Backend::serves_responses`).
    Responses,
}

/// A chat wire format a backend speaks: the caller formats backends speak too (not Responses,
/// which is caller-only), and those only backends speak. Kept apart from [`Format`] so that
/// nothing ever has to encode a response or a stream in a format no caller reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendFormat {
    /// OpenAI Chat Completions (OpenAI, Azure OpenAI, OpenAI-compatible servers).
    OpenAiChat,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
    /// Bedrock Converse (streams framed as AWS event-stream, see [`crate::eventstream`]).
    Bedrock,
}

impl From<Format> for BackendFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::OpenAiChat => BackendFormat::OpenAiChat,
            Format::Anthropic => BackendFormat::Anthropic,
            // Never translated to: its nearest backend format is Chat Completions, which is
            // how OpenAI-compatible backends serve Responses callers.
            Format::Responses => BackendFormat::OpenAiChat,
        }
    }
}

impl BackendFormat {
    /// Whether its streams are AWS event-stream messages rather than SSE events; each message
    /// goes to [`Transcoder::on_event`] as [`bedrock::envelope`] makes it.
    pub fn event_stream_framed(self) -> bool {
        self == BackendFormat::Bedrock
    }
}

/// What the gateway learned from one upstream event, for metrics and limits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Usage reported by this event.
    pub usage: Option<Usage>,
    /// The event carried generated content (for time to first token).
    pub content: bool,
    /// The response finished, for this reason.
    pub finish: Option<FinishReason>,
}

enum Decoder {
    OpenAi(openai::chat::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Bedrock(bedrock::StreamDecoder),
}

enum Encoder {
    OpenAi(openai::chat::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    Responses(Box<responses::StreamEncoder>),
}

/// A stateful stream translator for one response.
pub struct Transcoder {
    decoder: Decoder,
    encoder: Encoder,
    events: Vec<StreamEvent>,
    /// A start event has gone to the encoder.
    started: bool,
    done: bool,
    /// The upstream said its answer was complete: a finish reason, or its end-of-stream
    /// event (`[DONE]`, `message_stop`).
    complete: bool,
    /// The model named when the upstream's stream names none.
    model: Option<String>,
}

impl Transcoder {
    /// Translates a stream in format `from` (upstream) to format `to` (caller).
    /// `client_wants_usage`: an OpenAI caller asked for the usage chunk.
    /// A Responses caller gets the API's default settings echoed (see [`Self::for_responses`]).
    pub fn new(from: impl Into<BackendFormat>, to: Format, client_wants_usage: bool) -> Self {
        let encoder = match to {
            Format::OpenAiChat => {
                Encoder::OpenAi(openai::chat::StreamEncoder::new(client_wants_usage))
            }
            Format::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new()),
            Format::Responses => Encoder::Responses(Box::new(responses::StreamEncoder::new(
                responses::Echo::default_settings(),
            ))),
        };
        Self::with_encoder(from.into(), encoder)
    }

    /// Translates a stream in format `from` for a Responses caller whose request set `echo`.
    pub fn for_responses(from: impl Into<BackendFormat>, echo: responses::Echo) -> Self {
        let encoder = Encoder::Responses(Box::new(responses::StreamEncoder::new(echo)));
        Self::with_encoder(from.into(), encoder)
    }

    fn with_encoder(from: BackendFormat, encoder: Encoder) -> Self {
        Transcoder {
            decoder: match from {
                BackendFormat::OpenAiChat => Decoder::OpenAi(Default::default()),
                BackendFormat::Anthropic => Decoder::Anthropic(Default::default()),
                BackendFormat::Gemini => Decoder::Gemini(Default::default()),
                BackendFormat::Bedrock => Decoder::Bedrock(Default::default()),
            },
            encoder,
            events: Vec::with_capacity(4),
            started: false,
            done: false,
            complete: false,
            model: None,
        }
    }

    /// Names `model` as the answering model when the upstream does not (Bedrock never does),
    /// so callers see the model their request was served by rather than an empty name.
    pub fn naming_model(mut self, model: &str) -> Self {
        self.model = Some(model.to_string());
        self
    }

    /// Ends the caller's stream with an error event (the gateway's own: a broken or stalled
    /// upstream), in sequence with what was already sent.
    pub fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.events.push(StreamEvent::Error {
            kind: kind.to_string(),
            message: message.to_string(),
        });
        self.flush(out);
    }

    /// Translates one upstream event (its `data:` payload), appending the caller's bytes.
    pub fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Observed {
        match &mut self.decoder {
            Decoder::OpenAi(d) => d.decode(data, &mut self.events),
            Decoder::Anthropic(d) => d.decode(data, &mut self.events),
            Decoder::Gemini(d) => d.decode(data, &mut self.events),
            Decoder::Bedrock(d) => d.decode(data, &mut self.events),
        }
        self.complete |= self
            .events
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. } | StreamEvent::Done));
        self.flush(out)
    }

    /// Whether the upstream said its answer was complete (a finish reason, or its
    /// end-of-stream event). A stream that ends without it was cut short: the caller must
    /// get an error (see [`Self::error`]), not an ending [`Self::finish`] would make up.
    pub fn upstream_complete(&self) -> bool {
        self.complete
    }

    /// The upstream ended: closes the caller's stream properly if the upstream did not
    /// (some OpenAI-dialect servers end without `[DONE]`, Gemini never sends an end event).
    /// Only for an upstream that finished its answer (see [`Self::upstream_complete`]).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Observed {
        if !self.done {
            self.events.push(StreamEvent::Done);
        }
        self.flush(out)
    }

    /// Whether the translated stream has ended (done or error).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Observed {
        let mut seen = Observed::default();
        let mut events = std::mem::take(&mut self.events);
        for mut ev in events.drain(..) {
            // Every caller format opens with a start event: a stream whose first event is
            // something else (a decoder that saw no start) gets an empty one first.
            if !self.started && !matches!(ev, StreamEvent::Start { .. } | StreamEvent::Error { .. })
            {
                self.started = true;
                self.encoder.encode(
                    StreamEvent::Start {
                        id: String::new(),
                        model: String::new(),
                        usage: None,
                    },
                    out,
                );
            }
            if let (StreamEvent::Start { model, .. }, Some(default)) = (&mut ev, &self.model) {
                if model.is_empty() {
                    model.clone_from(default);
                }
            }
            match &ev {
                StreamEvent::Usage(u) => seen.usage = Some(*u),
                StreamEvent::Start { usage, .. } => {
                    self.started = true;
                    if let Some(u) = usage {
                        seen.usage = Some(*u);
                    }
                }
                StreamEvent::Text(_)
                | StreamEvent::Reasoning(_)
                | StreamEvent::ToolCallStart { .. } => seen.content = true,
                StreamEvent::Finish { reason, .. } => seen.finish = Some(*reason),
                StreamEvent::Done | StreamEvent::Error { .. } => self.done = true,
                _ => {}
            }
            self.encoder.encode(ev, out);
        }
        self.events = events;
        seen
    }
}

impl Encoder {
    fn encode(&mut self, ev: StreamEvent, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAi(e) => e.encode(ev, out),
            Encoder::Anthropic(e) => e.encode(ev, out),
            Encoder::Responses(e) => e.encode(ev, out),
        }
    }
}

/// A translated complete response.
pub type Translated = (Vec<u8>, Option<Usage>, Option<FinishReason>);

/// Translates a complete response body from `from` to `to`, returning the caller's body and
/// the usage / finish reason it reported.
pub fn response(
    from: impl Into<BackendFormat>,
    to: Format,
    body: &[u8],
) -> Result<Translated, TranslateError> {
    response_in(from.into(), to, None, body, None)
}

/// Translates a complete response like [`response`] (or [`response_to_responses`] with
/// `echo`), naming `model` as the answering model when the upstream's answer names none.
pub fn response_naming_model(
    from: impl Into<BackendFormat>,
    to: Format,
    echo: Option<&responses::Echo>,
    body: &[u8],
    model: &str,
) -> Result<Translated, TranslateError> {
    response_in(from.into(), to, echo, body, Some(model))
}

/// Translates a complete response body from `from` for a Responses caller whose request set
/// `echo`.
pub fn response_to_responses(
    from: impl Into<BackendFormat>,
    echo: &responses::Echo,
    body: &[u8],
) -> Result<Translated, TranslateError> {
    response_in(from.into(), Format::Responses, Some(echo), body, None)
}

fn response_in(
    from: BackendFormat,
    to: Format,
    echo: Option<&responses::Echo>,
    body: &[u8],
    model: Option<&str>,
) -> Result<Translated, TranslateError> {
    let mut resp = match from {
        BackendFormat::OpenAiChat => openai::chat::decode_response(body)?,
        BackendFormat::Anthropic => anthropic::decode_response(body)?,
        BackendFormat::Gemini => gemini::decode_response(body)?,
        BackendFormat::Bedrock => bedrock::decode_response(body)?,
    };
    if let Some(m) = model.filter(|_| resp.model.is_empty()) {
        resp.model = m.to_string();
    }
    let out = match to {
        Format::OpenAiChat => openai::chat::encode_response(&resp),
        Format::Anthropic => anthropic::encode_response(&resp),
        Format::Responses => match echo {
            Some(e) => responses::encode_response(&resp, e),
            None => responses::encode_response(&resp, &responses::Echo::default_settings()),
        },
    };
    Ok((out, resp.usage, resp.finish_reason))
}

/// Decodes a request in the caller's format `from` for a backend of `target`, and encodes it
/// in `to` for `upstream_model`.
pub fn request(
    from: Format,
    to: impl Into<BackendFormat>,
    dialect: Dialect,
    target: &'static str,
    body: &[u8],
    upstream_model: &str,
) -> Result<Vec<u8>, TranslateError> {
    encode_request(
        &decode_request(from, target, body)?,
        to,
        dialect,
        upstream_model,
    )
}

/// Decodes a request in the caller's format `from` into the chat model, for translation to a
/// backend of provider `target` (named in errors only: what decodes for one backend decodes
/// for all, so the result may serve every target of a request). What it left out is in its
/// [`chat::Request::dropped`]; a Responses request's hosted tools are left out too.
pub fn decode_request<'a>(
    from: Format,
    target: &'static str,
    body: &'a [u8],
) -> Result<chat::Request<'a>, TranslateError> {
    match from {
        Format::OpenAiChat => openai::chat::decode_request(body, target),
        Format::Anthropic => anthropic::decode_request(body, target),
        Format::Responses => Ok(responses::decode_request(body)?.request),
    }
}

/// Encodes an already decoded request in `to` for `upstream_model`.
pub fn encode_request(
    req: &chat::Request<'_>,
    to: impl Into<BackendFormat>,
    dialect: Dialect,
    upstream_model: &str,
) -> Result<Vec<u8>, TranslateError> {
    match to.into() {
        BackendFormat::OpenAiChat => openai::chat::encode_request(req, upstream_model, dialect),
        BackendFormat::Anthropic => anthropic::encode_request(req, upstream_model),
        BackendFormat::Gemini => gemini::encode_request(req, upstream_model),
        BackendFormat::Bedrock => bedrock::encode_request(req, upstream_model),
    }
}
