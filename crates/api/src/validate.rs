//! Semantic checks on one resource that the OpenAPI schema cannot express.
//!
//! Cross-resource checks (does the referenced backend exist?) belong to the router's compile
//! step, which sees every resource; these only look at one object.

use std::fmt;

use crate::{
    backend::{ModelBackendSpec, Provider},
    common::{parse_duration, parse_price},
    consumer::AIConsumerSpec,
    route::AIRouteSpec,
};

/// Why a resource, or part of it, was rejected. Machine-readable: it becomes a status
/// condition's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Reason {
    /// A duration field does not parse.
    InvalidDuration,
    /// A price is not a non-negative decimal.
    InvalidPricing,
    /// Weights are missing, or none is above zero.
    InvalidWeight,
    /// The endpoint is missing or not an http(s) URL.
    InvalidEndpoint,
    /// A model name or pattern is empty or malformed.
    InvalidModel,
    /// A header name or value is not valid HTTP.
    InvalidHeader,
    /// A referenced ModelBackend does not exist or was itself rejected.
    BackendNotFound,
    /// A referenced Secret (or its key) does not exist.
    SecretNotFound,
    /// A referenced AIBudget does not exist or was itself rejected.
    BudgetNotFound,
    /// A reference into another namespace that the target does not allow.
    RefNotPermitted,
    /// A route targets a model its backend does not list.
    ModelNotServed,
    /// Another route matches the same model and takes precedence.
    ConflictingMatch,
    /// The provider cannot be served by this version of the gateway.
    UnsupportedProvider,
    /// A budget or limit is malformed.
    InvalidLimit,
    /// A document could not be parsed at all.
    InvalidDocument,
    /// TLS settings are unusable (a CA bundle with no certificate, a bad server name).
    InvalidTls,
    /// The forward proxy URL is not `http://host:port`.
    InvalidProxy,
    /// A served model has no price in the resource nor in the built-in catalog: its spend is
    /// reported as unknown, never as $0 (a warning; the model is served).
    PricingUnknown,
}

impl Reason {
    /// The CamelCase name used in status conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidDuration => "InvalidDuration",
            Reason::InvalidPricing => "InvalidPricing",
            Reason::InvalidWeight => "InvalidWeight",
            Reason::InvalidEndpoint => "InvalidEndpoint",
            Reason::InvalidModel => "InvalidModel",
            Reason::InvalidHeader => "InvalidHeader",
            Reason::BackendNotFound => "BackendNotFound",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::BudgetNotFound => "BudgetNotFound",
            Reason::RefNotPermitted => "RefNotPermitted",
            Reason::ModelNotServed => "ModelNotServed",
            Reason::ConflictingMatch => "ConflictingMatch",
            Reason::UnsupportedProvider => "UnsupportedProvider",
            Reason::InvalidLimit => "InvalidLimit",
            Reason::InvalidDocument => "InvalidDocument",
            Reason::InvalidTls => "InvalidTls",
            Reason::InvalidProxy => "InvalidProxy",
            Reason::PricingUnknown => "PricingUnknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one field of a resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.backends[1].weight`.
    pub field: String,
    /// Machine-readable cause.
    pub reason: Reason,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.reason)
    }
}

fn err(field: impl Into<String>, reason: Reason, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason,
        message: message.into(),
    }
}

fn check_duration(out: &mut Vec<FieldError>, field: String, value: Option<&String>) {
    if let Some(v) = value {
        if let Err(e) = parse_duration(v) {
            out.push(err(field, Reason::InvalidDuration, e.to_string()));
        }
    }
}

fn check_header_name(out: &mut Vec<FieldError>, field: String, name: &str) {
    if http_token(name).is_err() {
        out.push(err(
            field,
            Reason::InvalidHeader,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
}

/// Headers that describe one connection, not the request: the gateway writes them itself
/// (`Host`, framing) or never forwards them (RFC 9110 §7.6.1's hop-by-hop list).
pub fn is_connection_header(name: &str) -> bool {
    const NAMES: [&str; 10] = [
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// RFC 9110 token characters, the grammar of a header name.
fn http_token(s: &str) -> Result<(), ()> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Whether `s` is a valid namespace name (an RFC 1123 DNS label).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a valid object name such as a ServiceAccount's (an RFC 1123 subdomain).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks that a model name or glob is usable: non-empty, no whitespace or control characters.
pub fn check_model_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("model name must not be empty".into());
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{pattern:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// Checks a ModelBackend spec.
pub fn model_backend(spec: &ModelBackendSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    match (&spec.endpoint, spec.provider.default_endpoint()) {
        (Some(ep), _) => {
            let ok = (ep.starts_with("http://") || ep.starts_with("https://"))
                && ep.parse::<http_uri::Probe>().is_ok();
            if !ok {
                out.push(err(
                    "spec.endpoint",
                    Reason::InvalidEndpoint,
                    format!("{ep:?} is not an absolute http:// or https:// URL"),
                ));
            }
        }
        (None, Some(_)) => {}
        // Its default endpoint is the region's (see below).
        (None, None) if spec.provider == Provider::Bedrock => {}
        (None, None) => out.push(err(
            "spec.endpoint",
            Reason::InvalidEndpoint,
            format!(
                "provider {} has no default endpoint: set spec.endpoint",
                spec.provider.as_str()
            ),
        )),
    }
    if let Some(v) = spec.azure.as_ref().and_then(|a| a.api_version.as_deref()) {
        // It goes into every request's query string as it is.
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            out.push(err(
                "spec.azure.apiVersion",
                Reason::InvalidEndpoint,
                format!("{v:?} is not an api-version such as 2024-10-21 or 2025-04-01-preview"),
            ));
        }
    }
    if spec.provider == Provider::Bedrock {
        match spec.bedrock_region() {
            None => out.push(err(
                "spec.bedrock.region",
                Reason::InvalidEndpoint,
                "provider bedrock needs the AWS region requests are signed for: set \
                 spec.bedrock.region (or an endpoint https://bedrock-runtime.{region}.amazonaws.com)",
            )),
            Some(r)
                if !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                out.push(err(
                    "spec.bedrock.region",
                    Reason::InvalidEndpoint,
                    format!("{r:?} is not an AWS region such as us-east-1"),
                ))
            }
            Some(_) => {}
        }
        if spec
            .auth
            .as_ref()
            .is_none_or(|a| a.aws_secret_ref.is_none())
        {
            out.push(err(
                "spec.auth.awsSecretRef",
                Reason::SecretNotFound,
                "provider bedrock signs requests with AWS credentials: set spec.auth.awsSecretRef \
                 to a Secret with the keys accessKeyId and secretAccessKey",
            ));
        }
    } else if spec
        .auth
        .as_ref()
        .is_some_and(|a| a.aws_secret_ref.is_some())
    {
        out.push(err(
            "spec.auth.awsSecretRef",
            Reason::UnsupportedProvider,
            format!(
                "AWS credentials are only used by provider bedrock, not {}",
                spec.provider.as_str()
            ),
        ));
    }
    if spec.bedrock.is_some() && spec.provider != Provider::Bedrock {
        out.push(err(
            "spec.bedrock",
            Reason::UnsupportedProvider,
            format!(
                "only provider bedrock has these settings, not {}",
                spec.provider.as_str()
            ),
        ));
    }
    if let Some(auth) = &spec.auth {
        match (&auth.secret_ref, &auth.keys) {
            (None, None) if auth.aws_secret_ref.is_some() => {}
            (Some(_), Some(_)) | (None, None) => out.push(err(
                "spec.auth",
                Reason::SecretNotFound,
                "exactly one of secretRef, keys or awsSecretRef must be set",
            )),
            (_, _) if auth.aws_secret_ref.is_some() => out.push(err(
                "spec.auth",
                Reason::SecretNotFound,
                "exactly one of secretRef, keys or awsSecretRef must be set",
            )),
            (None, Some(keys)) => {
                if keys.is_empty() {
                    out.push(err(
                        "spec.auth.keys",
                        Reason::SecretNotFound,
                        "a key pool needs at least one key",
                    ));
                } else if keys.iter().all(|k| k.weight == Some(0)) {
                    out.push(err(
                        "spec.auth.keys",
                        Reason::InvalidWeight,
                        "at least one key needs a weight above 0",
                    ));
                }
            }
            (Some(_), None) => {}
        }
    }
    if spec.models.is_empty() {
        out.push(err(
            "spec.models",
            Reason::InvalidModel,
            "a backend must list at least one model",
        ));
    }
    for (i, m) in spec.models.iter().enumerate() {
        if let Err(e) = check_model_pattern(&m.name) {
            out.push(err(
                format!("spec.models[{i}].name"),
                Reason::InvalidModel,
                e,
            ));
        }
        if spec.models[..i].iter().any(|o| o.name == m.name) {
            out.push(err(
                format!("spec.models[{i}].name"),
                Reason::InvalidModel,
                format!("model {:?} is listed twice", m.name),
            ));
        }
        if let Some(p) = &m.pricing {
            let prices = [
                ("inputPerMillion", &p.input_per_million),
                ("outputPerMillion", &p.output_per_million),
                ("cachedInputPerMillion", &p.cached_input_per_million),
                ("cacheReadPerMillion", &p.cache_read_per_million),
                ("cacheWritePerMillion", &p.cache_write_per_million),
            ];
            for (name, value) in prices {
                if let Some(v) = value {
                    if let Err(e) = parse_price(v) {
                        out.push(err(
                            format!("spec.models[{i}].pricing.{name}"),
                            Reason::InvalidPricing,
                            e.to_string(),
                        ));
                    }
                }
            }
        }
    }
    if let Some(p) = &spec.proxy {
        if let Err(why) = proxy_url(&p.url) {
            out.push(err("spec.proxy.url", Reason::InvalidProxy, why));
        }
    }
    if let Some(t) = &spec.timeouts {
        check_duration(&mut out, "spec.timeouts.connect".into(), t.connect.as_ref());
        check_duration(
            &mut out,
            "spec.timeouts.firstByte".into(),
            t.first_byte.as_ref(),
        );
        check_duration(&mut out, "spec.timeouts.idle".into(), t.idle.as_ref());
        check_duration(&mut out, "spec.timeouts.total".into(), t.total.as_ref());
    }
    for (i, ns) in spec.allowed_route_namespaces.iter().enumerate() {
        if ns != "*" && !is_dns_label(ns) {
            out.push(err(
                format!("spec.allowedRouteNamespaces[{i}]"),
                Reason::InvalidDocument,
                format!("{ns:?} is neither a namespace name nor \"*\""),
            ));
        }
    }
    if spec.max_concurrency == Some(0) {
        out.push(err(
            "spec.maxConcurrency",
            Reason::InvalidLimit,
            "maxConcurrency must be at least 1",
        ));
    }
    if let Some(h) = &spec.headers {
        for (name, value) in &h.set {
            check_header_name(&mut out, format!("spec.headers.set[{name}]"), name);
            if is_connection_header(name) {
                out.push(err(
                    format!("spec.headers.set[{name}]"),
                    Reason::InvalidHeader,
                    format!(
                        "{name} is set by the gateway for each connection (the endpoint gives \
                         Host, spec.tls.sni the server name, spec.proxy the proxy)"
                    ),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                out.push(err(
                    format!("spec.headers.set[{name}]"),
                    Reason::InvalidHeader,
                    "header value must not contain CR, LF or NUL",
                ));
            }
        }
        for (i, name) in h.remove.iter().enumerate() {
            check_header_name(&mut out, format!("spec.headers.remove[{i}]"), name);
        }
    }
    out
}

/// Checks an AIRoute spec.
pub fn ai_route(spec: &AIRouteSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    if spec.match_.models.is_empty() {
        out.push(err(
            "spec.match.models",
            Reason::InvalidModel,
            "a route must match at least one model name or glob",
        ));
    }
    for (i, m) in spec.match_.models.iter().enumerate() {
        if let Err(e) = check_model_pattern(m) {
            out.push(err(
                format!("spec.match.models[{i}]"),
                Reason::InvalidModel,
                e,
            ));
        }
    }
    for (i, h) in spec.match_.headers.iter().enumerate() {
        check_header_name(&mut out, format!("spec.match.headers[{i}].name"), &h.name);
    }
    if spec.backends.is_empty() {
        out.push(err(
            "spec.backends",
            Reason::InvalidWeight,
            "a route needs at least one backend",
        ));
    } else if spec.backends.iter().all(|b| b.weight == Some(0)) {
        out.push(err(
            "spec.backends",
            Reason::InvalidWeight,
            "at least one backend needs a weight above 0",
        ));
    }
    let targets = spec
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("spec.backends[{i}]"), b))
        .chain(
            spec.fallbacks
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("spec.fallbacks[{i}]"), b)),
        );
    for (field, b) in targets {
        if b.backend_ref.name.is_empty() {
            out.push(err(
                format!("{field}.backendRef.name"),
                Reason::BackendNotFound,
                "backendRef.name must not be empty",
            ));
        }
        if let Some(ns) = &b.backend_ref.namespace {
            if !is_dns_label(ns) {
                out.push(err(
                    format!("{field}.backendRef.namespace"),
                    Reason::BackendNotFound,
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
        }
        if let Some(model) = &b.model {
            if let Err(e) = check_model_pattern(model) {
                out.push(err(format!("{field}.model"), Reason::InvalidModel, e));
            } else if model.contains(['*', '?']) {
                out.push(err(
                    format!("{field}.model"),
                    Reason::InvalidModel,
                    "the upstream model must be a name, not a glob",
                ));
            }
        }
    }
    if let Some(r) = &spec.retry {
        if r.attempts == 0 || r.attempts > 10 {
            out.push(err(
                "spec.retry.attempts",
                Reason::InvalidLimit,
                "attempts must be between 1 and 10",
            ));
        }
        check_duration(&mut out, "spec.retry.backoff".into(), r.backoff.as_ref());
    }
    check_duration(&mut out, "spec.timeout".into(), spec.timeout.as_ref());
    out
}

/// Checks an AIConsumer spec.
pub fn ai_consumer(spec: &AIConsumerSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, a) in spec.allow.iter().enumerate() {
        if let Err(e) = check_model_pattern(a) {
            out.push(err(format!("spec.allow[{i}]"), Reason::InvalidModel, e));
        }
    }
    for (i, sa) in spec.service_accounts.iter().enumerate() {
        let checks = [
            ("name", Some(&sa.name), is_dns_subdomain as fn(&str) -> bool),
            ("namespace", sa.namespace.as_ref(), is_dns_label),
        ];
        for (field, value, valid) in checks {
            let Some(v) = value else { continue };
            if !valid(v) {
                out.push(err(
                    format!("spec.serviceAccounts[{i}].{field}"),
                    Reason::InvalidDocument,
                    format!("{v:?} is not a valid Kubernetes name"),
                ));
            }
        }
    }
    if let Some(b) = &spec.budget {
        if let Err(e) = parse_price(&b.usd) {
            out.push(err("spec.budget.usd", Reason::InvalidLimit, e.to_string()));
        }
    }
    if let Some(l) = &spec.limits {
        if l.requests_per_minute == Some(0) || l.tokens_per_minute == Some(0) {
            out.push(err(
                "spec.limits",
                Reason::InvalidLimit,
                "a limit of 0 would refuse every request: omit the field for no limit",
            ));
        }
    }
    out
}

/// Checks a forward proxy URL: `http://host:port` with nothing after the authority
/// (credentials go in `basicAuthSecretRef`, never in the URL, so they are not shown in status).
pub fn proxy_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?} is not an http:// URL (the proxy is reached over plain TCP)")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || url.contains(char::is_whitespace)
    {
        return Err(format!(
            "{url:?} must be http://host:port (credentials go in basicAuthSecretRef)"
        ));
    }
    Ok(())
}

/// A minimal absolute-URL check without pulling an URL crate into `api`.
mod http_uri {
    /// Parsed only to validate: scheme, non-empty authority, no whitespace.
    pub struct Probe;

    impl std::str::FromStr for Probe {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let rest = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .ok_or(())?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let bad = |c: char| c.is_whitespace() || c.is_control();
            if authority.is_empty() || authority.contains('@') || s.contains(bad) {
                return Err(());
            }
            if rest.contains(['?', '#']) {
                return Err(());
            }
            Ok(Probe)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::{BackendModel, Pricing, Provider, Timeouts},
        route::{BackendRef, RouteBackend, RouteMatch},
    };

    fn backend() -> ModelBackendSpec {
        ModelBackendSpec {
            provider: Provider::OpenAiCompatible,
            endpoint: Some("http://127.0.0.1:8000/v1".into()),
            auth: None,
            models: vec![BackendModel {
                name: "m".into(),
                pricing: Some(Pricing {
                    input_per_million: Some("1.25".into()),
                    ..Default::default()
                }),
            }],
            timeouts: None,
            max_concurrency: None,
            tls: None,
            proxy: None,
            headers: None,
            allowed_route_namespaces: vec![],
            azure: None,
            bedrock: None,
        }
    }

    fn route(weights: &[Option<u32>]) -> AIRouteSpec {
        AIRouteSpec {
            match_: RouteMatch {
                models: vec!["gpt-*".into()],
                ..Default::default()
            },
            backends: weights
                .iter()
                .map(|w| RouteBackend {
                    backend_ref: BackendRef {
                        name: "b".into(),
                        namespace: None,
                    },
                    model: None,
                    weight: *w,
                })
                .collect(),
            fallbacks: vec![],
            retry: None,
            timeout: None,
            strategy: None,
            web_search: None,
            affinity: None,
            unsupported_tools: None,
            default_max_output_tokens: None,
        }
    }

    #[test]
    fn valid_backend_passes() {
        assert_eq!(model_backend(&backend()), vec![]);
    }

    #[test]
    fn bad_backend_fields_are_named() {
        let mut b = backend();
        b.endpoint = Some("ftp://x".into());
        b.models[0].pricing = Some(Pricing {
            output_per_million: Some("-1".into()),
            ..Default::default()
        });
        b.timeouts = Some(Timeouts {
            first_byte: Some("5 seconds".into()),
            ..Default::default()
        });
        let errs = model_backend(&b);
        let fields: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.reason)).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.endpoint", Reason::InvalidEndpoint),
                (
                    "spec.models[0].pricing.outputPerMillion",
                    Reason::InvalidPricing
                ),
                ("spec.timeouts.firstByte", Reason::InvalidDuration),
            ]
        );
    }

    #[test]
    fn compatible_provider_needs_endpoint() {
        let mut b = backend();
        b.endpoint = None;
        assert_eq!(model_backend(&b)[0].reason, Reason::InvalidEndpoint);
        b.provider = Provider::OpenAi;
        assert!(model_backend(&b).is_empty());
    }

    #[test]
    fn bedrock_needs_a_region_and_aws_credentials() {
        let mut b = backend();
        b.endpoint = None;
        b.provider = Provider::Bedrock;
        let fields = |b: &ModelBackendSpec| -> Vec<String> {
            model_backend(b).into_iter().map(|e| e.field).collect()
        };
        assert_eq!(
            fields(&b),
            ["spec.bedrock.region", "spec.auth.awsSecretRef"]
        );
        b.auth = Some(crate::backend::BackendAuth {
            aws_secret_ref: Some(crate::SecretRef { name: "aws".into() }),
            ..Default::default()
        });
        b.bedrock = Some(crate::BedrockSettings {
            region: Some("us-west-2".into()),
        });
        assert!(fields(&b).is_empty());
        // The endpoint may name the region instead.
        b.bedrock = None;
        b.endpoint = Some("https://bedrock-runtime.eu-central-1.amazonaws.com".into());
        assert_eq!(b.bedrock_region(), Some("eu-central-1"));
        assert!(fields(&b).is_empty());
        b.bedrock = Some(crate::BedrockSettings {
            region: Some("us east".into()),
        });
        assert_eq!(fields(&b), ["spec.bedrock.region"]);
        // AWS credentials and Bedrock settings belong to bedrock backends only.
        b.provider = Provider::OpenAi;
        assert_eq!(fields(&b), ["spec.auth.awsSecretRef", "spec.bedrock"]);
    }

    #[test]
    fn azure_api_version_is_checked() {
        let mut b = backend();
        b.provider = Provider::AzureOpenAi;
        b.azure = Some(crate::AzureSettings {
            api_version: Some("2025-04-01-preview".into()),
        });
        assert!(model_backend(&b).is_empty());
        b.azure = Some(crate::AzureSettings {
            api_version: Some("2024-10-21&x=1".into()),
        });
        assert_eq!(model_backend(&b)[0].field, "spec.azure.apiVersion");
    }

    #[test]
    fn namespace_names_are_checked() {
        assert!(is_dns_label("team-a"));
        for bad in ["", "Team", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        let mut b = backend();
        b.allowed_route_namespaces = vec!["*".into(), "team-a".into(), "Bad_NS".into()];
        let errs = model_backend(&b);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.allowedRouteNamespaces[2]");
        let mut r = route(&[None]);
        r.backends[0].backend_ref.namespace = Some("no such".into());
        assert_eq!(
            ai_route(&r)[0].field,
            "spec.backends[0].backendRef.namespace"
        );
    }

    #[test]
    fn weights_need_one_positive() {
        assert!(ai_route(&route(&[Some(0), None])).is_empty());
        assert!(ai_route(&route(&[Some(1), Some(0)])).is_empty());
        let errs = ai_route(&route(&[Some(0), Some(0)]));
        assert_eq!(errs[0].field, "spec.backends");
        assert_eq!(errs[0].reason, Reason::InvalidWeight);
        assert_eq!(ai_route(&route(&[]))[0].reason, Reason::InvalidWeight);
    }

    #[test]
    fn route_durations_and_models_checked() {
        let mut r = route(&[None]);
        r.timeout = Some("soon".into());
        r.backends[0].model = Some("gpt-*".into());
        r.match_.models.push("has space".into());
        let fields: Vec<_> = ai_route(&r).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.match.models[1]",
                "spec.backends[0].model",
                "spec.timeout"
            ]
        );
    }
}
