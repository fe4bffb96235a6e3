//! The immutable routing table and request matching.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use switchyard_providers::{
    chat::UnsupportedTools, openai::chat::Dialect, transcode::BackendFormat, Operation,
};
use switchyard_types::{Affinity, Provider, RetryOn, Strategy};

pub use crate::pricing::Pricing;
use crate::{
    clock::now_ms,
    glob::Glob,
    health::BackendState,
    keys::{KeyReport, KeyState},
    retry_budget::RetryBudget,
};

/// The longest duration a configured timeout or back-off takes effect with (24 h).
///
/// The data plane adds these to `Instant`s (deadlines, back-off wake-ups), which panics on
/// overflow: `total: 999999999h` is accepted by the duration syntax, so the compiler caps
/// it, once, rather than trusting it at every addition. Nothing sensible waits longer.
pub const MAX_CONFIGURED_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Index of a route in [`RoutingTable::routes`].
pub(crate) type RouteId = usize;

/// A compiled, immutable routing table. A new one is built on every configuration change and
/// swapped in whole; requests `load()` it once and use that snapshot to the end.
#[derive(Default)]
pub struct RoutingTable {
    pub(crate) generation: u64,
    pub(crate) routes: Vec<Route>,
    /// Exact model name → candidate routes, best first.
    pub(crate) exact: HashMap<Arc<str>, Vec<RouteId>>,
    /// Glob patterns, most specific first, each with its candidate route.
    pub(crate) globs: Vec<(Glob, RouteId)>,
    pub(crate) backends: Vec<Arc<Backend>>,
    pub(crate) consumers: crate::consumer::Consumers,
    /// Exact model names clients may ask for, sorted, for `GET /v1/models`.
    pub(crate) models: Vec<Arc<str>>,
}

/// One compiled AIRoute.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name`, the metric label.
    pub name: Arc<str>,
    pub(crate) match_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) match_consumers: Vec<String>,
    /// The primary backends.
    pub targets: Vec<Target>,
    /// Tried in order after the primary set has failed.
    pub fallbacks: Vec<Target>,
    /// Retry policy per backend.
    pub retry: Retry,
    /// Bound on the whole request, retries included.
    pub timeout: Option<Duration>,
    /// How the primary backend is chosen.
    pub strategy: Strategy,
    /// Which requests count as one conversation, kept on one backend and key.
    pub affinity: Affinity,
    /// What to do with hosted tools (Responses' `web_search` …) no backend runs for the
    /// caller: drop and name them, or refuse the request.
    pub unsupported_tools: UnsupportedTools,
    /// `spec.webSearch: backend`: a caller's web search runs on the backend's own search
    /// where it has one (Anthropic, Gemini) when the request is translated for it.
    pub backend_web_search: bool,
    /// `spec.defaultMaxOutputTokens`: the output cap budgets reserve when a request sets none.
    pub default_max_output_tokens: Option<u64>,
    /// Retry budget, bound from the state registry when the table is published.
    pub(crate) budget: OnceLock<Arc<RetryBudget>>,
}

/// One backend a route may send to, with the model name to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The upstream model; `None` forwards the client's model unchanged.
    pub model: Option<Arc<str>>,
    /// Relative weight among the primary set.
    pub weight: u32,
    /// Prices of `model` at this backend, if configured.
    pub pricing: Pricing,
    /// This target's identity in rendezvous hashing (from its backend and model, so it
    /// survives reloads and is the same on every replica).
    pub(crate) seed: u64,
}

/// Retry policy, compiled.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per backend, the first included.
    pub attempts: u32,
    /// Base back-off, doubled per attempt, with jitter.
    pub backoff: Duration,
    on_5xx: bool,
    on_429: bool,
    on_timeout: bool,
    on_connect: bool,
}

/// A class of upstream failure, for retry decisions and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// 5xx status.
    ServerError,
    /// 429 status.
    RateLimited,
    /// No answer in time.
    Timeout,
    /// No connection.
    Connect,
}

impl Retry {
    /// With no policy configured: one attempt per backend, and moving on to a fallback on any
    /// failure that happened before the response started.
    pub const DEFAULT: Retry = Retry {
        attempts: 1,
        backoff: Duration::from_millis(100),
        on_5xx: true,
        on_429: true,
        on_timeout: true,
        on_connect: true,
    };

    /// `attempts` per backend (at least 1), retrying the failures in `on` (every class when
    /// empty).
    pub fn new(attempts: u32, on: &[RetryOn], backoff: Duration) -> Self {
        let has = |o| on.contains(&o);
        let all = on.is_empty();
        Retry {
            attempts: attempts.max(1),
            backoff,
            on_5xx: all || has(RetryOn::ServerError),
            on_429: all || has(RetryOn::RateLimited),
            on_timeout: all || has(RetryOn::Timeout),
            on_connect: all || has(RetryOn::Connect),
        }
    }

    /// Whether a failure of this class may be retried (or passed to a fallback).
    pub fn retries(&self, class: FailureClass) -> bool {
        match class {
            FailureClass::ServerError => self.on_5xx,
            FailureClass::RateLimited => self.on_429,
            FailureClass::Timeout => self.on_timeout,
            FailureClass::Connect => self.on_connect,
        }
    }
}

/// One compiled ModelBackend.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/name`, the metric label.
    pub name: Arc<str>,
    /// The wire format.
    pub provider: Provider,
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The wire format the provider speaks, and its OpenAI dialect where it speaks OpenAI's.
    pub format: BackendFormat,
    /// Differences between servers that speak the OpenAI dialect.
    pub dialect: Dialect,
    /// Upstream URIs, built once (see [`Backend::uri`]).
    pub(crate) uris: Uris,
    /// The backend's own Responses API URI, for backends that serve it (see
    /// [`Backend::serves_responses`]).
    pub(crate) responses: Option<Uri>,
    /// Upstream credentials, ready to send.
    pub(crate) keys: Vec<UpstreamKey>,
    /// Served models and their prices.
    pub(crate) models: HashMap<String, Pricing>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Most requests in flight, per replica.
    pub max_concurrency: Option<u32>,
    /// Headers set on every upstream request.
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed from every upstream request.
    pub remove_headers: Vec<HeaderName>,
    /// Signs each request just before it is sent (Bedrock's SigV4), after every header is set.
    pub signer: Option<Arc<crate::RequestSigner>>,
    /// The `Host` of every request (the endpoint's authority, without a default port).
    pub host: HeaderValue,
    /// How connections to it are made: TLS trust, server name, proxy.
    pub egress: crate::Egress,
    /// Health, load and latency, bound from the state registry when the table is published
    /// (so it survives reloads).
    pub(crate) state: OnceLock<Arc<BackendState>>,
}

/// Where a backend's requests go, built when the table is compiled.
#[derive(Debug)]
pub struct BackendUris(Uris);

impl BackendUris {
    /// The model travels in the body: one URI per operation (chat completions, completions,
    /// embeddings, messages, count tokens).
    pub fn fixed(uris: [Uri; 5]) -> Self {
        BackendUris(Uris::Fixed(uris))
    }

    /// The model is part of the path: `{prefix}{model}{suffix}`, with a (plain, streamed)
    /// suffix per operation in [`BackendUris::fixed`]'s order, built now for each of
    /// `models`. With `encode_model` the model is percent-encoded into its path segment;
    /// without, only plain names are allowed. `Err(i)`: `models[i]` cannot be put in a URL.
    pub fn per_model<'m>(
        prefix: String,
        suffixes: [(String, String); 5],
        encode_model: bool,
        models: impl IntoIterator<Item = &'m str>,
    ) -> Result<Self, usize> {
        let mut paths = ModelPaths {
            prefix,
            suffixes,
            listed: HashMap::new(),
            encode_model,
        };
        for (i, m) in models.into_iter().enumerate() {
            let uris = (encode_model || is_plain_model_name(m))
                .then(|| paths.build(m))
                .flatten()
                .ok_or(i)?;
            paths.listed.insert(m.to_string(), uris);
        }
        Ok(BackendUris(Uris::PerModel(paths)))
    }
}

/// What [`BackendUris`] holds.
#[derive(Debug)]
pub(crate) enum Uris {
    /// The model travels in the body: one URI per operation.
    Fixed([Uri; 5]),
    /// The model is part of the path (Gemini's `models/{model}:generateContent`, Azure's
    /// `deployments/{deployment}/…`).
    PerModel(ModelPaths),
}

/// URIs with the model in the path: `{prefix}{model}{suffix}`, the suffix per operation and
/// per streaming. Built when the table is compiled for every model the backend lists; a
/// model it does not list (a route without a rewrite forwards the caller's) is put in a URI
/// per request, and only if it is a plain name, so that a caller cannot reach another path.
#[derive(Debug)]
pub(crate) struct ModelPaths {
    pub(crate) prefix: String,
    /// Per operation, in [`op_index`] order: (plain, streamed).
    pub(crate) suffixes: [(String, String); 5],
    pub(crate) listed: HashMap<String, Box<[(Uri, Uri); 5]>>,
    /// The model is percent-encoded into its path segment (Bedrock's ids and ARNs hold `:`
    /// and `/`), so any model name is safe in the path; otherwise only plain names are.
    pub(crate) encode_model: bool,
}

pub(crate) fn op_index(op: Operation) -> usize {
    match op {
        Operation::ChatCompletions => 0,
        Operation::Completions => 1,
        Operation::Embeddings => 2,
        Operation::Messages => 3,
        Operation::CountTokens => 4,
        // Only backends that serve it are called with it, on their own URI
        // (`Backend::responses`); other backends get it translated to their chat call.
        Operation::Responses => 0,
    }
}

impl ModelPaths {
    /// Builds the URIs of one model; `None` if they are not valid URIs.
    pub(crate) fn build(&self, model: &str) -> Option<Box<[(Uri, Uri); 5]>> {
        let model = self.segment(model);
        let uri = |suffix: &str| {
            format!("{}{model}{suffix}", self.prefix)
                .parse::<Uri>()
                .ok()
        };
        let mut out = Vec::with_capacity(5);
        for (plain, streamed) in &self.suffixes {
            out.push((uri(plain)?, uri(streamed)?));
        }
        let arr: [(Uri, Uri); 5] = out.try_into().ok()?;
        Some(Box::new(arr))
    }

    fn segment<'m>(&self, model: &'m str) -> std::borrow::Cow<'m, str> {
        if self.encode_model {
            switchyard_providers::bedrock::model_segment(model).into()
        } else {
            model.into()
        }
    }
}

/// A model name that is safe to put in a URL path as one segment.
fn is_plain_model_name(m: &str) -> bool {
    m.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An upstream key as the header to send, built per provider when the table is compiled
/// (`Authorization: Bearer <key>` for OpenAI dialects, `x-api-key: <key>` for Anthropic,
/// `x-goog-api-key: <key>` for Gemini, `api-key: <key>` for Azure OpenAI).
/// The value is marked sensitive so it is never printed.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    /// The header name.
    pub name: HeaderName,
    /// The header value.
    pub header: HeaderValue,
    /// Relative weight in the pool.
    pub weight: u32,
    /// SHA-256 of the key: identifies its state across reloads without keeping the key twice.
    pub(crate) digest: [u8; 32],
    /// Position in the pool, for reports.
    pub index: usize,
    pub(crate) state: OnceLock<Arc<KeyState>>,
}

/// Which upstream key to send.
#[derive(Debug)]
pub enum KeyChoice<'a> {
    /// The backend needs no credentials.
    None,
    /// This key.
    Key(&'a UpstreamKey),
    /// Every key is resting or disabled; the first is usable again in this long.
    Exhausted(Option<Duration>),
}

/// What redacted text shows where a key was.
pub const REDACTED: &str = "[redacted]";

/// Keys shorter than this are not looked for in text: they would match ordinary words (and
/// no provider issues keys that short).
const MIN_REDACTED_LEN: usize = 4;

// === impl UpstreamKey ===

impl UpstreamKey {
    /// The key sent as `name: header` (mark the value sensitive), at `weight` in the pool, at
    /// position `index`; `digest` is the key's SHA-256 ([`crate::consumer::digest`]), which
    /// keeps its state across reloads.
    pub fn new(
        name: HeaderName,
        header: HeaderValue,
        weight: u32,
        digest: [u8; 32],
        index: usize,
    ) -> Self {
        UpstreamKey {
            name,
            header,
            weight,
            digest,
            index,
            state: OnceLock::new(),
        }
    }

    /// The key's rendezvous identity: from its digest, so the same key has the same one on
    /// every replica and across reloads, and the key itself is not used.
    fn seed(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.digest[..8]);
        u64::from_le_bytes(b)
    }

    /// A stable identity of the key (the same on every replica and across reloads, and not
    /// the key): what a stored response is pinned to.
    pub fn id(&self) -> u64 {
        self.seed()
    }

    /// The key's runtime state.
    pub fn state(&self) -> &Arc<KeyState> {
        self.state.get_or_init(|| Arc::new(KeyState::default()))
    }

    /// The secret as configured: the header value without its `Bearer ` scheme. Only for
    /// finding it in text to redact; it never leaves this crate.
    fn secret(&self) -> &[u8] {
        let v = self.header.as_bytes();
        if self.name == http::header::AUTHORIZATION {
            v.strip_prefix(b"Bearer ").unwrap_or(v)
        } else {
            v
        }
    }

    /// The forms of the key an upstream may quote back: the key itself (which covers
    /// `Bearer <key>` and any other wrapping) and its base64, standard and URL-safe, without
    /// padding (which covers the padded forms but for their `=`).
    fn needles(&self) -> [Vec<u8>; 3] {
        use base64::Engine as _;
        let secret = self.secret();
        let b64 = |e: &base64::engine::GeneralPurpose| e.encode(secret).into_bytes();
        [
            secret.to_vec(),
            b64(&base64::engine::general_purpose::STANDARD_NO_PAD),
            b64(&base64::engine::general_purpose::URL_SAFE_NO_PAD),
        ]
    }
}

/// `text` with every occurrence of each needle replaced by [`REDACTED`]; `None` when there
/// was none.
fn redact_needles(text: &[u8], needles: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for needle in needles.iter().filter(|n| n.len() >= MIN_REDACTED_LEN) {
        let hay = out.as_deref().unwrap_or(text);
        if !hay.windows(needle.len()).any(|w| w == needle.as_slice()) {
            continue;
        }
        let mut replaced = Vec::with_capacity(hay.len());
        let mut i = 0;
        while i < hay.len() {
            if hay[i..].starts_with(needle) {
                replaced.extend_from_slice(REDACTED.as_bytes());
                i += needle.len();
            } else {
                replaced.push(hay[i]);
                i += 1;
            }
        }
        out = Some(replaced);
    }
    out
}

/// Backend time limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect: Option<Duration>,
    /// Request sent to response headers.
    pub first_byte: Option<Duration>,
    /// Between two body chunks.
    pub idle: Option<Duration>,
    /// Whole upstream call.
    pub total: Option<Duration>,
}

/// The result of matching a request.
pub struct Matched<'t> {
    /// The route.
    pub route: &'t Route,
    /// The configured pattern that matched: the model label for metrics (never the raw
    /// client string when a glob matched, so label cardinality stays bounded).
    pub model_label: &'t Arc<str>,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// A table of `routes`, found by exact model name (`exact`: each name's candidate routes,
    /// best first) or by glob (`globs`, in precedence order among equally specific ones), as
    /// indexes into `routes`.
    pub fn new(
        generation: u64,
        routes: Vec<Route>,
        exact: HashMap<Arc<str>, Vec<usize>>,
        mut globs: Vec<(Glob, usize)>,
        backends: Vec<Arc<Backend>>,
        consumers: crate::consumer::Consumers,
    ) -> Self {
        // Lookup takes the first glob that matches; a stable sort keeps route precedence
        // among equally specific ones.
        globs.sort_by_key(|(g, _)| g.specificity());
        let mut models: Vec<Arc<str>> = exact.keys().cloned().collect();
        models.sort_unstable();
        RoutingTable {
            generation,
            routes,
            exact,
            globs,
            backends,
            consumers,
            models,
        }
    }

    /// The generation this table was compiled as (0 = the empty table before any load).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every backend that compiled.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Exact model names clients may ask for.
    pub fn models(&self) -> &[Arc<str>] {
        &self.models
    }

    /// Finds the route for `model`, checking header and consumer conditions. Exact names win
    /// over globs; among globs the most specific wins.
    pub fn route(
        &self,
        model: &str,
        headers: &HeaderMap,
        consumer: Option<&str>,
    ) -> Option<Matched<'_>> {
        if let Some((key, ids)) = self.exact.get_key_value(model) {
            for &id in ids {
                let route = &self.routes[id];
                if route.admits(headers, consumer) {
                    return Some(Matched {
                        route,
                        model_label: key,
                    });
                }
            }
        }
        for (glob, id) in &self.globs {
            let route = &self.routes[*id];
            if glob.matches(model) && route.admits(headers, consumer) {
                return Some(Matched {
                    route,
                    model_label: glob.pattern(),
                });
            }
        }
        None
    }

    /// The consumer registry.
    pub fn consumers(&self) -> &crate::consumer::Consumers {
        &self.consumers
    }

    /// A JSON view of the table for `/debug/routes`. Secrets are never included: keys show
    /// only as a count.
    pub fn debug_view(&self) -> serde_json::Value {
        let target = |t: &Target| {
            serde_json::json!({
                "backend": &*t.backend.name,
                "model": t.model.as_deref(),
                "weight": t.weight,
                "pricing": t.pricing,
            })
        };
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                let models: Vec<&str> = self
                    .exact
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|&i| std::ptr::eq(&self.routes[i], r)))
                    .map(|(k, _)| &**k)
                    .chain(
                        self.globs
                            .iter()
                            .filter(|(_, i)| std::ptr::eq(&self.routes[*i], r))
                            .map(|(g, _)| g.as_str()),
                    )
                    .collect();
                serde_json::json!({
                    "name": &*r.name,
                    "models": models,
                    "headers": r.match_headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("<binary>"))).collect::<Vec<_>>(),
                    "consumers": r.match_consumers,
                    "strategy": r.strategy.as_str(),
                    "unsupportedTools": match r.unsupported_tools {
                        UnsupportedTools::Drop => "drop",
                        UnsupportedTools::Reject => "reject",
                    },
                    "webSearch": if r.backend_web_search { "backend" } else { "unsupported" },
                    "backends": r.targets.iter().map(target).collect::<Vec<_>>(),
                    "fallbacks": r.fallbacks.iter().map(target).collect::<Vec<_>>(),
                    "retry": {"attempts": r.retry.attempts, "backoffMs": r.retry.backoff.as_millis() as u64},
                    "timeoutMs": r.timeout.map(|t| t.as_millis() as u64),
                })
            })
            .collect();
        let backends: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                let mut models: Vec<_> = b.models.keys().map(String::as_str).collect();
                models.sort_unstable();
                serde_json::json!({
                    "name": &*b.name,
                    "provider": b.provider.as_str(),
                    "endpoint": redact_url(&b.endpoint),
                    "models": models,
                    "keys": b.key_reports(),
                    "healthy": b.state().is_healthy(),
                    "inFlight": b.state().in_flight(),
                    "latencyEstimateUs": b.state().latency_estimate_us(),
                    "maxConcurrency": b.max_concurrency,
                })
            })
            .collect();
        serde_json::json!({
            "generation": self.generation,
            "routes": routes,
            "backends": backends,
            "consumers": self.consumers.names(),
        })
    }
}

// === impl Route ===

impl Route {
    /// A route taking requests with every header of `match_headers` and, when
    /// `match_consumers` is not empty, from one of those consumers (by `metadata.name`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        match_headers: Vec<(HeaderName, HeaderValue)>,
        match_consumers: Vec<String>,
        targets: Vec<Target>,
        fallbacks: Vec<Target>,
        retry: Retry,
        timeout: Option<Duration>,
        strategy: Strategy,
        affinity: Affinity,
        unsupported_tools: UnsupportedTools,
        backend_web_search: bool,
        default_max_output_tokens: Option<u64>,
    ) -> Self {
        Route {
            name,
            match_headers,
            match_consumers,
            targets,
            fallbacks,
            retry,
            timeout,
            strategy,
            affinity,
            unsupported_tools,
            backend_web_search,
            default_max_output_tokens,
            budget: OnceLock::new(),
        }
    }

    /// Whether `other` takes the same requests for a model as this route (same headers, same
    /// consumers), so that only one of them can ever serve it.
    pub fn same_match(&self, other: &Route) -> bool {
        self.match_headers == other.match_headers && self.match_consumers == other.match_consumers
    }

    fn admits(&self, headers: &HeaderMap, consumer: Option<&str>) -> bool {
        let headers_ok = self
            .match_headers
            .iter()
            .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value));
        let consumer_ok = self.match_consumers.is_empty()
            || consumer.is_some_and(|c| self.match_consumers.iter().any(|m| m == c));
        headers_ok && consumer_ok
    }

    /// The retry budget shared by every request of this route.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        self.budget.get_or_init(Default::default)
    }

    /// The order in which targets are tried: the primary picked by the strategy among
    /// healthy backends, the other healthy primaries, then the healthy fallbacks in order. If
    /// every backend is ejected, the least-bad one (whose ejection ends first) is tried rather
    /// than failing outright.
    pub fn plan(&self) -> Vec<&Target> {
        self.plan_for(None)
    }

    /// The plan of a request that continues a response stored by `backend` (a Responses
    /// `previous_response_id`): only that backend holds it, so its first target is the
    /// whole plan, healthy or not (any other would answer "not found"). `None` when the
    /// route no longer has a target on that backend.
    pub fn plan_pinned(&self, backend: &str) -> Option<Vec<&Target>> {
        self.targets
            .iter()
            .chain(self.fallbacks.iter())
            .find(|t| *t.backend.name == *backend)
            .map(|t| vec![t])
    }

    /// [`Route::plan`] for a request of the conversation `affinity` (see
    /// [`switchyard_providers::affinity`]): with the `weighted` strategy the healthy
    /// primaries are ordered by weighted rendezvous hashing, best first, so the same
    /// conversation finds the same order on every request and every replica, and the next
    /// in that order when its first is saturated. Without a key it is [`Route::plan`].
    pub fn plan_for(&self, affinity: Option<u64>) -> Vec<&Target> {
        let mut order: Vec<&Target> = Vec::with_capacity(self.targets.len() + self.fallbacks.len());
        let mut healthy: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.weight > 0 && t.backend.state().is_healthy())
            .collect();
        let affine = affinity.filter(|_| {
            self.affinity != Affinity::None
                && matches!(self.strategy, Strategy::Weighted | Strategy::Cheapest)
        });
        if let (Some(key), true) = (affine, healthy.len() > 1) {
            if self.strategy == Strategy::Cheapest {
                // Affinity among the equally cheapest; the dearer ones keep their order.
                if let Some(best) = healthy.iter().map(|t| t.pricing.rank()).min() {
                    healthy.sort_by_key(|t| t.pricing.rank() != best);
                }
                let n = healthy
                    .iter()
                    .filter(|t| healthy[0].pricing.rank() == t.pricing.rank())
                    .count();
                sort_by_rendezvous(&mut healthy[..n], key, |t| (t.seed, t.weight));
            } else {
                sort_by_rendezvous(&mut healthy, key, |t| (t.seed, t.weight));
            }
            order.extend(healthy);
        } else if let Some(first) = pick(self.strategy, &healthy) {
            order.push(first);
            order.extend(healthy.iter().copied().filter(|t| !std::ptr::eq(*t, first)));
        }
        order.extend(
            self.fallbacks
                .iter()
                .filter(|t| t.backend.state().is_healthy()),
        );
        if order.is_empty() {
            let least_bad = self
                .targets
                .iter()
                .filter(|t| t.weight > 0)
                .chain(self.fallbacks.iter())
                .min_by_key(|t| t.backend.state().ejected_until().unwrap_or(0));
            order.extend(least_bad);
        }
        order
    }
}

/// `url` fit for showing: userinfo (`user:password@`) and any query string are replaced by
/// `<redacted>`. Validation refuses both in endpoints today; this keeps `/debug/routes` safe
/// should a URL with credentials ever reach the table (a generated endpoint, a relaxed rule).
pub(crate) fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@');
    let query = tail.find(['?', '#']);
    if userinfo.is_none() && query.is_none() {
        return std::borrow::Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    match userinfo {
        Some(at) => {
            out.push_str("<redacted>@");
            out.push_str(&authority[at + 1..]);
        }
        None => out.push_str(authority),
    }
    match query {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str("?<redacted>");
        }
        None => out.push_str(tail),
    }
    std::borrow::Cow::Owned(out)
}

/// A target's rendezvous identity: FNV-1a of `backend\0model`, mixed.
fn target_seed(backend: &str, model: Option<&str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in backend
        .bytes()
        .chain(std::iter::once(0))
        .chain(model.unwrap_or("").bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    switchyard_providers::affinity::mix(h)
}

/// The weighted rendezvous (highest-random-weight) score of an item for `key`: `weight /
/// -ln(u)` with `u` uniform in (0, 1) from the pair's hash. The item with the highest score
/// wins; over many keys each item wins in proportion to its weight, and removing an item
/// moves only the keys it had won.
pub(crate) fn rendezvous_score(key: u64, seed: u64, weight: u32) -> f64 {
    let h = switchyard_providers::affinity::mix(key ^ seed);
    // 53 random bits, centred in their interval so u is never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// Sorts `items` by rendezvous score for `key`, best first.
pub(crate) fn sort_by_rendezvous<T>(items: &mut [T], key: u64, id: impl Fn(&T) -> (u64, u32)) {
    items.sort_by(|a, b| {
        let (sa, wa) = id(a);
        let (sb, wb) = id(b);
        rendezvous_score(key, sb, wb).total_cmp(&rendezvous_score(key, sa, wa))
    });
}

/// Picks one of `candidates` by strategy.
fn pick<'t>(strategy: Strategy, candidates: &[&'t Target]) -> Option<&'t Target> {
    match candidates.len() {
        0 => return None,
        1 => return Some(candidates[0]),
        _ => {}
    }
    match strategy {
        Strategy::Weighted => weighted(candidates, |t| u64::from(t.weight)),
        // Power of two choices over the load-weighted peak-EWMA cost, as tower's balancer
        // and linkerd do: cheap, and avoids herding onto one "fastest" backend.
        Strategy::LeastLatency => {
            let n = candidates.len();
            let a = fastrand::usize(0..n);
            let mut b = fastrand::usize(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ta, tb) = (candidates[a], candidates[b]);
            if tb.backend.state().cost() < ta.backend.state().cost() {
                Some(tb)
            } else {
                Some(ta)
            }
        }
        Strategy::Cheapest => {
            let best = candidates.iter().map(|t| t.pricing.rank()).min()?;
            let cheapest: Vec<&Target> = candidates
                .iter()
                .copied()
                .filter(|t| t.pricing.rank() == best)
                .collect();
            weighted(&cheapest, |t| u64::from(t.weight))
        }
    }
}

/// Weighted random choice.
fn weighted<'t, T>(items: &[&'t T], weight: impl Fn(&T) -> u64) -> Option<&'t T> {
    let total: u64 = items.iter().map(|t| weight(t)).sum();
    if total == 0 {
        return items.first().copied();
    }
    let mut r = fastrand::u64(0..total);
    for t in items {
        let w = weight(t);
        if r < w {
            return Some(t);
        }
        r -= w;
    }
    items.last().copied()
}

// === impl Target ===

impl Target {
    /// Sends to `backend` as `model` (`None`: the client's model), at `weight` among the
    /// primary set, priced at `pricing`.
    pub fn new(
        backend: Arc<Backend>,
        model: Option<Arc<str>>,
        weight: u32,
        pricing: Pricing,
    ) -> Self {
        Target {
            seed: target_seed(&backend.name, model.as_deref()),
            backend,
            model,
            weight,
            pricing,
        }
    }

    /// The model to send upstream: the route's rewrite, or the client's own.
    pub fn upstream_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(requested)
    }
}

// === impl Backend ===

impl Backend {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        provider: Provider,
        endpoint: String,
        format: BackendFormat,
        dialect: Dialect,
        uris: BackendUris,
        responses: Option<Uri>,
        keys: Vec<UpstreamKey>,
        models: HashMap<String, Pricing>,
        timeouts: Timeouts,
        max_concurrency: Option<u32>,
        set_headers: Vec<(HeaderName, HeaderValue)>,
        remove_headers: Vec<HeaderName>,
        signer: Option<Arc<crate::RequestSigner>>,
        host: HeaderValue,
        egress: crate::Egress,
    ) -> Self {
        Backend {
            name,
            provider,
            endpoint,
            format,
            dialect,
            uris: uris.0,
            responses,
            keys,
            models,
            timeouts,
            max_concurrency,
            set_headers,
            remove_headers,
            signer,
            host,
            egress,
            state: OnceLock::new(),
        }
    }

    /// Whether the backend serves the Responses API itself (OpenAI, Azure OpenAI): a
    /// Responses caller's request then passes through to it rather than being translated.
    pub fn serves_responses(&self) -> bool {
        self.responses.is_some()
    }

    /// The upstream URI for an operation on `model` (the model sent upstream), streamed or
    /// not. `None` when the model is part of the path and is not a plain name.
    pub fn uri(&self, op: Operation, model: &str, stream: bool) -> Option<Uri> {
        if let (Operation::Responses, Some(uri)) = (op, &self.responses) {
            return Some(uri.clone());
        }
        let pick = |pair: &(Uri, Uri)| {
            if stream {
                pair.1.clone()
            } else {
                pair.0.clone()
            }
        };
        match &self.uris {
            Uris::Fixed(uris) => Some(uris[op_index(op)].clone()),
            Uris::PerModel(paths) => match paths.listed.get(model) {
                Some(uris) => Some(pick(&uris[op_index(op)])),
                None if (paths.encode_model && !model.is_empty()) || is_plain_model_name(model) => {
                    let (plain, streamed) = &paths.suffixes[op_index(op)];
                    let suffix = if stream { streamed } else { plain };
                    let model = paths.segment(model);
                    format!("{}{model}{suffix}", paths.prefix).parse().ok()
                }
                None => None,
            },
        }
    }

    /// The backend's runtime state.
    pub fn state(&self) -> &Arc<BackendState> {
        self.state.get_or_init(Default::default)
    }

    /// Picks an upstream key: weighted among the keys not resting or disabled, each weight
    /// scaled by the headroom its last rate-limit headers reported, so a key running dry is
    /// avoided before it answers 429.
    pub fn pick_key(&self) -> KeyChoice<'_> {
        self.pick_key_for(None)
    }

    /// [`Backend::pick_key`] for a request of the conversation `affinity`: the available key
    /// with the highest weighted rendezvous score (by configured weight, not headroom, so
    /// the choice holds while the key is usable). Without a key, or when no key is
    /// available, as [`Backend::pick_key`].
    pub fn pick_key_for(&self, affinity: Option<u64>) -> KeyChoice<'_> {
        if self.keys.is_empty() {
            return KeyChoice::None;
        }
        if let Some(key) = affinity.filter(|_| self.keys.len() > 1) {
            let best = self
                .keys
                .iter()
                .filter(|k| k.weight > 0 && k.state().is_available())
                .map(|k| (rendezvous_score(key, k.seed(), k.weight), k))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, k)) = best {
                return KeyChoice::Key(k);
            }
        }
        let mut total = 0u64;
        for k in &self.keys {
            if k.state().is_available() {
                total += u64::from(k.weight) * u64::from(k.state().headroom_permille());
            }
        }
        if total > 0 {
            let mut r = fastrand::u64(0..total);
            for k in &self.keys {
                if !k.state().is_available() {
                    continue;
                }
                let w = u64::from(k.weight) * u64::from(k.state().headroom_permille());
                if r < w {
                    return KeyChoice::Key(k);
                }
                r -= w;
            }
        }
        let now = now_ms();
        // A disabled key is tried again when its disable period ends.
        let soonest = self
            .keys
            .iter()
            .map(|k| k.state().resting_until().max(k.state().disabled_until()))
            .min();
        KeyChoice::Exhausted(soonest.map(|t| Duration::from_millis(t.saturating_sub(now))))
    }

    /// The key whose [`UpstreamKey::id`] is `id`, usable or not (a stored response can be
    /// continued only with the key that made it); `None` when the pool no longer has it.
    pub fn key_by_id(&self, id: u64) -> Option<&UpstreamKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// `text` (an upstream's error message, a connection error, a log detail) with every
    /// form of this backend's keys in it replaced by [`REDACTED`]: some providers quote the
    /// key they were given. Borrowed unchanged in the common case (no key in it).
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match self.redact_bytes(text.as_bytes()) {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(text),
            // Needles and replacement are whole UTF-8 sequences or ASCII, so the text stays
            // UTF-8; lossy only to avoid trusting that.
            std::borrow::Cow::Owned(b) => {
                std::borrow::Cow::Owned(String::from_utf8_lossy(&b).into_owned())
            }
        }
    }

    /// [`Backend::redact`] over bytes (an SSE event as it is relayed).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let needles: Vec<Vec<u8>> = self.keys.iter().flat_map(UpstreamKey::needles).collect();
        match redact_needles(bytes, &needles) {
            Some(b) => std::borrow::Cow::Owned(b),
            None => std::borrow::Cow::Borrowed(bytes),
        }
    }

    /// Whether a key other than the one at `index` is usable now (for retrying a 429 or a
    /// refused key at once on this backend).
    pub fn has_other_available_key(&self, index: usize) -> bool {
        self.keys
            .iter()
            .any(|k| k.index != index && k.weight > 0 && k.state().is_available())
    }

    /// Every key's state, for status and debugging; never the keys.
    pub fn key_reports(&self) -> Vec<KeyReport> {
        self.keys
            .iter()
            .map(|k| k.state().report(k.index))
            .collect()
    }

    /// Prices of a model at this backend: as compiled for a model it lists, else the
    /// built-in catalog's list price (a route forwarding the caller's model unchanged), else
    /// unknown.
    pub fn pricing(&self, model: &str) -> Pricing {
        match self.models.get(model) {
            Some(p) => *p,
            None => crate::catalog::resolve(self.provider, model, Default::default()),
        }
    }

    /// Whether the backend lists `model` (`spec.models`).
    pub fn lists_model(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// The upstream keys, in pool order.
    pub fn keys(&self) -> &[UpstreamKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: HeaderName, value: &str) -> UpstreamKey {
        UpstreamKey {
            name,
            header: HeaderValue::from_str(value).unwrap(),
            weight: 1,
            digest: [0; 32],
            index: 0,
            state: OnceLock::new(),
        }
    }

    fn redact(keys: &[UpstreamKey], text: &str) -> String {
        let needles: Vec<Vec<u8>> = keys.iter().flat_map(UpstreamKey::needles).collect();
        match redact_needles(text.as_bytes(), &needles) {
            Some(b) => String::from_utf8(b).unwrap(),
            None => text.to_string(),
        }
    }

    #[test]
    fn every_form_of_a_key_is_redacted() {
        let keys = [
            key(http::header::AUTHORIZATION, "Bearer sk-proj-a1/b2+c3"),
            key(HeaderName::from_static("x-api-key"), "sk-ant-xyz"),
        ];
        // base64 of `sk-proj-a1/b2+c3`, standard and URL-safe.
        let text = "Incorrect key sk-proj-a1/b2+c3 (Authorization: Bearer sk-proj-a1/b2+c3), \
                    c2stcHJvai1hMS9iMitjMw== c2stcHJvai1hMS9iMitjMw, x-api-key sk-ant-xyz é";
        let out = redact(&keys, text);
        assert!(!out.contains("sk-proj") && !out.contains("sk-ant"), "{out}");
        assert!(!out.contains("c2stcHJvai1hMS9iMitjMw"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 5, "{out}");
        assert!(out.starts_with("Incorrect key [redacted] (Authorization: Bearer [redacted])"));
        assert!(out.ends_with("x-api-key [redacted] é"), "{out}");
        // Text without a key is left alone; a key too short to tell from words is not
        // looked for.
        assert_eq!(redact(&keys, "nothing here"), "nothing here");
        let short = [key(HeaderName::from_static("x-api-key"), "ab")];
        assert_eq!(redact(&short, "about ab"), "about ab");
    }

    #[test]
    fn urls_shown_in_debug_output_lose_their_credentials() {
        for (url, shown) in [
            ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
            ("https://api.openai.com", "https://api.openai.com"),
            (
                "https://user:hunter2@api.example.com/v1",
                "https://<redacted>@api.example.com/v1",
            ),
            (
                "http://tok@10.0.0.1:8000",
                "http://<redacted>@10.0.0.1:8000",
            ),
            // An '@' in the path is not userinfo; one in a password is (the last '@' wins).
            ("http://h/v1/a@b", "http://h/v1/a@b"),
            ("http://u:p@ss@h:1/x", "http://<redacted>@h:1/x"),
            (
                "https://g.example.com/v1?key=AIza-secret",
                "https://g.example.com/v1?<redacted>",
            ),
            ("https://h/#frag", "https://h/?<redacted>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn rendezvous_scores_win_in_proportion_to_weight() {
        // Weights 3:1 win 75 % / 25 % of keys, within 1 % over 100k keys.
        let key =
            |i: u64| switchyard_providers::affinity::mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let n = 100_000;
        let wins = (0..n)
            .filter(|&i| rendezvous_score(key(i), 11, 3) > rendezvous_score(key(i), 22, 1))
            .count();
        let share = wins as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }
}
