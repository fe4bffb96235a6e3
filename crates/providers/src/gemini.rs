//! Google Gemini API (`generateContent` / `streamGenerateContent?alt=sse`) as a backend
//! format: requests are encoded from the internal chat model (`convert`), complete responses
//! and stream chunks are decoded into it (`convert`, `stream`). Gemini's error bodies are read
//! by [`crate::error::parse_upstream_error`].
//!
//! Gemini is never a caller format, so there is no passthrough and no encoder for responses.
//! Two things Gemini lacks that the other formats rely on are made up here, deterministically:
//! tool-call ids (Gemini names calls only by function), and which function a tool result
//! answers (found from the earlier call with the result's id).

use serde::Deserialize;

use crate::Usage;

mod convert;
mod stream;

pub use convert::{decode_response, encode_request};
pub use stream::StreamDecoder;

/// The API version in the paths the gateway calls. `v1beta` is the version Google's own SDKs
/// use and the only one with `systemInstruction`, `responseJsonSchema` and thinking settings.
pub const API_VERSION: &str = "v1beta";

/// Gemini's `usageMetadata`. `promptTokenCount` already includes the cached tokens, and
/// `candidatesTokenCount` excludes thinking tokens, which are billed as output: the gateway's
/// [`Usage::output_tokens`] counts both, like OpenAI's `completion_tokens`.
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WireUsage {
    /// Prompt tokens, cached content included.
    #[serde(default)]
    pub prompt_token_count: u64,
    /// Generated tokens, thoughts excluded.
    #[serde(default)]
    pub candidates_token_count: u64,
    /// Prompt tokens served from the context cache.
    #[serde(default)]
    pub cached_content_token_count: u64,
    /// Tokens spent thinking.
    #[serde(default)]
    pub thoughts_token_count: u64,
    /// Tokens of tool-use prompts Gemini ran itself (search, code execution); billed as input.
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl WireUsage {
    /// In the gateway's terms.
    pub fn to_usage(self) -> Usage {
        Usage {
            // The upstream's numbers: saturate rather than wrap (or panic) on absurd ones.
            input_tokens: self
                .prompt_token_count
                .saturating_add(self.tool_use_prompt_token_count),
            output_tokens: self
                .candidates_token_count
                .saturating_add(self.thoughts_token_count),
            cached_input_tokens: self.cached_content_token_count,
            // Gemini's context caches are created by a separate call, never by a generation.
            cache_write_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests;
