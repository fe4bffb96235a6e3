//! The local-file document model: the same manifests a platform team would `kubectl apply`,
//! read from multi-document YAML.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Deserialize;

use crate::{AIBudget, AIConsumer, AIRoute, ModelBackend};

/// The namespace given to documents without `metadata.namespace`, as `kubectl` does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Every resource kind the gateway reads, as parsed from YAML or listed from the API server.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// ModelBackend objects.
    pub backends: Vec<ModelBackend>,
    /// AIRoute objects.
    pub routes: Vec<AIRoute>,
    /// AIConsumer objects.
    pub consumers: Vec<AIConsumer>,
    /// AIBudget objects.
    pub budgets: Vec<AIBudget>,
    /// Secrets, with `stringData` already folded into `data` and env references expanded.
    pub secrets: Vec<Secret>,
    /// Where each object was read from, keyed by `(kind, namespace, name)`; empty for objects
    /// listed from the API server.
    pub origins: BTreeMap<(String, String, String), Origin>,
}

/// Where a document came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path as given.
    pub file: String,
    /// Zero-based index of the document inside the file.
    pub index: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file, self.index + 1)
    }
}

/// A document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {resource}: {field}: {message}")]
pub struct DocumentError {
    /// Where the document is.
    pub origin: Origin,
    /// `Kind namespace/name`, or what is known of it.
    pub resource: String,
    /// The offending field path (`spec.backends[0].weight`), or `-` for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Reads environment variables for `${VAR}` references in Secrets.
pub trait EnvLookup {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> EnvLookup for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<NameMeta>,
}

#[derive(Deserialize)]
struct NameMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

const GROUP_VERSION: &str = "switchyard.dev/v1alpha1";

impl Resources {
    /// Parses every document of one YAML text into `self`.
    ///
    /// Documents of kinds the gateway does not read (a Deployment next to the routes, say) are
    /// skipped, so a folder of ordinary manifests can be pointed at as it is. Errors are
    /// collected rather than stopping at the first, so one run reports every problem.
    pub fn parse_yaml(
        &mut self,
        file: &str,
        text: &str,
        env: &dyn EnvLookup,
    ) -> Vec<DocumentError> {
        let mut errors = Vec::new();
        for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let origin = Origin {
                file: file.to_string(),
                index,
            };
            let value = match serde_yaml::Value::deserialize(de) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    errors.push(DocumentError {
                        origin,
                        resource: "?".into(),
                        field: "-".into(),
                        message: format!("not valid YAML: {e}"),
                    });
                    // The YAML stream cannot be resynchronised after a syntax error.
                    break;
                }
            };
            if let Err(e) = self.add_value(&origin, value, env) {
                errors.push(*e);
            }
        }
        errors
    }

    fn add_value(
        &mut self,
        origin: &Origin,
        value: serde_yaml::Value,
        env: &dyn EnvLookup,
    ) -> Result<(), Box<DocumentError>> {
        let meta: TypeMeta =
            serde_yaml::from_value(value.clone()).map_err(|e| doc_err(origin, "?", "-", e))?;
        let name = meta
            .metadata
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or_default();
        let namespace = meta
            .metadata
            .as_ref()
            .and_then(|m| m.namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let resource = format!("{} {namespace}/{name}", meta.kind);
        let ours = matches!(
            meta.kind.as_str(),
            "ModelBackend" | "AIRoute" | "AIConsumer" | "AIBudget"
        );
        if ours && meta.api_version != GROUP_VERSION {
            return Err(Box::new(DocumentError {
                origin: origin.clone(),
                resource,
                field: "apiVersion".into(),
                message: format!(
                    "unsupported apiVersion {:?}: expected {GROUP_VERSION:?}",
                    meta.api_version
                ),
            }));
        }
        let is_secret = meta.kind == "Secret" && meta.api_version == "v1";
        if !ours && !is_secret {
            return Ok(());
        }
        if name.is_empty() {
            return Err(Box::new(DocumentError {
                origin: origin.clone(),
                resource,
                field: "metadata.name".into(),
                message: "metadata.name is required".into(),
            }));
        }
        self.origins.insert(
            (meta.kind.clone(), namespace.clone(), name.clone()),
            origin.clone(),
        );
        match meta.kind.as_str() {
            "ModelBackend" => {
                let mut obj: ModelBackend = typed(origin, &resource, value)?;
                obj.metadata.namespace = Some(namespace);
                self.backends.push(obj);
            }
            "AIRoute" => {
                let mut obj: AIRoute = typed(origin, &resource, value)?;
                obj.metadata.namespace = Some(namespace);
                self.routes.push(obj);
            }
            "AIConsumer" => {
                let mut obj: AIConsumer = typed(origin, &resource, value)?;
                obj.metadata.namespace = Some(namespace);
                self.consumers.push(obj);
            }
            "AIBudget" => {
                let mut obj: AIBudget = typed(origin, &resource, value)?;
                obj.metadata.namespace = Some(namespace);
                self.budgets.push(obj);
            }
            _ => {
                let mut obj: Secret = typed(origin, &resource, value)?;
                obj.metadata.namespace = Some(namespace);
                fold_string_data(&mut obj, env)
                    .map_err(|(field, message)| doc_err(origin, &resource, &field, message))?;
                self.secrets.push(obj);
            }
        }
        Ok(())
    }

    /// Where an object was read from, if it came from a file.
    pub fn origin(&self, kind: &str, namespace: &str, name: &str) -> Option<&Origin> {
        self.origins
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
    }

    /// Finds a secret's key, as bytes.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<&[u8]> {
        self.secrets
            .iter()
            .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace))
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    origin: &Origin,
    resource: &str,
    value: serde_yaml::Value,
) -> Result<T, Box<DocumentError>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "-".to_string() } else { path };
        doc_err(origin, resource, &field, e.into_inner())
    })
}

fn doc_err(
    origin: &Origin,
    resource: &str,
    field: &str,
    message: impl fmt::Display,
) -> Box<DocumentError> {
    Box::new(DocumentError {
        origin: origin.clone(),
        resource: resource.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    })
}

/// Moves `stringData` into `data`, as the API server does on write, expanding `${VAR}`
/// references from the environment so real keys can stay out of files.
fn fold_string_data(secret: &mut Secret, env: &dyn EnvLookup) -> Result<(), (String, String)> {
    let Some(string_data) = secret.string_data.take() else {
        return Ok(());
    };
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    for (key, value) in string_data {
        let expanded = expand_env(&value, env).map_err(|var| {
            (
                format!("stringData.{key}"),
                format!("environment variable {var} is not set"),
            )
        })?;
        data.insert(key, k8s_openapi::ByteString(expanded.into_bytes()));
    }
    Ok(())
}

/// Expands `${NAME}` and `${NAME:-default}` references; `$${` stands for a literal `${`.
/// Returns the first unset variable (without a default) on failure.
pub fn expand_env(value: &str, env: &dyn EnvLookup) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            return Ok(out);
        };
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            out.push_str("${");
            rest = after;
            continue;
        }
        match (env.get(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("KEY".to_string(), "sk-123".to_string())])
    }

    #[test]
    fn expands_env_references() {
        assert_eq!(expand_env("${KEY}", &env()).unwrap(), "sk-123");
        assert_eq!(expand_env("a-${KEY}-b", &env()).unwrap(), "a-sk-123-b");
        assert_eq!(expand_env("$${KEY}", &env()).unwrap(), "${KEY}");
        assert_eq!(expand_env("plain", &env()).unwrap(), "plain");
        assert_eq!(expand_env("${MISSING}", &env()).unwrap_err(), "MISSING");
        assert_eq!(expand_env("${MISSING:-dflt}", &env()).unwrap(), "dflt");
        assert_eq!(expand_env("${KEY:-dflt}", &env()).unwrap(), "sk-123");
    }

    #[test]
    fn parses_documents_and_skips_foreign_kinds() {
        let text = r#"
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: mock}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:8000/v1
  auth: {secretRef: {name: mock-key, key: apiKey}}
  models: [{name: mock-model, pricing: {inputPerMillion: "0.15", outputPerMillion: "0.60"}}]
---
apiVersion: v1
kind: Secret
metadata: {name: mock-key}
stringData: {apiKey: "${KEY}"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: chat, namespace: team-a}
spec:
  match: {models: ["gpt-*"]}
  backends: [{backendRef: {name: mock}, model: mock-model, weight: 3}]
"#;
        let mut r = Resources::default();
        let errors = r.parse_yaml("routes.yaml", text, &env());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.backends.len(), 1);
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            r.secret_value("default", "mock-key", "apiKey"),
            Some(&b"sk-123"[..])
        );
    }

    #[test]
    fn reports_file_resource_and_field() {
        let text = r#"
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  match: {models: [a]}
  backends: [{backendRef: {name: mock}, weight: "heavy"}]
"#;
        let mut r = Resources::default();
        let errors = r.parse_yaml("bad.yaml", text, &env());
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.resource, "AIRoute default/chat");
        assert_eq!(e.field, "spec.backends[0].weight");
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "bad.yaml (document 1): AIRoute default/chat: spec.backends[0].weight:"
            ),
            "{shown}"
        );
    }

    #[test]
    fn missing_env_var_is_an_error() {
        let text =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: \"${NOPE}\"}\n";
        let mut r = Resources::default();
        let errors = r.parse_yaml("s.yaml", text, &env());
        assert_eq!(errors[0].field, "stringData.k");
        assert!(errors[0].message.contains("NOPE"));
    }
}
