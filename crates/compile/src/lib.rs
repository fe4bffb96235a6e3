//! Compiles resources and their Secrets into a [`RoutingTable`], with a verdict per resource.
//!
//! The one place where the resource definitions (`switchyard-api`, with kube) meet the data
//! plane (`switchyard-router`, without): the gateway only ever receives a built table.
//!
//! Both table sources (YAML files and the Kubernetes API) call [`compile`]. A resource with
//! errors is left out of the table and reported; the rest still compiles, so one bad object
//! cannot take routing down. The file source is stricter and refuses a reload that has any
//! error, keeping the previous table; the controller serves the rest and writes the verdicts
//! to status.

use std::{
    cmp::Ordering as CmpOrdering,
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
};

use http::{HeaderName, HeaderValue, Uri};
use k8s_openapi::api::core::v1::Secret;
use kube_meta::{created, ns_name};
use switchyard_api::{
    parse_duration, parse_price,
    validate::{self, FieldError, Reason},
    AIBudget, AIConsumer, AIRoute, ModelBackend, ModelBackendSpec, Provider, Resources, Strategy,
};
use switchyard_providers::{
    chat::UnsupportedTools, openai::chat::Dialect, transcode::BackendFormat,
};
use switchyard_router::{
    budget::SharedBudget,
    catalog::{self, GivenPrices},
    consumer::{self, Consumer, Consumers},
    egress::{Egress, EgressError},
    glob::Glob,
    Backend, BackendUris, Pricing, RequestSigner, Retry, Route, RoutingTable, Target, Timeouts,
    UpstreamKey, MAX_CONFIGURED_DURATION,
};

#[cfg(test)]
mod affinity_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Severity {
    /// The resource (or the part named) was left out of the table.
    Error,
    /// The resource is served, but something about it is probably not what was meant.
    Warning,
}

/// The verdict on one resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// `ModelBackend`, `AIRoute` or `AIConsumer`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Error or warning.
    pub severity: Severity,
    /// The field-level problem.
    pub error: FieldError,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: {} {}/{}: {}",
            self.kind, self.namespace, self.name, self.error
        )
    }
}

/// A compiled table and every verdict reached while compiling it.
pub struct Compiled {
    /// The table, holding every resource that compiled.
    pub table: RoutingTable,
    /// Problems found, in a stable order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

mod kube_meta {
    use kube::ResourceExt;

    pub fn ns_name<K: ResourceExt>(obj: &K) -> (String, String) {
        (
            obj.namespace()
                .unwrap_or_else(|| switchyard_api::document::DEFAULT_NAMESPACE.into()),
            obj.name_any(),
        )
    }

    pub fn created<K: ResourceExt>(obj: &K) -> Option<String> {
        obj.meta()
            .creation_timestamp
            .as_ref()
            .map(|t| format!("{:?}", t.0))
    }
}

/// What [`compile_inputs`] reads: every object of each kind, and the Secrets they may refer
/// to, borrowed. [`compile`] takes owned [`Resources`] (the file source parses them); the
/// cluster source lends the objects its watches already hold instead of copying them — at
/// 10 000 AIRoutes a copy of every object, status and all, was 13.6 MiB allocated and freed
/// again on each rebuild (heaptrack), most of the gateway's memory growth while routes were
/// being created.
#[derive(Clone, Debug, Default)]
pub struct Inputs<'r> {
    /// ModelBackend objects.
    pub backends: Vec<&'r ModelBackend>,
    /// AIRoute objects.
    pub routes: Vec<&'r AIRoute>,
    /// AIConsumer objects.
    pub consumers: Vec<&'r AIConsumer>,
    /// AIBudget objects.
    pub budgets: Vec<&'r AIBudget>,
    /// Secrets (with `stringData` folded into `data`).
    pub secrets: Vec<&'r Secret>,
}

impl<'r> Inputs<'r> {
    /// Every object of `resources`.
    pub fn of(resources: &'r Resources) -> Self {
        Inputs {
            backends: resources.backends.iter().collect(),
            routes: resources.routes.iter().collect(),
            consumers: resources.consumers.iter().collect(),
            budgets: resources.budgets.iter().collect(),
            secrets: resources.secrets.iter().collect(),
        }
    }

    /// A Secret's key, as bytes ([`Resources::secret_value`]).
    fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<&'r [u8]> {
        self.secrets
            .iter()
            .find(|s| {
                let m = &s.metadata;
                m.name
                    .as_deref()
                    .or(m.generate_name.as_deref())
                    .unwrap_or("")
                    == name
                    && m.namespace.as_deref() == Some(namespace)
            })
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    }
}

struct Ctx<'r> {
    resources: &'r Inputs<'r>,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn report(
        &mut self,
        kind: &'static str,
        (namespace, name): &(String, String),
        severity: Severity,
        error: FieldError,
    ) {
        self.diagnostics.push(Diagnostic {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            severity,
            error,
        });
    }

    fn secret(&self, namespace: &str, r: &switchyard_api::SecretKeyRef) -> Result<&[u8], String> {
        self.resources
            .secret_value(namespace, &r.name, &r.key)
            .ok_or_else(|| {
                let exists = self.resources.secrets.iter().any(|s| {
                    s.metadata.name.as_deref() == Some(&r.name)
                        && s.metadata.namespace.as_deref() == Some(namespace)
                });
                if exists {
                    format!("Secret {namespace}/{} has no key {:?}", r.name, r.key)
                } else {
                    format!("Secret {namespace}/{} not found", r.name)
                }
            })
    }
}

fn field_err(field: impl Into<String>, reason: Reason, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason,
        message: message.into(),
    }
}

/// Compiles `resources` into a table numbered `generation`.
pub fn compile(resources: &Resources, generation: u64) -> Compiled {
    compile_inputs(&Inputs::of(resources), generation)
}

/// Compiles borrowed `resources` into a table numbered `generation`.
pub fn compile_inputs(resources: &Inputs<'_>, generation: u64) -> Compiled {
    let mut ctx = Ctx {
        resources,
        diagnostics: Vec::new(),
    };
    let backends = compile_backends(&mut ctx);
    let by_name: HashMap<(&str, &str), &Arc<Backend>> = backends
        .iter()
        .map(|(id, b)| ((id.0.as_str(), id.1.as_str()), b))
        .collect();
    // Which other namespaces may use each backend (its `spec.allowedRouteNamespaces`).
    let grants: HashMap<(String, String), &[String]> = resources
        .backends
        .iter()
        .map(|b| (ns_name(*b), b.spec.allowed_route_namespaces.as_slice()))
        .collect();

    // Deterministic precedence between routes: oldest first, then namespace/name. The keys
    // are worked out once per route, not once per comparison.
    let mut routes_in: Vec<RouteOrder<'_>> = resources
        .routes
        .iter()
        .map(|r| RouteOrder {
            created: created(*r),
            id: ns_name(*r),
            obj: r,
        })
        .collect();
    routes_in.sort_by(route_order);

    let mut routes: Vec<Route> = Vec::with_capacity(routes_in.len());
    let mut exact: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
    let mut globs: Vec<(Glob, usize)> = Vec::new();
    for RouteOrder { obj, id, .. } in routes_in {
        let Some(route) = compile_route(&mut ctx, obj, &id, &by_name, &grants) else {
            continue;
        };
        let rid = routes.len();
        for (i, pattern) in obj.spec.match_.models.iter().enumerate() {
            let shadowing = if Glob::is_glob(pattern) {
                globs
                    .iter()
                    .find(|(g, other)| g.as_str() == pattern && routes[*other].same_match(&route))
                    .map(|(_, other)| *other)
            } else {
                exact
                    .get(pattern.as_str())
                    .and_then(|ids| ids.iter().find(|o| routes[**o].same_match(&route)).copied())
            };
            if let Some(other) = shadowing {
                ctx.report(
                    "AIRoute",
                    &id,
                    Severity::Warning,
                    field_err(
                        format!("spec.match.models[{i}]"),
                        Reason::ConflictingMatch,
                        format!(
                            "model {pattern:?} is also matched by AIRoute {}, which takes precedence (older, or first by namespace/name)",
                            routes[other].name
                        ),
                    ),
                );
                continue;
            }
            if Glob::is_glob(pattern) {
                globs.push((Glob::new(pattern), rid));
            } else {
                exact.entry(pattern.as_str().into()).or_default().push(rid);
            }
        }
        routes.push(route);
    }
    let consumers = compile_consumers(&mut ctx);

    let mut diagnostics = ctx.diagnostics;
    diagnostics.sort_by(|a, b| {
        (a.kind, &a.namespace, &a.name, &a.error.field).cmp(&(
            b.kind,
            &b.namespace,
            &b.name,
            &b.error.field,
        ))
    });
    Compiled {
        table: RoutingTable::new(
            generation,
            routes,
            exact,
            globs,
            backends.into_iter().map(|(_, b)| b).collect(),
            consumers,
        ),
        diagnostics,
    }
}

/// An AIRoute with what decides its precedence.
struct RouteOrder<'r> {
    created: Option<String>,
    id: (String, String),
    obj: &'r AIRoute,
}

fn route_order(a: &RouteOrder<'_>, b: &RouteOrder<'_>) -> CmpOrdering {
    // Objects without a timestamp (local files) sort by name alone.
    let by_time = match (&a.created, &b.created) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => CmpOrdering::Equal,
    };
    by_time.then_with(|| a.id.cmp(&b.id))
}

fn compile_backends(ctx: &mut Ctx<'_>) -> Vec<((String, String), Arc<Backend>)> {
    let mut out = Vec::new();
    let mut objs: Vec<&ModelBackend> = ctx.resources.backends.clone();
    objs.sort_by_key(|b| ns_name(*b));
    for obj in objs {
        let id = ns_name(obj);
        if out.iter().any(|(o, _)| o == &id) {
            ctx.report(
                "ModelBackend",
                &id,
                Severity::Error,
                field_err(
                    "metadata.name",
                    Reason::InvalidDocument,
                    "defined more than once",
                ),
            );
            continue;
        }
        let errors = validate::model_backend(&obj.spec);
        if !errors.is_empty() {
            for e in errors {
                ctx.report("ModelBackend", &id, Severity::Error, e);
            }
            continue;
        }
        match build_backend(ctx, obj, &id) {
            Ok(b) => {
                for (i, m) in obj.spec.models.iter().enumerate() {
                    if !b.pricing(&m.name).known {
                        ctx.report(
                            "ModelBackend",
                            &id,
                            Severity::Warning,
                            field_err(
                                format!("spec.models[{i}].pricing"),
                                Reason::PricingUnknown,
                                format!(
                                    "no price for model {:?} in the resource nor in the built-in catalog (`switchyard prices`): its spend is reported as unknown",
                                    m.name
                                ),
                            ),
                        );
                    }
                }
                out.push((id, Arc::new(b)))
            }
            Err(e) => ctx.report("ModelBackend", &id, Severity::Error, e),
        }
    }
    out
}

fn build_backend(
    ctx: &Ctx<'_>,
    obj: &ModelBackend,
    id: &(String, String),
) -> Result<Backend, FieldError> {
    let spec = &obj.spec;
    // Validation has made sure a bedrock backend has a region.
    let bedrock_region = spec.bedrock_region().unwrap_or_default();
    let endpoint = match (&spec.endpoint, spec.provider) {
        (None, Provider::Bedrock) => switchyard_api::bedrock_endpoint(bedrock_region),
        (ep, provider) => ep
            .as_deref()
            .or(provider.default_endpoint())
            .unwrap_or_default()
            .to_string(),
    };
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let uri = |path: &str| -> Result<Uri, FieldError> {
        format!("{endpoint}{path}").parse::<Uri>().map_err(|e| {
            field_err(
                "spec.endpoint",
                Reason::InvalidEndpoint,
                format!("{endpoint:?}: {e}"),
            )
        })
    };
    // Each provider's paths for each operation the gateway may send it. An OpenAI base URL
    // ends in `/v1`; an Anthropic one usually does not (Anthropic's SDKs append `/v1/…`), but
    // one that does is accepted too; likewise a Gemini one with or without its version, and
    // an Azure one with or without `/openai`. Operations a provider cannot serve get a URI
    // anyway and are refused before sending (`switchyard_gateway` decides per inbound format).
    let uris = match spec.provider {
        Provider::Anthropic => {
            let v1 = if endpoint.ends_with("/v1") { "" } else { "/v1" };
            let messages = uri(&format!("{v1}/messages"))?;
            BackendUris::fixed([
                messages.clone(),
                messages.clone(),
                messages.clone(),
                messages,
                uri(&format!("{v1}/messages/count_tokens"))?,
            ])
        }
        Provider::Gemini => {
            let version = if endpoint.ends_with("/v1beta") || endpoint.ends_with("/v1") {
                String::new()
            } else {
                format!("/{}", switchyard_providers::gemini::API_VERSION)
            };
            let call = (
                ":generateContent".to_string(),
                ":streamGenerateContent?alt=sse".to_string(),
            );
            model_paths(
                spec,
                format!("{endpoint}{version}/models/"),
                std::array::from_fn(|_| call.clone()),
                false,
            )?
        }
        Provider::Bedrock => {
            let call = ("/converse".to_string(), "/converse-stream".to_string());
            model_paths(
                spec,
                format!("{endpoint}/model/"),
                std::array::from_fn(|_| call.clone()),
                true,
            )?
        }
        Provider::AzureOpenAi => {
            let openai = if endpoint.ends_with("/openai") {
                ""
            } else {
                "/openai"
            };
            let version = spec
                .azure
                .as_ref()
                .and_then(|a| a.api_version.as_deref())
                .unwrap_or(switchyard_api::AZURE_DEFAULT_API_VERSION);
            let path = |p: &str| {
                let s = format!("/{p}?api-version={version}");
                (s.clone(), s)
            };
            let chat = path("chat/completions");
            model_paths(
                spec,
                format!("{endpoint}{openai}/deployments/"),
                [
                    chat.clone(),
                    path("completions"),
                    path("embeddings"),
                    chat.clone(),
                    chat,
                ],
                false,
            )?
        }
        _ => {
            let chat = uri("/chat/completions")?;
            BackendUris::fixed([
                chat.clone(),
                uri("/completions")?,
                uri("/embeddings")?,
                chat.clone(),
                chat,
            ])
        }
    };
    // Backends that serve the Responses API themselves get a Responses caller's request
    // passed through. Azure serves it on its v1 path (`/openai/v1/responses`), which takes no
    // `api-version` and names the deployment in the body's `model`. OpenAI-compatible servers
    // mostly do not serve it, so they are called through Chat Completions.
    let responses = match spec.provider {
        Provider::OpenAi => Some(uri("/responses")?),
        Provider::AzureOpenAi if endpoint.ends_with("/openai") => Some(uri("/v1/responses")?),
        Provider::AzureOpenAi => Some(uri("/openai/v1/responses")?),
        Provider::Anthropic | Provider::Gemini | Provider::Bedrock | Provider::OpenAiCompatible => {
            None
        }
    };
    let (format, dialect) = match spec.provider {
        Provider::Anthropic => (BackendFormat::Anthropic, Dialect::Compatible),
        Provider::Gemini => (BackendFormat::Gemini, Dialect::Compatible),
        Provider::Bedrock => (BackendFormat::Bedrock, Dialect::Compatible),
        // Azure serves OpenAI's own models, with OpenAI's parameter names.
        Provider::OpenAi | Provider::AzureOpenAi => (BackendFormat::OpenAiChat, Dialect::OpenAi),
        Provider::OpenAiCompatible => (BackendFormat::OpenAiChat, Dialect::Compatible),
    };
    let mut keys = Vec::new();
    if let Some(auth) = &spec.auth {
        let refs: Vec<(String, &switchyard_api::SecretKeyRef, u32)> =
            match (&auth.secret_ref, &auth.keys) {
                (Some(r), _) => vec![("spec.auth.secretRef".into(), r, 1)],
                (None, Some(pool)) => pool
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        (
                            format!("spec.auth.keys[{i}].secretRef"),
                            &k.secret_ref,
                            k.weight.unwrap_or(1),
                        )
                    })
                    .collect(),
                (None, None) => vec![],
            };
        for (index, (field, r, weight)) in refs.into_iter().enumerate() {
            let raw = ctx
                .secret(&id.0, r)
                .map_err(|m| field_err(field.clone(), Reason::SecretNotFound, m))?;
            let key = std::str::from_utf8(raw).map(str::trim).map_err(|_| {
                field_err(
                    field.clone(),
                    Reason::SecretNotFound,
                    "the key is not UTF-8 text",
                )
            })?;
            if key.is_empty() {
                return Err(field_err(field, Reason::SecretNotFound, "the key is empty"));
            }
            let (name, value) = match spec.provider {
                Provider::Anthropic => (HeaderName::from_static("x-api-key"), key.to_string()),
                Provider::Gemini => (HeaderName::from_static("x-goog-api-key"), key.to_string()),
                Provider::AzureOpenAi => (HeaderName::from_static("api-key"), key.to_string()),
                _ => (http::header::AUTHORIZATION, format!("Bearer {key}")),
            };
            let mut header = HeaderValue::try_from(value).map_err(|_| {
                field_err(
                    field.clone(),
                    Reason::SecretNotFound,
                    "the key contains characters not allowed in an HTTP header",
                )
            })?;
            header.set_sensitive(true);
            keys.push(UpstreamKey::new(
                name,
                header,
                weight,
                consumer::digest(key.as_bytes()),
                index,
            ));
        }
    }
    let signer = match spec.auth.as_ref().and_then(|a| a.aws_secret_ref.as_ref()) {
        Some(r) => Some(Arc::new(aws_signer(ctx, &id.0, r, bedrock_region)?)),
        None => None,
    };
    let mut models = HashMap::new();
    for (i, m) in spec.models.iter().enumerate() {
        let pricing =
            resolve_pricing(spec.provider, &m.name, m.pricing.as_ref()).map_err(|(name, e)| {
                field_err(
                    format!("spec.models[{i}].pricing.{name}"),
                    Reason::InvalidPricing,
                    e,
                )
            })?;
        models.insert(m.name.clone(), pricing);
    }
    let dur =
        |v: &Option<String>, field: &str| -> Result<Option<std::time::Duration>, FieldError> {
            v.as_deref()
                .map(|v| parse_duration(v).map(capped))
                .transpose()
                .map_err(|e| field_err(field, Reason::InvalidDuration, e.to_string()))
        };
    let t = spec.timeouts.clone().unwrap_or_default();
    let timeouts = Timeouts {
        connect: dur(&t.connect, "spec.timeouts.connect")?,
        first_byte: dur(&t.first_byte, "spec.timeouts.firstByte")?,
        idle: dur(&t.idle, "spec.timeouts.idle")?,
        total: dur(&t.total, "spec.timeouts.total")?,
    };
    let mut set_headers = Vec::new();
    let mut remove_headers = Vec::new();
    if let Some(h) = &spec.headers {
        for (name, value) in &h.set {
            let field = || format!("spec.headers.set[{name}]");
            let n = HeaderName::try_from(name.as_str())
                .map_err(|_| field_err(field(), Reason::InvalidHeader, "invalid header name"))?;
            let v = HeaderValue::try_from(value.as_str())
                .map_err(|_| field_err(field(), Reason::InvalidHeader, "invalid header value"))?;
            set_headers.push((n, v));
        }
        for (i, name) in h.remove.iter().enumerate() {
            remove_headers.push(HeaderName::try_from(name.as_str()).map_err(|_| {
                field_err(
                    format!("spec.headers.remove[{i}]"),
                    Reason::InvalidHeader,
                    "invalid header name",
                )
            })?);
        }
    }
    let host = uri("")
        .ok()
        .as_ref()
        .and_then(switchyard_router::egress::host_header)
        .ok_or_else(|| {
            field_err(
                "spec.endpoint",
                Reason::InvalidEndpoint,
                format!("{endpoint:?} has no host"),
            )
        })?;
    let egress = egress(ctx, &id.0, spec)?;
    Ok(Backend::new(
        format!("{}/{}", id.0, id.1).into(),
        spec.provider,
        endpoint,
        format,
        dialect,
        uris,
        responses,
        keys,
        models,
        timeouts,
        spec.max_concurrency,
        set_headers,
        remove_headers,
        signer,
        host,
        egress,
    ))
}

/// A backend's TLS trust, server name and proxy, with their Secrets read.
fn egress(ctx: &Ctx<'_>, namespace: &str, spec: &ModelBackendSpec) -> Result<Egress, FieldError> {
    let tls = spec.tls.as_ref();
    let ca = match tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        Some(r) => Some(
            ctx.secret(namespace, r)
                .map_err(|m| field_err("spec.tls.caSecretRef", Reason::SecretNotFound, m))?,
        ),
        None => None,
    };
    let proxy = match &spec.proxy {
        Some(p) => {
            let auth = match &p.basic_auth_secret_ref {
                Some(r) => Some(ctx.secret(namespace, r).map_err(|m| {
                    field_err("spec.proxy.basicAuthSecretRef", Reason::SecretNotFound, m)
                })?),
                None => None,
            };
            Some((p.url.as_str(), auth))
        }
        None => None,
    };
    Egress::new(ca, tls.and_then(|t| t.sni.as_deref()), proxy).map_err(|e| match e {
        EgressError::CaBundle(m) => field_err("spec.tls.caSecretRef", Reason::InvalidTls, m),
        EgressError::ServerName(m) => field_err("spec.tls.sni", Reason::InvalidTls, m),
        EgressError::Proxy(m) => field_err("spec.proxy.url", Reason::InvalidProxy, m),
        EgressError::ProxyCredentials(m) => {
            field_err("spec.proxy.basicAuthSecretRef", Reason::InvalidProxy, m)
        }
    })
}

/// A SigV4 signer from the credentials in an `awsSecretRef` Secret.
fn aws_signer(
    ctx: &Ctx<'_>,
    namespace: &str,
    r: &switchyard_api::SecretRef,
    region: &str,
) -> Result<RequestSigner, FieldError> {
    use switchyard_api::aws_secret_keys as keys;
    let field = "spec.auth.awsSecretRef";
    let value = |key: &str| -> Result<Option<&str>, FieldError> {
        let r = switchyard_api::SecretKeyRef {
            name: r.name.clone(),
            key: key.to_string(),
        };
        match ctx.secret(namespace, &r) {
            Err(_) => Ok(None),
            Ok(raw) => std::str::from_utf8(raw)
                .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
                .map_err(|_| {
                    field_err(
                        field,
                        Reason::SecretNotFound,
                        format!("the Secret's key {key} is not UTF-8 text"),
                    )
                }),
        }
    };
    let required = |key: &str| -> Result<&str, FieldError> {
        value(key)?.ok_or_else(|| {
            let message = match ctx.secret(
                namespace,
                &switchyard_api::SecretKeyRef {
                    name: r.name.clone(),
                    key: key.to_string(),
                },
            ) {
                Err(m) => m,
                Ok(_) => format!("Secret {namespace}/{} has an empty {key}", r.name),
            };
            field_err(field, Reason::SecretNotFound, message)
        })
    };
    let access_key_id = required(keys::ACCESS_KEY_ID)?;
    let secret_access_key = required(keys::SECRET_ACCESS_KEY)?;
    let session_token = value(keys::SESSION_TOKEN)?;
    Ok(RequestSigner::sigv4(
        region,
        switchyard_providers::bedrock::SIGNING_SERVICE,
        access_key_id,
        secret_access_key,
        session_token,
    ))
}

/// The URIs of a provider that puts the model in the path, built for every listed model.
fn model_paths(
    spec: &switchyard_api::ModelBackendSpec,
    prefix: String,
    suffixes: [(String, String); 5],
    encode_model: bool,
) -> Result<BackendUris, FieldError> {
    let models = spec.models.iter().map(|m| m.name.as_str());
    BackendUris::per_model(prefix, suffixes, encode_model, models).map_err(|i| {
        field_err(
            format!("spec.models[{i}].name"),
            Reason::InvalidModel,
            format!(
                "{:?} cannot be part of the request URL of provider {}",
                spec.models[i].name,
                spec.provider.as_str()
            ),
        )
    })
}

fn compile_route(
    ctx: &mut Ctx<'_>,
    obj: &AIRoute,
    id: &(String, String),
    backends: &HashMap<(&str, &str), &Arc<Backend>>,
    grants: &HashMap<(String, String), &[String]>,
) -> Option<Route> {
    let spec = &obj.spec;
    let mut errors = validate::ai_route(spec);
    let resolve = |field: String,
                   rb: &switchyard_api::route::RouteBackend,
                   errors: &mut Vec<FieldError>| {
        let ns = rb.backend_ref.namespace.as_deref().unwrap_or(&id.0);
        let name = rb.backend_ref.name.as_str();
        if ns != id.0 {
            // Cross-namespace: only when the backend's owner allows this namespace.
            let allowed = grants
                .get(&(ns.to_string(), name.to_string()))
                .is_some_and(|g| g.iter().any(|a| a == "*" || *a == id.0));
            if !allowed {
                errors.push(field_err(
                        format!("{field}.backendRef.namespace"),
                        Reason::RefNotPermitted,
                        format!(
                            "ModelBackend {ns}/{name} does not allow AIRoutes from namespace {} (its spec.allowedRouteNamespaces)",
                            id.0
                        ),
                    ));
                return None;
            }
        }
        let Some(backend) = backends.get(&(ns, name)) else {
            errors.push(field_err(
                format!("{field}.backendRef.name"),
                Reason::BackendNotFound,
                format!("ModelBackend {ns}/{name} not found or not accepted"),
            ));
            return None;
        };
        if let Some(m) = &rb.model {
            if !backend.lists_model(m) {
                errors.push(field_err(
                    format!("{field}.model"),
                    Reason::ModelNotServed,
                    format!("ModelBackend {} does not list model {m:?}", backend.name),
                ));
                return None;
            }
        }
        let model: Option<Arc<str>> = rb.model.as_deref().map(Arc::from);
        let pricing = model
            .as_deref()
            .map(|m| backend.pricing(m))
            .unwrap_or_default();
        Some(Target::new(
            Arc::clone(backend),
            model,
            rb.weight.unwrap_or(1),
            pricing,
        ))
    };
    let targets: Vec<Target> = spec
        .backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| resolve(format!("spec.backends[{i}]"), b, &mut errors))
        .collect();
    let fallbacks: Vec<Target> = spec
        .fallbacks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| resolve(format!("spec.fallbacks[{i}]"), b, &mut errors))
        .collect();
    let mut match_headers = Vec::new();
    for (i, h) in spec.match_.headers.iter().enumerate() {
        match (
            HeaderName::try_from(h.name.as_str()),
            HeaderValue::try_from(h.value.as_str()),
        ) {
            (Ok(n), Ok(v)) => match_headers.push((n, v)),
            _ => errors.push(field_err(
                format!("spec.match.headers[{i}]"),
                Reason::InvalidHeader,
                "invalid header name or value",
            )),
        }
    }
    if !errors.is_empty() {
        for e in errors {
            ctx.report("AIRoute", id, Severity::Error, e);
        }
        return None;
    }
    let backoff = spec
        .retry
        .as_ref()
        .and_then(|r| r.backoff.as_deref())
        .and_then(|b| parse_duration(b).ok())
        .map_or(Retry::DEFAULT.backoff, capped);
    let retry = spec
        .retry
        .as_ref()
        .map_or(Retry::DEFAULT, |r| Retry::new(r.attempts, &r.on, backoff));
    Some(Route::new(
        format!("{}/{}", id.0, id.1).into(),
        match_headers,
        spec.match_.consumers.clone(),
        targets,
        fallbacks,
        retry,
        spec.timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(capped),
        spec.strategy.unwrap_or(Strategy::Weighted),
        spec.affinity.unwrap_or_default(),
        match spec.unsupported_tools.unwrap_or_default() {
            switchyard_api::UnsupportedTools::Drop => UnsupportedTools::Drop,
            switchyard_api::UnsupportedTools::Reject => UnsupportedTools::Reject,
        },
        spec.web_search == Some(switchyard_api::WebSearch::Backend),
        spec.default_max_output_tokens,
    ))
}

fn capped(d: std::time::Duration) -> std::time::Duration {
    d.min(MAX_CONFIGURED_DURATION)
}

fn compile_consumers(ctx: &mut Ctx<'_>) -> Consumers {
    // Accepted consumers, with the key digests and ServiceAccounts they authenticate with.
    let mut list: Vec<(Consumer, Vec<[u8; 32]>, Vec<String>)> = Vec::new();
    let mut taken_digests: HashSet<[u8; 32]> = HashSet::new();
    let mut taken_accounts: HashSet<String> = HashSet::new();
    let mut budgets = compile_budgets(ctx);
    let mut objs: Vec<&AIConsumer> = ctx.resources.consumers.clone();
    objs.sort_by_key(|c| ns_name(*c));
    for obj in objs {
        let id = ns_name(obj);
        let mut errors = validate::ai_consumer(&obj.spec);
        let mut digests = Vec::new();
        let refs = obj
            .spec
            .key_secret_ref
            .iter()
            .map(|r| ("spec.keySecretRef".to_string(), r))
            .chain(
                obj.spec
                    .additional_key_secret_refs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("spec.additionalKeySecretRefs[{i}]"), r)),
            );
        for (field, r) in refs {
            match ctx.secret(&id.0, r) {
                Ok(raw) => {
                    let key = String::from_utf8_lossy(raw);
                    let key = key.trim();
                    if key.is_empty() {
                        errors.push(field_err(field, Reason::SecretNotFound, "the key is empty"));
                        continue;
                    }
                    let d = consumer::digest(key.as_bytes());
                    if taken_digests.contains(&d) || digests.contains(&d) {
                        errors.push(field_err(
                            field,
                            Reason::InvalidDocument,
                            "another AIConsumer (or another key of this one) already uses this key",
                        ));
                    } else {
                        digests.push(d);
                    }
                }
                Err(m) => errors.push(field_err(field, Reason::SecretNotFound, m)),
            }
        }
        let mut accounts = Vec::new();
        for (i, sa) in obj.spec.service_accounts.iter().enumerate() {
            let ns = sa.namespace.as_deref().unwrap_or(&id.0);
            let user = consumer::service_account_username(ns, &sa.name);
            if taken_accounts.contains(&user) || accounts.contains(&user) {
                errors.push(field_err(
                    format!("spec.serviceAccounts[{i}]"),
                    Reason::InvalidDocument,
                    format!("ServiceAccount {ns}/{} already belongs to another AIConsumer (or is listed twice)", sa.name),
                ));
            } else {
                accounts.push(user);
            }
        }
        let shared_budget = match &obj.spec.budget_ref {
            None => None,
            Some(r) => {
                let key = format!("{}/{}", id.0, r.name);
                match budgets.iter_mut().find(|b| *b.0.name == *key) {
                    Some((b, members)) => {
                        members.push(format!("{}/{}", id.0, id.1).into());
                        Some(Arc::clone(b))
                    }
                    None => {
                        errors.push(field_err(
                            "spec.budgetRef.name",
                            Reason::BudgetNotFound,
                            format!("AIBudget {key} does not exist or is invalid"),
                        ));
                        None
                    }
                }
            }
        };
        let budget = obj.spec.budget.as_ref().and_then(|b| {
            parse_price(&b.usd).ok().map(|usd| consumer::Budget {
                micro_usd: usd.0,
                period: b.period,
            })
        });
        if !errors.is_empty() {
            for e in errors {
                ctx.report("AIConsumer", &id, Severity::Error, e);
            }
            continue;
        }
        let consumer = Consumer::new(
            format!("{}/{}", id.0, id.1).into(),
            id.1.clone(),
            obj.spec.allow.iter().map(|a| Glob::new(a)).collect(),
            obj.spec.limits.as_ref().and_then(|l| l.requests_per_minute),
            obj.spec.limits.as_ref().and_then(|l| l.tokens_per_minute),
            budget,
            shared_budget,
        );
        taken_digests.extend(digests.iter().copied());
        taken_accounts.extend(accounts.iter().cloned());
        list.push((consumer, digests, accounts));
    }
    // Each shared budget learns its members; nothing else holds it yet, so it is unique.
    let budgets: Vec<Arc<SharedBudget>> = budgets
        .drain(..)
        .map(|(b, members)| Arc::new(SharedBudget::new(b.name.clone(), b.budget, members)))
        .collect();
    for (c, _, _) in &mut list {
        if let Some(b) = &c.shared_budget {
            c.shared_budget = budgets.iter().find(|x| x.name == b.name).cloned();
        }
    }
    Consumers::new(!ctx.resources.consumers.is_empty(), list, budgets)
}

/// Every valid AIBudget, in (namespace, name) order, with the consumers found drawing on it
/// (filled in by [`compile_consumers`]).
fn compile_budgets(ctx: &mut Ctx<'_>) -> Vec<(Arc<SharedBudget>, Vec<Arc<str>>)> {
    let mut objs: Vec<&AIBudget> = ctx.resources.budgets.clone();
    objs.sort_by_key(|b| ns_name(*b));
    let mut out = Vec::new();
    for obj in objs {
        let id = ns_name(obj);
        match parse_price(&obj.spec.usd) {
            Ok(usd) => out.push((
                Arc::new(SharedBudget::new(
                    format!("{}/{}", id.0, id.1).into(),
                    consumer::Budget {
                        micro_usd: usd.0,
                        period: obj.spec.period,
                    },
                    Vec::new(),
                )),
                Vec::new(),
            )),
            Err(e) => ctx.report(
                "AIBudget",
                &id,
                Severity::Error,
                field_err("spec.usd", Reason::InvalidLimit, e.to_string()),
            ),
        }
    }
    out
}

/// The prices of `model` at a backend of `provider`, from those `spec` gives and the built-in
/// catalog ([`catalog::resolve`]). An unparsable price names its field.
fn resolve_pricing(
    provider: Provider,
    model: &str,
    spec: Option<&switchyard_api::backend::Pricing>,
) -> Result<Pricing, (&'static str, String)> {
    let parse = |v: &Option<String>, name: &'static str| {
        v.as_deref()
            .map(|s| parse_price(s).map_err(|e| (name, e.to_string())))
            .transpose()
    };
    let given = match spec {
        Some(p) => GivenPrices {
            input: parse(&p.input_per_million, "inputPerMillion")?,
            output: parse(&p.output_per_million, "outputPerMillion")?,
            cache_read: match parse(&p.cache_read_per_million, "cacheReadPerMillion")? {
                Some(r) => Some(r),
                None => parse(&p.cached_input_per_million, "cachedInputPerMillion")?,
            },
            cache_write: parse(&p.cache_write_per_million, "cacheWritePerMillion")?,
        },
        None => GivenPrices::default(),
    };
    Ok(catalog::resolve(provider, model, given))
}
