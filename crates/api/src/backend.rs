//! `ModelBackend`: one upstream provider account.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretKeyRef};

/// One upstream provider account: where it is, how to authenticate, which models it serves
/// and what they cost.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "ModelBackend",
    namespaced,
    status = "ModelBackendStatus",
    shortname = "mb",
    category = "switchyard",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelBackendSpec {
    /// The wire format this backend speaks.
    pub provider: Provider,
    /// Base URL of the provider's API, e.g. `https://api.openai.com/v1`. Defaults per provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The upstream credentials. Omit for upstreams that need none (e.g. a local vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BackendAuth>,
    /// The model ids this backend serves, with their prices.
    #[schemars(length(min = 1))]
    pub models: Vec<BackendModel>,
    /// Time limits for calls to this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Most requests in flight to this backend at once, per gateway replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrency: Option<u32>,
    /// TLS settings for the upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// A forward proxy that upstream requests go through, instead of the one the gateway's
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` environment names (this one wins, and
    /// `NO_PROXY` does not apply to it). HTTPS goes through `CONNECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<BackendProxy>,
    /// Headers set on, or removed from, every upstream request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderModifier>,
    /// Other namespaces whose AIRoutes may reference this backend (`"*"` for every
    /// namespace). Routes in the backend's own namespace may always use it; any other
    /// cross-namespace reference is refused, in the spirit of Gateway API's ReferenceGrant:
    /// the owner of the credentials decides who may spend them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_route_namespaces: Vec<String>,
    /// Settings of `azure-openai` backends. The deployment is the model a route sends (its
    /// `backends[].model`, or the caller's model), so that one backend serves every
    /// deployment of an Azure OpenAI resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// Settings of `bedrock` backends. The model a route sends (its `backends[].model`, or
    /// the caller's model) is the Bedrock model id, inference profile id or ARN put in the
    /// Converse URL. Credentials come from `spec.auth.awsSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<BedrockSettings>,
}

/// Settings of a `bedrock` backend.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BedrockSettings {
    /// The AWS region requests are signed for, e.g. `us-east-1`. The default endpoint is
    /// `https://bedrock-runtime.{region}.amazonaws.com`. May be omitted only when
    /// `spec.endpoint` is such a URL, which names the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub region: Option<String>,
}

/// The Bedrock runtime endpoint of `region`.
pub fn bedrock_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// The region named by a Bedrock runtime endpoint (`https://bedrock-runtime.{region}.
/// amazonaws.com`, FIPS and `.com.cn` variants included).
pub fn bedrock_region_of(endpoint: &str) -> Option<&str> {
    let host = endpoint.split_once("://")?.1.split(['/', ':']).next()?;
    let rest = host
        .strip_prefix("bedrock-runtime-fips.")
        .or_else(|| host.strip_prefix("bedrock-runtime."))?;
    let (region, domain) = rest.split_once('.')?;
    (domain.starts_with("amazonaws.com") && !region.is_empty()).then_some(region)
}

impl ModelBackendSpec {
    /// The AWS region of a `bedrock` backend: `spec.bedrock.region`, or the one its endpoint
    /// names.
    pub fn bedrock_region(&self) -> Option<&str> {
        self.bedrock
            .as_ref()
            .and_then(|b| b.region.as_deref())
            .or_else(|| self.endpoint.as_deref().and_then(bedrock_region_of))
    }
}

/// Settings of an `azure-openai` backend.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSettings {
    /// The `api-version` query parameter sent with every request (default `2024-10-21`, the
    /// latest generally available data-plane version when this field was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub api_version: Option<String>,
}

/// The `api-version` sent to Azure OpenAI when `spec.azure.apiVersion` is not set.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

// The data plane uses it too, without depending on this crate.
pub use switchyard_types::Provider;

/// Upstream credentials: one key, or a pool of keys used in turn.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[x_kube(validation = Rule::new("[has(self.secretRef), has(self.keys), has(self.awsSecretRef)].filter(x, x).size() == 1").message("exactly one of secretRef, keys or awsSecretRef must be set"))]
#[serde(rename_all = "camelCase")]
pub struct BackendAuth {
    /// The Secret key holding the single upstream API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A pool of upstream keys, used in turn by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<WeightedKey>>,
    /// AWS credentials for SigV4 request signing (`bedrock` backends, which need them): a
    /// Secret with the keys `accessKeyId` and `secretAccessKey`, and `sessionToken` for
    /// temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_ref: Option<SecretRef>,
}

/// A reference to a whole Secret in the same namespace as the referring resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// The keys of an `awsSecretRef` Secret.
pub mod aws_secret_keys {
    /// The access key id (`AKIA…`, or `ASIA…` for temporary credentials).
    pub const ACCESS_KEY_ID: &str = "accessKeyId";
    /// The secret access key.
    pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
    /// The session token of temporary credentials (optional).
    pub const SESSION_TOKEN: &str = "sessionToken";
}

/// One key of a key pool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightedKey {
    /// The Secret key holding this upstream API key.
    pub secret_ref: SecretKeyRef,
    /// Relative share of requests sent with this key (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A model id served by a backend.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendModel {
    /// The model id as the provider names it, e.g. `gpt-4o-mini`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// What a million tokens of this model cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Prices in USD per million tokens, as decimal strings (e.g. `"2.50"`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// USD per million input (prompt) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_million: Option<String>,
    /// USD per million output (completion) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_million: Option<String>,
    /// USD per million input tokens read from the provider's prompt cache. The older name
    /// of `cacheReadPerMillion`, which wins when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<String>,
    /// USD per million input tokens read from the provider's prompt cache (OpenAI's cached
    /// input, Anthropic's and Bedrock's cache reads, Gemini's cached content). When left out:
    /// the built-in catalog's price for the model, else 0.1× input for Anthropic and
    /// Bedrock, 0.25× for Gemini, 0.5× for the OpenAI dialects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<String>,
    /// USD per million input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`). When left out: the
    /// catalog's price, else 1.25× input for Anthropic and Bedrock (the 5-minute lifetime;
    /// 1-hour writes, billed at 2×, are not told apart), 1× input elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<String>,
}

/// Time limits, as Go-style durations (`2s`, `500ms`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time to establish the TCP (and TLS) connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Time from sending the request to the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<String>,
    /// Longest silence between two chunks of a streamed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// Time for the whole upstream call, body included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
}

/// TLS settings for the upstream connection.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// Secret key holding a PEM bundle of CA certificates trusted for this backend instead
    /// of the gateway's trust store (the public roots, or the system's with
    /// `--upstream-roots system`). The bundle is reloaded when the Secret changes; a missing
    /// key or a bundle with no certificate refuses the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Server name presented in SNI and verified against the certificate, when it differs
    /// from the endpoint's host (e.g. an endpoint given by IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// A forward proxy for a backend's upstream requests.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendProxy {
    /// The proxy's URL, `http://host:port` (the connection to the proxy itself is plain TCP).
    pub url: String,
    /// Secret key holding `user:password` for the proxy's Basic authentication
    /// (`Proxy-Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<SecretKeyRef>,
}

/// Headers to set on, or remove from, upstream requests.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Headers set (replacing any value) on every upstream request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Header names removed from every upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Observed state of a ModelBackend.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelBackendStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
