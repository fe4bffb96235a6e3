//! Provider wire formats for Switchyard: inbound decoding, upstream encoding, SSE framing,
//! usage extraction and error shapes. Pure code, no I/O and no kube, so it stays cheap to
//! fuzz and benchmark.

pub mod affinity;
pub mod anthropic;
pub mod bedrock;
pub mod chat;
pub mod error;
pub mod eventstream;
pub mod gemini;
pub mod json;
pub mod openai;
pub mod ratelimit;
pub mod responses;
pub mod rewrite;
pub mod scan;
mod split;
pub mod sse;
pub mod transcode;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod stream_parity_tests;
#[cfg(test)]
mod test_util;

pub use error::{ErrorSource, OpenAiError};

/// The inbound API operation a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages` (Anthropic Messages).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// `POST /v1/responses` (OpenAI Responses): passed through to backends that serve it
    /// (OpenAI, Azure OpenAI), translated to the chat call of every other backend.
    Responses,
}

impl Operation {
    /// The name used in metrics and spans (GenAI semantic conventions' operation names).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat",
            Operation::Completions => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "chat",
            Operation::CountTokens => "count_tokens",
            Operation::Responses => "responses",
        }
    }

    /// Whether responses to this operation may be streamed.
    pub fn can_stream(self) -> bool {
        match self {
            Operation::ChatCompletions
            | Operation::Completions
            | Operation::Messages
            | Operation::Responses => true,
            Operation::Embeddings | Operation::CountTokens => false,
        }
    }
}

/// Token usage of one response, in the gateway's own terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache (a cache read).
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`): billed above plain
    /// input by providers that charge for writes. Disjoint from `cached_input_tokens`.
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Input tokens neither read from nor written to the prompt cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}
