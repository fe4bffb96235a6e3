//! Amazon Bedrock's Converse API (`/model/{modelId}/converse`, `/converse-stream`) as a backend
//! format: requests are encoded from the internal chat model (`convert`), complete responses
//! and stream events are decoded into it (`convert`, `stream`).
//!
//! `ConverseStream` is framed as AWS event-stream messages, not SSE: [`crate::eventstream`]
//! splits them and [`stream::envelope`] turns each into the JSON the stream decoder reads (the
//! `ConverseStreamOutput` union's shape, `{"contentBlockDelta": {...}}`), so the transcoder
//! works on it as on any other format's events. Requests are signed with SigV4 by the gateway,
//! not here: signing needs credentials and the clock.
//!
//! Bedrock is never a caller format, so there is no passthrough and no encoder for responses.

use serde::Deserialize;

use crate::Usage;

mod convert;
mod stream;

pub use convert::{decode_response, encode_request, finish_from_bedrock};
pub use stream::{envelope, StreamDecoder};

/// The SigV4 service name of the Bedrock runtime endpoints.
pub const SIGNING_SERVICE: &str = "bedrock";

/// Converse's `usage`. `inputTokens` leaves out the tokens read from and written to the prompt
/// cache (as Anthropic's `input_tokens` does); the gateway's [`Usage::input_tokens`] counts
/// them all.
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WireUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

impl WireUsage {
    /// In the gateway's terms.
    pub fn to_usage(self) -> Usage {
        Usage {
            // The upstream's numbers: saturate rather than wrap (or panic) on absurd ones.
            input_tokens: self
                .input_tokens
                .saturating_add(self.cache_read_input_tokens)
                .saturating_add(self.cache_write_input_tokens),
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

/// The percent-encoded path of a Converse call for `model` (a model id, inference profile id
/// or ARN: `:` and `/` in it must not be read as path syntax). Bedrock's SDKs encode every
/// byte outside RFC 3986's unreserved set, and the request is signed over exactly this path.
pub fn path(model: &str, stream: bool) -> String {
    format!(
        "/model/{}{}",
        model_segment(model),
        if stream {
            "/converse-stream"
        } else {
            "/converse"
        }
    )
}

/// `model` as one percent-encoded path segment (see [`path`]).
pub fn model_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len() + 8);
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
