//! The objects the controller currently sees, as a plain struct with `apply`/`delete`, and
//! its conversion into the [`Inputs`] that [`switchyard_compile::compile_inputs`] takes.
//!
//! No I/O: the reflector stores are copied in here before each rebuild, and unit tests fill
//! it with `mk_*` builders.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use switchyard_api::{AIBudget, AIConsumer, AIRoute, ModelBackend, Resources};
use switchyard_compile::Inputs;

/// `(namespace, name)`.
pub type ObjKey = (String, String);

/// The kinds that get a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `ModelBackend`.
    ModelBackend,
    /// `AIRoute`.
    AIRoute,
    /// `AIConsumer`.
    AIConsumer,
}

/// Which namespaces are watched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (cluster-wide watches).
    #[default]
    All,
    /// Only these (one watch per namespace and kind).
    Only(BTreeSet<String>),
}

/// The current objects of every kind the table is compiled from.
#[derive(Clone, Debug, Default)]
pub struct Index {
    namespaces: Namespaces,
    backends: BTreeMap<ObjKey, Arc<ModelBackend>>,
    routes: BTreeMap<ObjKey, Arc<AIRoute>>,
    consumers: BTreeMap<ObjKey, Arc<AIConsumer>>,
    budgets: BTreeMap<ObjKey, Arc<AIBudget>>,
    secrets: BTreeMap<ObjKey, Arc<Secret>>,
}

/// A kind the [`Index`] holds.
pub trait Indexed: Resource + Sized {
    /// The index's map for this kind.
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>>;
    /// The index's map for this kind, to read.
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>>;
}

// === impl Kind ===

impl Kind {
    /// The kind's name, as in manifests and diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ModelBackend => "ModelBackend",
            Kind::AIRoute => "AIRoute",
            Kind::AIConsumer => "AIConsumer",
        }
    }

    /// The kind named `s` (as in [`Kind::as_str`]), if it is one.
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::ModelBackend, Kind::AIRoute, Kind::AIConsumer]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Namespaces ===

impl Namespaces {
    /// From the `--namespace` flags: none means all.
    pub fn from_flags<I: IntoIterator<Item = String>>(flags: I) -> Self {
        let set: BTreeSet<String> = flags.into_iter().filter(|n| !n.is_empty()).collect();
        if set.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(set)
        }
    }

    /// Whether objects in `ns` are watched.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }

    /// The namespaces to open watches in: `[None]` for one cluster-wide watch per kind.
    pub fn watch_scopes(&self) -> Vec<Option<String>> {
        match self {
            Namespaces::All => vec![None],
            Namespaces::Only(set) => set.iter().cloned().map(Some).collect(),
        }
    }
}

// === impl Index ===

impl Index {
    /// An empty index accepting objects in `namespaces`.
    pub fn new(namespaces: Namespaces) -> Self {
        Index {
            namespaces,
            ..Index::default()
        }
    }

    /// Adds or replaces an object. Objects outside the watched namespaces are ignored
    /// (watches never deliver them; this keeps the index honest if one ever did).
    pub fn apply<K: Indexed>(&mut self, obj: impl Into<Arc<K>>) {
        let obj = obj.into();
        let Some(ns) = obj.meta().namespace.clone() else {
            return;
        };
        if !self.namespaces.contains(&ns) {
            return;
        }
        K::map(self).insert((ns, obj.name_any()), obj);
    }

    /// Removes an object.
    pub fn delete<K: Indexed>(&mut self, namespace: &str, name: &str) {
        K::map(self).remove(&(namespace.to_string(), name.to_string()));
    }

    /// The object `key` of kind `K`, if present.
    pub fn get<K: Indexed>(&self, key: &ObjKey) -> Option<&Arc<K>> {
        K::map_ref(self).get(key)
    }

    /// The ModelBackends.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<ModelBackend>> {
        self.backends.values()
    }

    /// The AIRoutes.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<AIRoute>> {
        self.routes.values()
    }

    /// The AIConsumers.
    pub fn consumers(&self) -> impl Iterator<Item = &Arc<AIConsumer>> {
        self.consumers.values()
    }

    /// A Secret, if seen.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Arc<Secret>> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    /// The Secrets some ModelBackend or AIConsumer refers to (whether or not they exist).
    /// Only these reach the compile step, and only changes to these trigger a rebuild.
    pub fn referenced_secrets(&self) -> BTreeSet<ObjKey> {
        let mut out = BTreeSet::new();
        for (ns, name) in self.backends.values().flat_map(|b| backend_secret_refs(b)) {
            out.insert((ns, name));
        }
        for (ns, name) in self
            .consumers
            .values()
            .flat_map(|c| consumer_secret_refs(c))
        {
            out.insert((ns, name));
        }
        out
    }

    /// The compile input, borrowed: every object, and of the Secrets only the referenced
    /// ones.
    pub fn inputs(&self) -> Inputs<'_> {
        let referenced = self.referenced_secrets();
        Inputs {
            backends: self.backends.values().map(|b| &**b).collect(),
            routes: self.routes.values().map(|r| &**r).collect(),
            consumers: self.consumers.values().map(|c| &**c).collect(),
            budgets: self.budgets.values().map(|b| &**b).collect(),
            secrets: self
                .secrets
                .iter()
                .filter(|(k, _)| referenced.contains(*k))
                .map(|(_, s)| &**s)
                .collect(),
        }
    }

    /// The compile input as owned [`Resources`] (a copy of every object; [`Index::inputs`]
    /// lends them instead).
    pub fn resources(&self) -> Resources {
        let referenced = self.referenced_secrets();
        Resources {
            backends: self.backends.values().map(|b| (**b).clone()).collect(),
            routes: self.routes.values().map(|r| (**r).clone()).collect(),
            consumers: self.consumers.values().map(|c| (**c).clone()).collect(),
            budgets: self.budgets.values().map(|b| (**b).clone()).collect(),
            secrets: self
                .secrets
                .iter()
                .filter(|(k, _)| referenced.contains(*k))
                .map(|(_, s)| (**s).clone())
                .collect(),
            origins: BTreeMap::new(),
        }
    }
}

/// The `(namespace, name)` of every Secret an AIConsumer refers to: its key and its
/// additional keys.
pub fn consumer_secret_refs(c: &AIConsumer) -> Vec<ObjKey> {
    let Some(ns) = c.namespace() else {
        return vec![];
    };
    c.spec
        .key_secret_ref
        .iter()
        .chain(&c.spec.additional_key_secret_refs)
        .map(|r| (ns.clone(), r.name.clone()))
        .collect()
}

/// The `(namespace, name)` of every Secret a ModelBackend refers to.
pub fn backend_secret_refs(b: &ModelBackend) -> Vec<ObjKey> {
    let Some(ns) = b.namespace() else {
        return vec![];
    };
    let mut refs = Vec::new();
    if let Some(auth) = &b.spec.auth {
        refs.extend(auth.secret_ref.iter().map(|r| r.name.clone()));
        refs.extend(auth.aws_secret_ref.iter().map(|r| r.name.clone()));
        refs.extend(
            auth.keys
                .iter()
                .flatten()
                .map(|k| k.secret_ref.name.clone()),
        );
    }
    if let Some(tls) = &b.spec.tls {
        refs.extend(tls.ca_secret_ref.iter().map(|r| r.name.clone()));
    }
    if let Some(proxy) = &b.spec.proxy {
        refs.extend(proxy.basic_auth_secret_ref.iter().map(|r| r.name.clone()));
    }
    refs.into_iter().map(|name| (ns.clone(), name)).collect()
}

impl Indexed for ModelBackend {
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut index.backends
    }
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>> {
        &index.backends
    }
}

impl Indexed for AIRoute {
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut index.routes
    }
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>> {
        &index.routes
    }
}

impl Indexed for AIConsumer {
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut index.consumers
    }
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>> {
        &index.consumers
    }
}

impl Indexed for AIBudget {
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut index.budgets
    }
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>> {
        &index.budgets
    }
}

impl Indexed for Secret {
    fn map(index: &mut Index) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut index.secrets
    }
    fn map_ref(index: &Index) -> &BTreeMap<ObjKey, Arc<Self>> {
        &index.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_util::*;

    #[test]
    fn only_referenced_secrets_reach_compile() {
        let mut index = Index::new(Namespaces::All);
        index.apply(mk_backend("ns", "b", Some("b-key")));
        index.apply(mk_consumer("ns", "c", "c-key"));
        index.apply(mk_secret("ns", "b-key", "apiKey", "sk-1"));
        index.apply(mk_secret("ns", "c-key", "key", "vk-1"));
        index.apply(mk_secret("ns", "unrelated", "token", "x"));
        // Same name, other namespace: not what `ns/b` refers to.
        index.apply(mk_secret("other", "b-key", "apiKey", "sk-2"));

        let refs: Vec<_> = index.referenced_secrets().into_iter().collect();
        assert_eq!(refs, vec![key("ns", "b-key"), key("ns", "c-key")]);
        let r = index.resources();
        let names: Vec<_> = r
            .secrets
            .iter()
            .map(|s| (s.namespace().unwrap(), s.name_any()))
            .collect();
        assert_eq!(names, vec![key("ns", "b-key"), key("ns", "c-key")]);
        assert_eq!(r.secret_value("ns", "b-key", "apiKey"), Some(&b"sk-1"[..]));
    }

    #[test]
    fn additional_consumer_keys_reach_compile() {
        let mut index = Index::new(Namespaces::All);
        let mut c = mk_consumer("ns", "c", "c-key");
        c.spec
            .additional_key_secret_refs
            .push(switchyard_api::SecretKeyRef {
                name: "c-next".into(),
                key: "key".into(),
            });
        index.apply(c);
        index.apply(mk_secret("ns", "c-key", "key", "vk-1"));
        index.apply(mk_secret("ns", "c-next", "key", "vk-2"));
        let refs: Vec<_> = index.referenced_secrets().into_iter().collect();
        assert_eq!(refs, vec![key("ns", "c-key"), key("ns", "c-next")]);
        let compiled = switchyard_compile::compile(&index.resources(), 1);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics
        );
        let consumers = compiled.table.consumers();
        assert!(consumers.authenticate(b"vk-1").is_some());
        assert!(consumers.authenticate(b"vk-2").is_some());
    }

    #[test]
    fn missing_secrets_are_still_referenced() {
        let mut index = Index::new(Namespaces::All);
        index.apply(mk_backend("ns", "b", Some("later")));
        assert!(index.referenced_secrets().contains(&key("ns", "later")));
        assert!(index.resources().secrets.is_empty());
    }

    #[test]
    fn namespaces_filter_and_delete() {
        let ns = Namespaces::from_flags(["a".to_string(), "b".to_string(), String::new()]);
        assert_eq!(
            ns.watch_scopes(),
            vec![Some("a".to_string()), Some("b".to_string())]
        );
        assert_eq!(Namespaces::from_flags([]), Namespaces::All);
        assert_eq!(Namespaces::All.watch_scopes(), vec![None]);

        let mut index = Index::new(ns);
        index.apply(mk_route("a", "r", &["m"], "b"));
        index.apply(mk_route("c", "r", &["m"], "b"));
        assert_eq!(index.routes().count(), 1);
        index.apply(mk_route("a", "r", &["m2"], "b"));
        assert_eq!(index.routes().count(), 1);
        assert_eq!(
            index.routes().next().unwrap().spec.match_.models,
            vec!["m2".to_string()]
        );
        index.delete::<AIRoute>("a", "r");
        assert_eq!(index.routes().count(), 0);
    }
}
