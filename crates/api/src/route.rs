//! `AIRoute`: which requests go where.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Condition;

/// Routes requests whose `model` matches to a weighted set of backends, with fallbacks.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "AIRoute",
    plural = "airoutes",
    namespaced,
    status = "AIRouteStatus",
    shortname = "air",
    category = "switchyard",
    printcolumn = r#"{"name":"Models","type":"string","jsonPath":".spec.match.models"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteSpec {
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub match_: RouteMatch,
    /// The primary backends, split by weight.
    #[x_kube(validation = Rule::new("self.exists(b, !has(b.weight) || b.weight > 0)").message("at least one backend needs a weight above 0"))]
    #[schemars(length(min = 1))]
    pub backends: Vec<RouteBackend>,
    /// Backends tried in order once the primary set has failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<RouteBackend>,
    /// When and how often to retry a failed upstream call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Time limit for the whole request, retries and fallbacks included (Go-style duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How a backend is chosen among the primary set (default `weighted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Prompt-cache affinity: keep one conversation on one backend and upstream key, so the
    /// provider's prompt cache warmed by one turn serves the next. `prefix` (the default)
    /// keys a conversation by the caller's `x-switchyard-affinity` header, else OpenAI's
    /// `prompt_cache_key`, else Anthropic's `metadata.user_id` (or OpenAI's
    /// `safety_identifier` / `user`), else a hash of its cacheable prefix (system prompt,
    /// tools, first message); `session` uses only the named keys; `none` picks at random by
    /// weight on every request. Backends and keys are chosen by weighted rendezvous hashing,
    /// so weights hold over many conversations and a conversation moves only when its
    /// backend is unhealthy or at `maxConcurrency`, or its key is resting. Applies to the
    /// `weighted` strategy (and among equally cheap backends with `cheapest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Whether a web search the caller asks for (the Responses `web_search` tool, Chat's
    /// `web_search_options`, Anthropic's `web_search_20250305`) runs on a translating
    /// backend's own search (default `unsupported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search: Option<WebSearch>,
    /// What to do with tools a backend cannot run for the caller (hosted tools such as
    /// web_search, file_search): drop them and name them in x-switchyard-dropped, or reject
    /// the request with 400 (default `drop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported_tools: Option<UnsupportedTools>,
    /// The output cap a budget reserves for a request that sets none (`max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens`): the request is admitted only if its
    /// input plus this many output tokens, at the highest price among the route's backends
    /// and fallbacks, fits the caller's budget (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub default_max_output_tokens: Option<u64>,
}

/// Which requests a route takes. All given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Model names as clients send them in `model`: exact names, or globs with `*` and `?`.
    #[schemars(length(min = 1))]
    pub models: Vec<String>,
    /// Request headers that must be present with these exact values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Names of the AIConsumers this route is for; empty means every caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
}

/// A request header that must have an exact value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// The exact value required.
    pub value: String,
}

/// One target of a route.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteBackend {
    /// The ModelBackend to send to.
    pub backend_ref: BackendRef,
    /// The model id sent upstream in place of the client's; defaults to the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Relative share of traffic among the primary backends (default 1; 0 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A reference to a ModelBackend, in the route's namespace unless `namespace` is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Name of the ModelBackend.
    pub name: String,
    /// Namespace of the ModelBackend; defaults to the route's own. A reference into another
    /// namespace is refused (`RefNotPermitted`) unless that ModelBackend lists the route's
    /// namespace in `spec.allowedRouteNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Retry policy for upstream calls.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Total attempts per backend, the first included (1 means no retry).
    #[schemars(range(min = 1, max = 10))]
    pub attempts: u32,
    /// Failures that may be retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RetryOn>,
    /// Base back-off between attempts (Go-style duration), doubled each time, with jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

// The data plane uses these too, without depending on this crate.
pub use switchyard_types::{Affinity, RetryOn, Strategy};

/// What to do with tools a backend cannot run for the caller (hosted tools such as
/// web_search, file_search): drop them and name them in x-switchyard-dropped, or reject the
/// request with 400.
// The CRD takes its description from this comment, not the field's (as for `Strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnsupportedTools {
    /// Leave them out of the request and name them in the `x-switchyard-dropped` response
    /// header and the access log: the model answers without them.
    #[default]
    Drop,
    /// Refuse the request with a 400 naming the tool (`tools[i].type`).
    Reject,
}

/// Whether a web search the caller asks for (the Responses `web_search` tool, Chat's
/// `web_search_options`, Anthropic's `web_search_20250305`) runs on a translating backend's own
/// search. Backends that serve the caller's API themselves (OpenAI and Azure OpenAI for
/// Responses callers, Anthropic for Anthropic callers) always get the request as sent.
// The CRD takes its description from this comment, not the field's (as for `Strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebSearch {
    /// Treated as any other tool the backend cannot run, as `unsupportedTools` says.
    #[default]
    Unsupported,
    /// Run by the backend's own search where it has one: Anthropic's server-side web search
    /// tool on Anthropic backends, Grounding with Google Search on Gemini backends (each
    /// billed by the provider per search). Options a backend has no setting for (Gemini takes
    /// no domain filter or location) are left out and named in `x-switchyard-dropped`. Other
    /// backends treat it as `unsupported` does.
    Backend,
}

/// Observed state of an AIRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `ResolvedRefs`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
