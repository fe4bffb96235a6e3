use std::collections::HashMap;

use http::HeaderMap;
use switchyard_api::{Reason, Resources};

use crate::{compile, Compiled, Severity};

const BASE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {openai: sk-upstream, team: sk-team}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: a}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:9/v1/
  auth: {secretRef: {name: keys, key: openai}}
  models:
  - {name: small, pricing: {inputPerMillion: "0.15", outputPerMillion: "0.60"}}
  - {name: large, pricing: {inputPerMillion: "2.50", outputPerMillion: "10"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: b}
spec:
  provider: openai
  models: [{name: small, pricing: {inputPerMillion: "0.10", outputPerMillion: "0.40"}}]
"#;

fn build(extra: &str) -> Compiled {
    let mut r = Resources::default();
    let text = format!("{BASE}---\n{extra}");
    let errs = r.parse_yaml("t.yaml", &text, &HashMap::<String, String>::new());
    assert!(errs.is_empty(), "{errs:?}");
    compile(&r, 1)
}

fn route_for<'t>(c: &'t Compiled, model: &str) -> Option<&'t str> {
    c.table
        .route(model, &HeaderMap::new(), None)
        .map(|m| &*m.route.name)
}

#[test]
fn exact_beats_glob_and_specific_glob_beats_wide() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: wide}
spec: {match: {models: ["*"]}, backends: [{backendRef: {name: a}, model: small}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: gpt}
spec: {match: {models: ["gpt-*"]}, backends: [{backendRef: {name: a}, model: large}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: exact}
spec: {match: {models: ["gpt-4o"]}, backends: [{backendRef: {name: b}, model: small}]}
"#,
    );
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    assert_eq!(route_for(&c, "gpt-4o"), Some("default/exact"));
    assert_eq!(route_for(&c, "gpt-4o-mini"), Some("default/gpt"));
    assert_eq!(route_for(&c, "claude"), Some("default/wide"));
    let m = c
        .table
        .route("gpt-4o-mini", &HeaderMap::new(), None)
        .unwrap();
    assert_eq!(&**m.model_label, "gpt-*");
    assert_eq!(c.table.models().len(), 1);
}

#[test]
fn header_conditions_select_routes() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: canary}
spec:
  match: {models: [m], headers: [{name: x-canary, value: "1"}]}
  backends: [{backendRef: {name: b}, model: small}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: stable}
spec: {match: {models: [m]}, backends: [{backendRef: {name: a}, model: small}]}
"#,
    );
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    assert_eq!(route_for(&c, "m"), Some("default/stable"));
    let mut h = HeaderMap::new();
    h.insert("x-canary", "1".parse().unwrap());
    assert_eq!(
        &*c.table.route("m", &h, None).unwrap().route.name,
        "default/canary"
    );
}

#[test]
fn weighted_pick_follows_weights() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: split}
spec:
  match: {models: [m]}
  backends:
  - {backendRef: {name: a}, model: small, weight: 3}
  - {backendRef: {name: b}, model: small, weight: 1}
  - {backendRef: {name: b}, model: small, weight: 0}
"#,
    );
    let route = c.table.route("m", &HeaderMap::new(), None).unwrap().route;
    fastrand::seed(7);
    let n = 40_000;
    let mut to_a = 0;
    for _ in 0..n {
        let plan = route.plan();
        let t = plan[0];
        assert_ne!(t.weight, 0, "a zero-weight target was picked");
        if &*t.backend.name == "default/a" {
            to_a += 1;
        }
    }
    let share = to_a as f64 / n as f64;
    assert!((share - 0.75).abs() < 0.02, "share to a = {share}");
    // The plan tries the others before fallbacks, each once.
    assert_eq!(route.plan().len(), 2);
}

#[test]
fn cheapest_strategy_picks_lowest_price() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: cheap}
spec:
  match: {models: [m]}
  strategy: cheapest
  backends: [{backendRef: {name: a}, model: large}, {backendRef: {name: a}, model: small}, {backendRef: {name: b}, model: small}]
"#,
    );
    let route = c.table.route("m", &HeaderMap::new(), None).unwrap().route;
    for _ in 0..10 {
        let t = route.plan()[0];
        assert_eq!(
            (&*t.backend.name, t.model.as_deref()),
            ("default/b", Some("small"))
        );
    }
}

#[test]
fn unsupported_tools_policy_defaults_to_drop() {
    use switchyard_providers::chat::UnsupportedTools;
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: strict}
spec: {match: {models: [s]}, unsupportedTools: reject, backends: [{backendRef: {name: a}, model: small}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: lenient}
spec: {match: {models: [l]}, backends: [{backendRef: {name: a}, model: small}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: searching}
spec: {match: {models: [w]}, webSearch: backend, backends: [{backendRef: {name: a}, model: small}]}
"#,
    );
    let policy = |m| {
        c.table
            .route(m, &HeaderMap::new(), None)
            .unwrap()
            .route
            .unsupported_tools
    };
    assert_eq!(policy("s"), UnsupportedTools::Reject);
    assert_eq!(policy("l"), UnsupportedTools::Drop);
    // A caller's web search runs on a backend's own search only where the route says so.
    let search = |m| {
        c.table
            .route(m, &HeaderMap::new(), None)
            .unwrap()
            .route
            .backend_web_search
    };
    assert!(search("w") && !search("l") && !search("s"));
}

#[test]
fn bad_references_are_reported_and_left_out() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: missing}
spec: {match: {models: [x]}, backends: [{backendRef: {name: nope}}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: unserved}
spec: {match: {models: [y]}, backends: [{backendRef: {name: b}, model: large}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: nokey}
spec:
  provider: openai
  auth: {secretRef: {name: keys, key: absent}}
  models: [{name: z}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: good}
spec: {match: {models: [ok]}, backends: [{backendRef: {name: a}}]}
"#,
    );
    let got: Vec<_> = c
        .diagnostics
        .iter()
        .map(|d| (d.name.as_str(), d.error.field.as_str(), d.error.reason))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "missing",
                "spec.backends[0].backendRef.name",
                Reason::BackendNotFound
            ),
            ("unserved", "spec.backends[0].model", Reason::ModelNotServed),
            ("nokey", "spec.auth.secretRef", Reason::SecretNotFound),
        ]
    );
    assert!(c.has_errors());
    assert_eq!(route_for(&c, "ok"), Some("default/good"));
    assert_eq!(route_for(&c, "x"), None);
    assert!(c.diagnostics[2]
        .error
        .message
        .contains("has no key \"absent\""));
}

#[test]
fn conflicting_routes_warn_and_keep_the_first() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: zeta}
spec: {match: {models: [m]}, backends: [{backendRef: {name: a}}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: alpha}
spec: {match: {models: [m]}, backends: [{backendRef: {name: b}}]}
"#,
    );
    assert_eq!(c.diagnostics.len(), 1);
    let d = &c.diagnostics[0];
    assert_eq!(
        (d.name.as_str(), d.severity, d.error.reason),
        ("zeta", Severity::Warning, Reason::ConflictingMatch)
    );
    assert_eq!(route_for(&c, "m"), Some("default/alpha"));
    assert!(!c.has_errors());
}

#[test]
fn anthropic_backends_use_x_api_key_and_messages_paths() {
    use switchyard_providers::Operation;
    for (endpoint, base) in [
        ("", "https://api.anthropic.com"),
        ("endpoint: http://127.0.0.1:9/v1", "http://127.0.0.1:9"),
    ] {
        let c = build(&format!(
            r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude}}
spec:
  provider: anthropic
  {endpoint}
  auth: {{secretRef: {{name: keys, key: openai}}}}
  models: [{{name: claude-x}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: r}}
spec: {{match: {{models: [m]}}, backends: [{{backendRef: {{name: claude}}}}]}}
"#
        ));
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        let backend = &c
            .table
            .route("m", &HeaderMap::new(), None)
            .unwrap()
            .route
            .targets[0]
            .backend;
        let switchyard_router::KeyChoice::Key(key) = backend.pick_key() else {
            panic!("no key")
        };
        assert_eq!(key.name, "x-api-key");
        assert_eq!(key.header, "sk-upstream");
        assert!(key.header.is_sensitive());
        assert_eq!(
            backend
                .uri(Operation::Messages, "claude-x", true)
                .unwrap()
                .to_string(),
            format!("{base}/v1/messages")
        );
        assert_eq!(
            backend
                .uri(Operation::CountTokens, "m", false)
                .unwrap()
                .to_string(),
            format!("{base}/v1/messages/count_tokens")
        );
    }
}

#[test]
fn gemini_and_azure_put_the_model_in_the_path_and_send_their_key_headers() {
    use switchyard_providers::{transcode::BackendFormat, Operation};
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: gemini}
spec:
  provider: gemini
  auth: {secretRef: {name: keys, key: openai}}
  models: [{name: gemini-2.5-flash}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: azure}
spec:
  provider: azure-openai
  endpoint: https://res.openai.azure.com/
  azure: {apiVersion: 2025-04-01-preview}
  auth: {secretRef: {name: keys, key: openai}}
  models: [{name: gpt-4o-prod}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: g}
spec: {match: {models: [g]}, backends: [{backendRef: {name: gemini}, model: gemini-2.5-flash}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: a}
spec: {match: {models: ["gpt-*"]}, backends: [{backendRef: {name: azure}}]}
"#,
    );
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let backend = |m: &str| {
        std::sync::Arc::clone(
            &c.table
                .route(m, &HeaderMap::new(), None)
                .unwrap()
                .route
                .targets[0]
                .backend,
        )
    };
    let gemini = backend("g");
    assert_eq!(gemini.format, BackendFormat::Gemini);
    let switchyard_router::KeyChoice::Key(key) = gemini.pick_key() else {
        panic!("no key")
    };
    assert_eq!(key.name, "x-goog-api-key");
    assert_eq!(key.header, "sk-upstream");
    let uri = |b: &switchyard_router::Backend, op, m: &str, stream| {
        b.uri(op, m, stream).map(|u| u.to_string())
    };
    assert_eq!(
        uri(&gemini, Operation::ChatCompletions, "gemini-2.5-flash", false).as_deref(),
        Some("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent")
    );
    assert_eq!(
        uri(&gemini, Operation::Messages, "gemini-2.5-flash", true).as_deref(),
        Some("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    let azure = backend("gpt-4o");
    assert_eq!(azure.format, BackendFormat::OpenAiChat);
    let switchyard_router::KeyChoice::Key(key) = azure.pick_key() else {
        panic!("no key")
    };
    assert_eq!(key.name, "api-key");
    assert_eq!(
        uri(&azure, Operation::ChatCompletions, "gpt-4o-prod", true).as_deref(),
        Some("https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-04-01-preview")
    );
    assert_eq!(
        uri(&azure, Operation::Embeddings, "emb", false).as_deref(),
        Some("https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-04-01-preview")
    );
    // Azure serves the Responses API on its v1 path, deployment in the body, no api-version.
    assert!(azure.serves_responses() && !gemini.serves_responses());
    assert_eq!(
        uri(&azure, Operation::Responses, "gpt-4o-prod", true).as_deref(),
        Some("https://res.openai.azure.com/openai/v1/responses")
    );
    // A model the backend does not list (the route forwards the caller's) goes in the path
    // only if it cannot change the path.
    for bad in ["../admin", "a/b", "x?y", ".hidden", "", "a b"] {
        assert_eq!(
            uri(&azure, Operation::ChatCompletions, bad, false),
            None,
            "{bad:?}"
        );
    }
}

#[test]
fn bedrock_backends_sign_and_encode_model_ids() {
    use switchyard_providers::{transcode::BackendFormat, Operation};
    let c = build(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: aws}
stringData: {accessKeyId: AKIDEXAMPLE, secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: bedrock}
spec:
  provider: bedrock
  bedrock: {region: us-west-2}
  auth: {awsSecretRef: {name: aws}}
  models: [{name: "anthropic.claude-3-5-sonnet-20240620-v1:0"}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: bedrock-no-secret}
spec:
  provider: bedrock
  bedrock: {region: us-west-2}
  auth: {awsSecretRef: {name: missing}}
  models: [{name: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: b}
spec: {match: {models: ["claude*"]}, backends: [{backendRef: {name: bedrock}}]}
"#,
    );
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.error.field == "spec.auth.awsSecretRef"
                && d.error.reason == Reason::SecretNotFound),
        "{:?}",
        c.diagnostics
    );
    let b = std::sync::Arc::clone(
        &c.table
            .route("claude", &HeaderMap::new(), None)
            .unwrap()
            .route
            .targets[0]
            .backend,
    );
    assert_eq!(b.format, BackendFormat::Bedrock);
    assert!(matches!(b.pick_key(), switchyard_router::KeyChoice::None));
    let uri = |m: &str, stream| {
        b.uri(Operation::ChatCompletions, m, stream)
            .map(|u| u.to_string())
    };
    assert_eq!(
        uri("anthropic.claude-3-5-sonnet-20240620-v1:0", false).as_deref(),
        Some("https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    );
    // A model the backend does not list is encoded too, so it cannot leave its segment.
    assert_eq!(
        uri("../admin", true).as_deref(),
        Some("https://bedrock-runtime.us-west-2.amazonaws.com/model/..%2Fadmin/converse-stream")
    );
    let signer = b.signer.as_ref().expect("a signer");
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    let u: http::Uri = uri("anthropic.claude-3-5-sonnet-20240620-v1:0", false)
        .unwrap()
        .parse()
        .unwrap();
    signer
        .sign(&http::Method::POST, &u, &mut headers, b"{}")
        .unwrap();
    let auth = headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains(
        "/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
    ));
    assert!(headers["authorization"].is_sensitive());
    assert_eq!(headers["host"], "bedrock-runtime.us-west-2.amazonaws.com");
    // The secret never shows, in Debug output or in the debug view.
    let secret = "wJalrXUtnFEMI";
    assert!(!format!("{b:?}").contains(secret));
    assert!(!c.table.debug_view().to_string().contains(secret));
}

#[test]
fn model_names_that_cannot_be_in_a_path_are_refused() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: gemini}
spec:
  provider: gemini
  models: [{name: "models/../x"}]
"#,
    );
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.error.field == "spec.models[0].name"
                && d.error.reason == Reason::InvalidModel),
        "{:?}",
        c.diagnostics
    );
}

#[test]
fn keys_are_sensitive_and_redacted_from_debug_view() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: r}
spec: {match: {models: [m]}, backends: [{backendRef: {name: a}}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: team}
spec: {keySecretRef: {name: keys, key: team}, allow: ["m"]}
"#,
    );
    let route = c.table.route("m", &HeaderMap::new(), None).unwrap().route;
    let switchyard_router::KeyChoice::Key(key) = route.targets[0].backend.pick_key() else {
        panic!("no key")
    };
    assert!(key.header.is_sensitive());
    assert_eq!(key.name, http::header::AUTHORIZATION);
    assert_eq!(key.header, "Bearer sk-upstream");
    let view = c.table.debug_view().to_string();
    assert!(
        !view.contains("sk-upstream") && !view.contains("sk-team"),
        "{view}"
    );
    assert_eq!(
        route.targets[0]
            .backend
            .uri(switchyard_providers::Operation::ChatCompletions, "m", false)
            .unwrap()
            .to_string(),
        "http://127.0.0.1:9/v1/chat/completions"
    );
    let consumers = c.table.consumers();
    assert!(consumers.auth_required());
    let team = consumers.authenticate(b"sk-team").unwrap();
    assert_eq!(&*team.name, "default/team");
    assert!(team.allows("m", "default/r"));
    assert!(!team.allows("other", "default/x"));
    assert!(consumers.authenticate(b"sk-wrong").is_none());
}

#[test]
fn a_broken_consumer_never_opens_the_door() {
    // No AIConsumer at all: the gateway may run open (when the binary allows it).
    assert!(!build("").table.consumers().auth_required());
    // The only consumer lost its Secret: it is refused, and auth stays required.
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: team}
spec: {keySecretRef: {name: gone, key: team}}
"#,
    );
    assert!(c.has_errors());
    let consumers = c.table.consumers();
    assert_eq!(consumers.iter().count(), 0);
    assert!(consumers.configured());
    assert!(
        consumers.auth_required(),
        "a broken consumer opened the gateway"
    );
    // A consumer with no key and no ServiceAccount also means "consumers are configured".
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: keyless}
spec: {allow: [m]}
"#,
    );
    assert!(c.table.consumers().auth_required());
}

#[test]
fn configured_durations_are_capped_so_instant_arithmetic_cannot_overflow() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: slow}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:9/v1
  models: [{name: m}]
  timeouts: {connect: 5124095576030431h, firstByte: 99999999999s, idle: 2s, total: 2562047788015215h}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: r}
spec:
  match: {models: [m]}
  backends: [{backendRef: {name: slow}}]
  timeout: 5124095576030431h
  retry: {attempts: 3, backoff: 5124095576030431h}
"#,
    );
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let route = c.table.route("m", &HeaderMap::new(), None).unwrap().route;
    let cap = crate::MAX_CONFIGURED_DURATION;
    assert_eq!(route.timeout, Some(cap));
    assert_eq!(route.retry.backoff, cap);
    let t = &route.targets[0].backend.timeouts;
    assert_eq!(
        (t.connect, t.first_byte, t.total),
        (Some(cap), Some(cap), Some(cap))
    );
    assert_eq!(
        t.idle,
        Some(std::time::Duration::from_secs(2)),
        "short ones are kept"
    );
    // What the data plane does with them cannot panic: a deadline, and the longest
    // back-off (doubled six times, jittered by up to 1.5).
    let now = std::time::Instant::now();
    for d in [cap, route.retry.backoff.mul_f64(64.0 * 1.5)] {
        assert!(now.checked_add(d).is_some());
    }
}

#[test]
fn pricing_cost() {
    let c = build(
        "apiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: r}\nspec: {match: {models: [m]}, backends: [{backendRef: {name: a}, model: large}]}\n",
    );
    let t = &c
        .table
        .route("m", &HeaderMap::new(), None)
        .unwrap()
        .route
        .targets[0];
    let usage = switchyard_providers::Usage {
        input_tokens: 1_000_000,
        output_tokens: 500_000,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
    };
    assert!((t.pricing.cost_usd(&usage) - 7.5).abs() < 1e-9);
}

#[test]
fn cache_prices_come_from_the_resource_the_catalog_or_the_provider_default() {
    use switchyard_api::Provider;
    let usd = |s: &str| switchyard_api::parse_price(s).unwrap();
    let spec =
        |json: &str| -> switchyard_api::backend::Pricing { serde_json::from_str(json).unwrap() };
    // Anthropic without cache prices: reads at 0.1x, writes at 1.25x input.
    let p = crate::resolve_pricing(
        Provider::Anthropic,
        "my-model",
        Some(&spec(
            r#"{"inputPerMillion": "4", "outputPerMillion": "20"}"#,
        )),
    )
    .unwrap();
    assert_eq!(
        (p.cached_input, p.cache_write, p.known),
        (usd("0.4"), usd("5"), true)
    );
    // OpenAI dialects: reads at 0.5x, writes at input.
    let p = crate::resolve_pricing(
        Provider::OpenAiCompatible,
        "x",
        Some(&spec(r#"{"inputPerMillion": "2"}"#)),
    )
    .unwrap();
    assert_eq!((p.cached_input, p.cache_write), (usd("1"), usd("2")));
    // The catalog when the resource says nothing; the resource's price wins field by field;
    // cacheReadPerMillion wins over its older name.
    let p = crate::resolve_pricing(Provider::Anthropic, "claude-haiku-4-5", None).unwrap();
    assert_eq!(
        (p.input, p.output, p.cached_input, p.cache_write),
        (usd("1"), usd("5"), usd("0.10"), usd("1.25"))
    );
    let p = crate::resolve_pricing(
        Provider::Anthropic,
        "claude-haiku-4-5",
        Some(&spec(
            r#"{"outputPerMillion": "6", "cachedInputPerMillion": "0.2", "cacheReadPerMillion": "0.3"}"#,
        )),
    )
    .unwrap();
    assert_eq!(
        (p.input, p.output, p.cached_input),
        (usd("1"), usd("6"), usd("0.3"))
    );
    // Neither: unknown, and its cost is unknown rather than $0.
    let p = crate::resolve_pricing(Provider::OpenAi, "nobody-prices-this", None).unwrap();
    assert!(!p.known);
    let u = switchyard_providers::Usage {
        input_tokens: 10,
        ..Default::default()
    };
    assert_eq!(p.cost(&u), None);
    // A bad price names its field.
    let e = crate::resolve_pricing(
        Provider::OpenAi,
        "m",
        Some(&spec(r#"{"cacheWritePerMillion": "x"}"#)),
    )
    .unwrap_err();
    assert_eq!(e.0, "cacheWritePerMillion");
}

#[test]
fn cache_reads_and_writes_are_priced_and_savings_counted() {
    // Claude Sonnet 4.5 list prices: $3 input, $3.75 writes, $0.30 reads, $15 output.
    let p = crate::resolve_pricing(
        switchyard_api::Provider::Anthropic,
        "claude-sonnet-4-5",
        None,
    )
    .unwrap();
    let u = switchyard_providers::Usage {
        input_tokens: 1_000_000 + 2_000_000 + 400_000,
        cached_input_tokens: 2_000_000,
        cache_write_tokens: 400_000,
        output_tokens: 100_000,
    };
    // 1M fresh × 3 + 2M reads × 0.30 + 0.4M writes × 3.75 + 0.1M out × 15.
    let want = 3.0 + 0.6 + 1.5 + 1.5;
    assert!(
        (p.cost(&u).unwrap() - want).abs() < 1e-9,
        "{:?}",
        p.cost(&u)
    );
    // Saved: 2M reads × (3 − 0.30).
    assert!((p.saved_usd(&u) - 5.4).abs() < 1e-9);
}

#[test]
fn a_model_without_any_price_is_flagged_pricing_unknown() {
    let c = build(
        "apiVersion: switchyard.dev/v1alpha1\nkind: ModelBackend\nmetadata: {name: nop}\nspec: {provider: openai-compatible, endpoint: 'http://127.0.0.1:1/v1', models: [{name: house-model}, {name: deepseek-chat}]}\n",
    );
    let flagged: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.error.reason == Reason::PricingUnknown)
        .map(|d| (d.name.as_str(), d.severity, d.error.field.as_str()))
        .collect();
    assert_eq!(
        flagged,
        vec![("nop", crate::Severity::Warning, "spec.models[0].pricing")]
    );
}

#[test]
fn cross_namespace_refs_need_the_backends_consent() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: shared, namespace: platform}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:9/v1
  models: [{name: small}]
  allowedRouteNamespaces: [team-a]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: granted, namespace: team-a}
spec: {match: {models: [a]}, backends: [{backendRef: {name: shared, namespace: platform}}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: refused, namespace: team-b}
spec: {match: {models: [b]}, backends: [{backendRef: {name: shared, namespace: platform}}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: same-ns, namespace: team-b}
spec: {match: {models: [c]}, backends: [{backendRef: {name: a}}]}
"#,
    );
    let got: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.error.reason != Reason::PricingUnknown)
        .map(|d| (d.namespace.as_str(), d.name.as_str(), d.error.reason))
        .collect();
    // `same-ns` looks for `a` in its own namespace, team-b, where there is none.
    assert_eq!(
        got,
        vec![
            ("team-b", "refused", Reason::RefNotPermitted),
            ("team-b", "same-ns", Reason::BackendNotFound),
        ]
    );
    assert!(c.diagnostics[0]
        .error
        .message
        .contains("does not allow AIRoutes from namespace team-b"));
    assert_eq!(route_for(&c, "a"), Some("team-a/granted"));
    assert_eq!(route_for(&c, "b"), None);
}

#[test]
fn service_accounts_map_to_one_consumer_each() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: batch, namespace: team-a}
spec: {serviceAccounts: [{name: worker}, {namespace: jobs, name: nightly.runner}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: thief, namespace: team-b}
spec: {serviceAccounts: [{namespace: team-a, name: worker}]}
"#,
    );
    let consumers = c.table.consumers();
    assert!(consumers.auth_required());
    assert!(consumers.accepts_service_accounts());
    let by = |u: &str| consumers.by_service_account(u).map(|c| &*c.name);
    assert_eq!(
        by("system:serviceaccount:team-a:worker"),
        Some("team-a/batch")
    );
    assert_eq!(
        by("system:serviceaccount:jobs:nightly.runner"),
        Some("team-a/batch")
    );
    assert_eq!(by("system:serviceaccount:team-b:worker"), None);
    // The second claim on the same ServiceAccount is refused, naming the field.
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.name == "thief")
        .expect("a diagnostic for the duplicate");
    assert_eq!(d.severity, Severity::Error);
    assert!(d.to_string().contains("spec.serviceAccounts[0]"), "{d}");
    assert!(consumers.get("team-b/thief").is_none());
}

#[test]
fn consumers_are_found_by_namespace_and_name() {
    // "a-b/x" sorts before "a/x" as a string but after it as (namespace, name).
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: x, namespace: a-b}
spec: {allow: ["m"]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: x, namespace: a}
spec: {allow: ["m"]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: y, namespace: a}
spec: {allow: ["m"]}
"#,
    );
    let consumers = c.table.consumers();
    for name in ["a/x", "a/y", "a-b/x"] {
        assert_eq!(consumers.get(name).map(|c| &*c.name), Some(name));
    }
    for name in ["a/z", "b/x", "a", ""] {
        assert!(consumers.get(name).is_none(), "{name}");
    }
}

#[test]
fn unusable_tls_and_proxy_settings_refuse_the_backend_with_a_reason() {
    let c = build(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: tls}
stringData: {notpem: "hello", creds: "nocolon"}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: ca-key-missing}
spec:
  provider: openai
  tls: {caSecretRef: {name: tls, key: ca.crt}}
  models: [{name: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: ca-not-pem}
spec:
  provider: openai
  tls: {caSecretRef: {name: tls, key: notpem}}
  models: [{name: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: bad-sni}
spec:
  provider: openai
  tls: {sni: "not a name"}
  models: [{name: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: bad-creds}
spec:
  provider: openai
  proxy: {url: "http://127.0.0.1:3128", basicAuthSecretRef: {name: tls, key: creds}}
  models: [{name: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: https-proxy}
spec:
  provider: openai
  proxy: {url: "https://127.0.0.1:3128"}
  models: [{name: m}]
"#,
    );
    let got: Vec<_> = c
        .diagnostics
        .iter()
        .map(|d| (d.name.as_str(), d.error.field.as_str(), d.error.reason))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "bad-creds",
                "spec.proxy.basicAuthSecretRef",
                Reason::InvalidProxy
            ),
            ("bad-sni", "spec.tls.sni", Reason::InvalidTls),
            (
                "ca-key-missing",
                "spec.tls.caSecretRef",
                Reason::SecretNotFound
            ),
            ("ca-not-pem", "spec.tls.caSecretRef", Reason::InvalidTls),
            ("https-proxy", "spec.proxy.url", Reason::InvalidProxy),
        ]
    );
    // The good backends keep serving.
    assert!(c.table.backends().iter().any(|b| &*b.name == "default/a"));
}

#[test]
fn backends_get_their_host_and_connection_settings() {
    let c = build(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: proxied}
spec:
  provider: openai
  endpoint: https://edge.example:443/v1
  tls: {sni: edge.internal}
  proxy: {url: "http://127.0.0.1:3128"}
  models: [{name: m, pricing: {inputPerMillion: "1"}}]
"#,
    );
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let backend = |name: &str| {
        c.table
            .backends()
            .iter()
            .find(|b| &*b.name == name)
            .unwrap()
            .clone()
    };
    let a = backend("default/a");
    assert_eq!(a.host, "127.0.0.1:9");
    assert_eq!(a.egress.id, 0);
    let p = backend("default/proxied");
    assert_eq!(p.host, "edge.example");
    assert_ne!(p.egress.id, 0);
    assert_eq!(
        p.egress.server_name.as_ref().unwrap().to_str(),
        "edge.internal"
    );
    assert_eq!(
        p.egress.proxy.as_ref().unwrap().uri,
        "http://127.0.0.1:3128/"
    );
}

#[test]
fn a_refused_key_replaced_by_its_secret_is_reported_once() {
    let handle = switchyard_router::TableHandle::new();
    let with_key = |key: &str| {
        let mut r = Resources::default();
        let text = BASE.replace("sk-upstream", key);
        let errs = r.parse_yaml("t.yaml", &text, &HashMap::<String, String>::new());
        assert!(errs.is_empty(), "{errs:?}");
        compile(&r, 1).table
    };
    assert!(handle.store(with_key("sk-old")).is_empty());
    // A key in service that is replaced is not a restore.
    assert!(handle.store(with_key("sk-other")).is_empty());
    let table = handle.load_full();
    let a = table
        .backends()
        .iter()
        .find(|b| &*b.name == "default/a")
        .unwrap();
    assert!(a.keys()[0]
        .state()
        .disable("upstream answered 401".into())
        .is_some());
    // The same key again (another reload): still disabled, nothing to report.
    assert!(handle.store(with_key("sk-other")).is_empty());
    let replaced = handle.store(with_key("sk-new"));
    assert_eq!(
        replaced,
        vec![switchyard_router::ReplacedKey {
            backend: "default/a".into(),
            provider: "openai-compatible",
        }]
    );
    assert!(handle.store(with_key("sk-newer")).is_empty());
}
