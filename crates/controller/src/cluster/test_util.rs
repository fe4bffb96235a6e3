//! `mk_*` builders for unit tests: objects as the API server would return them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    ByteString,
};
use switchyard_api::{
    backend::{BackendAuth, BackendModel},
    route::{BackendRef, RouteBackend, RouteMatch},
    AIConsumer, AIConsumerSpec, AIRoute, AIRouteSpec, ModelBackend, ModelBackendSpec, Provider,
    SecretKeyRef,
};

use super::index::ObjKey;

pub fn key(ns: &str, name: &str) -> ObjKey {
    (ns.to_string(), name.to_string())
}

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{ns}-{name}")),
        generation: Some(1),
        resource_version: Some("1".into()),
        creation_timestamp: Some(Time("2024-01-01T00:00:00Z".parse().unwrap())),
        ..ObjectMeta::default()
    }
}

pub fn mk_backend(ns: &str, name: &str, secret: Option<&str>) -> ModelBackend {
    ModelBackend {
        metadata: meta(ns, name),
        spec: ModelBackendSpec {
            provider: Provider::OpenAiCompatible,
            endpoint: Some("http://127.0.0.1:9/v1".into()),
            auth: secret.map(|s| BackendAuth {
                secret_ref: Some(SecretKeyRef {
                    name: s.into(),
                    key: "apiKey".into(),
                }),
                keys: None,
                aws_secret_ref: None,
            }),
            models: vec![BackendModel {
                name: "m".into(),
                // Priced, so that a backend with nothing wrong has no diagnostic at all (an
                // unpriced model is a PricingUnknown warning).
                pricing: Some(switchyard_api::backend::Pricing {
                    input_per_million: Some("1".into()),
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
        },
        status: None,
    }
}

pub fn mk_route(ns: &str, name: &str, models: &[&str], backend: &str) -> AIRoute {
    AIRoute {
        metadata: meta(ns, name),
        spec: AIRouteSpec {
            match_: RouteMatch {
                models: models.iter().map(|m| m.to_string()).collect(),
                ..RouteMatch::default()
            },
            backends: vec![RouteBackend {
                backend_ref: BackendRef {
                    name: backend.into(),
                    namespace: None,
                },
                model: None,
                weight: None,
            }],
            fallbacks: vec![],
            retry: None,
            timeout: None,
            strategy: None,
            web_search: None,
            affinity: None,
            unsupported_tools: None,
            default_max_output_tokens: None,
        },
        status: None,
    }
}

pub fn mk_consumer(ns: &str, name: &str, secret: &str) -> AIConsumer {
    AIConsumer {
        metadata: meta(ns, name),
        spec: AIConsumerSpec {
            key_secret_ref: Some(SecretKeyRef {
                name: secret.into(),
                key: "key".into(),
            }),
            additional_key_secret_refs: vec![],
            service_accounts: vec![],
            allow: vec![],
            limits: None,
            budget: None,
            budget_ref: None,
        },
        status: None,
    }
}

pub fn mk_secret(ns: &str, name: &str, k: &str, v: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            generation: None,
            ..meta(ns, name)
        },
        data: Some(BTreeMap::from([(
            k.to_string(),
            ByteString(v.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}
