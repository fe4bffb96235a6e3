//! The upstream wire formats.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A provider wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Provider {
    /// OpenAI's API.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Google Gemini (`generateContent`).
    #[serde(rename = "gemini")]
    Gemini,
    /// Azure OpenAI deployments.
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    /// AWS Bedrock Converse.
    #[serde(rename = "bedrock")]
    Bedrock,
    /// Any server speaking the OpenAI dialect: DeepSeek, Mistral, GLM, Groq, vLLM, Ollama …
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl Provider {
    /// The name used in manifests and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Bedrock => "bedrock",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The endpoint used when `spec.endpoint` is omitted, if the provider has a public one.
    pub fn default_endpoint(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com/v1"),
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com"),
            Provider::AzureOpenAi | Provider::Bedrock | Provider::OpenAiCompatible => None,
        }
    }
}
