//! Cluster mode: ModelBackend, AIRoute and AIConsumer watched through the Kubernetes API,
//! with the Secrets they reference, compiled into the routing table on every change.
//!
//! ```text
//! reflectors (per kind × namespace) ─▶ trigger (generation filter; referenced Secrets only)
//!   ─▶ debounce ─▶ Index ─▶ switchyard_compile (refused edits: again, with their LastGood version)
//!                              ├─▶ TableHandle::store                            (every replica)
//!                              └─▶ verdicts ─▶ one-slot channel ─▶ status writer (Lease holder)
//! ```
//!
//! Unlike file mode, a resource with errors does not hold the others back: compile leaves
//! it out, its status says why, and the rest is served. An edit that makes a resource invalid
//! does not take it out, though: its last accepted generation keeps serving and its status
//! says why the new one was refused ([`compile_holding`]). If the API server goes away the
//! last table keeps serving while the watches retry.
//!
//! Secrets are watched with a label selector (`switchyard.dev/secret=true` by default), so
//! the gateway never lists, holds in memory or is woken by the cluster's other Secrets
//! (service-account tokens, Helm release blobs, TLS keys); of those it sees, only the ones
//! a resource references reach the compile step or trigger a rebuild.

mod hold;
mod index;
mod lease;
mod metrics;
mod spend;
mod status;
#[cfg(test)]
mod test_util;
mod token_review;
mod watch;
mod writer;

use std::{collections::HashSet, future::Future, path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use switchyard_api::{AIBudget, AIConsumer, AIRoute, ModelBackend};
use switchyard_compile::Severity;
use switchyard_router::TableHandle;
use switchyard_telemetry::Metrics;
use tokio::{
    sync::{watch as channel, Notify},
    task::JoinSet,
    time::Instant,
};

pub use hold::{compile_holding, Held, LastGood, Outcome};
pub use index::{Index, Kind, Namespaces, ObjKey};
pub use lease::LeaseConfig;
pub use metrics::ControllerMetrics;
pub use spend::{SharedSpendFuture, SpendFuture, SpendSource};
pub use status::{mark_held, verdicts, Hints, Verdict};
pub use token_review::{TokenReviews, DEFAULT_AUDIENCE};

use watch::{GenerationFilter, Referenced, Trigger};

/// How long after a status-only change of a custom resource the remembered last good
/// versions take up the stores' new copies ([`LastGood::share`]): the status writes of a
/// pass arrive over a few seconds, and each sharing walks every remembered version.
const SHARE_AFTER: Duration = Duration::from_secs(2);

/// The label Secrets need by default to be seen in cluster mode.
pub const DEFAULT_SECRET_SELECTOR: &str = "switchyard.dev/secret=true";

/// How the Kubernetes source runs.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Which namespaces to watch.
    pub namespaces: Namespaces,
    /// Label selector for Secrets; `None` watches every Secret.
    pub secret_selector: Option<String>,
    /// The status Lease.
    pub lease: LeaseConfig,
    /// How long to let a burst of changes settle before rebuilding.
    pub debounce: Duration,
}

/// Why the Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file given could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither `KUBECONFIG`/`~/.kube/config` nor the in-cluster service account worked.
    #[error("no Kubernetes configuration found: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Watches the cluster and keeps `table` current.
pub struct KubeSource {
    client: Client,
    options: KubeOptions,
    table: Arc<TableHandle>,
    metrics: Arc<Metrics>,
    controller: ControllerMetrics,
    spend: Option<(Arc<dyn SpendSource>, Duration)>,
    after_rebuild: Option<fn()>,
}

/// The reflector stores, one per kind and watched namespace.
#[derive(Clone, Default)]
pub(crate) struct Stores {
    backends: Vec<Store<ModelBackend>>,
    routes: Vec<Store<AIRoute>>,
    consumers: Vec<Store<AIConsumer>>,
    budgets: Vec<Store<AIBudget>>,
    secrets: Vec<Store<Secret>>,
}

/// A kind with reflector stores.
pub(crate) trait Stored:
    index::Indexed + Resource<DynamicType = ()> + Clone + 'static
{
    /// The kind, as a metric label.
    const LABEL: &'static str;
    fn stores(stores: &Stores) -> &[Store<Self>];
    fn stores_mut(stores: &mut Stores) -> &mut Vec<Store<Self>>;
}

/// A client from `--kubeconfig PATH`, else `KUBECONFIG` / `~/.kube/config`, else the
/// in-cluster service account; with the configuration's default namespace.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(Client, String), ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

// === impl KubeSource ===

impl KubeSource {
    /// A source feeding `table`, recording into `metrics` (shared with the gateway) and
    /// `controller`.
    pub fn new(
        client: Client,
        options: KubeOptions,
        table: Arc<TableHandle>,
        metrics: Arc<Metrics>,
        controller: ControllerMetrics,
    ) -> Self {
        KubeSource {
            client,
            options,
            table,
            metrics,
            controller,
            spend: None,
            after_rebuild: None,
        }
    }

    /// Calls `f` after each rebuild, once the previous table and the rebuild's working
    /// copies are freed (and after the last good versions take up the stores' copies): the
    /// binary hands the freed memory back to the system there.
    pub fn after_rebuild(mut self, f: fn()) -> Self {
        self.after_rebuild = Some(f);
        self
    }

    /// Also writes each budgeted AIConsumer's `status.spendUsd`, read from `source`, every
    /// `interval` (while holding the Lease, and only when it changed).
    pub fn with_spend_status(mut self, source: Arc<dyn SpendSource>, interval: Duration) -> Self {
        self.spend = Some((source, interval));
        self
    }

    /// Watches, rebuilds and writes status until `shutdown` resolves. The first table is
    /// stored (and `/readyz` turns ready) only once every watch has listed its objects.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = channel::channel(false);
        let trigger = Arc::new(Trigger::default());
        let restatused = Arc::new(Notify::new());
        let referenced = Referenced::default();
        let mut tasks = JoinSet::new();
        let mut stores = Stores::default();
        let scopes = self.options.namespaces.watch_scopes();
        let budgets_served = self.budgets_served(&scopes).await;
        for scope in &scopes {
            self.spawn_crd::<ModelBackend>(&mut tasks, &mut stores, scope, &trigger, &restatused);
            self.spawn_crd::<AIRoute>(&mut tasks, &mut stores, scope, &trigger, &restatused);
            self.spawn_crd::<AIConsumer>(&mut tasks, &mut stores, scope, &trigger, &restatused);
            if budgets_served {
                self.spawn_crd::<AIBudget>(&mut tasks, &mut stores, scope, &trigger, &restatused);
            }
            let mut config = watcher::Config::default();
            if let Some(sel) = &self.options.secret_selector {
                config = config.labels(sel);
            }
            let refs = referenced.clone();
            self.spawn_reflector::<Secret>(
                &mut tasks,
                &mut stores,
                scope,
                config,
                Secret::LABEL,
                move |e| watch::secret_passes(e, &refs),
                &trigger,
            );
        }
        tracing::info!(
            namespaces = ?scopes.iter().map(|s| s.as_deref().unwrap_or("*")).collect::<Vec<_>>(),
            secret_selector = self.options.secret_selector.as_deref().unwrap_or("(all Secrets)"),
            "watching the Kubernetes API"
        );

        let (leading_tx, leading_rx) = channel::channel(false);
        let lease_api: Api<Lease> =
            Api::namespaced(self.client.clone(), &self.options.lease.namespace);
        let elector = lease::Elector::new(lease_api, self.options.lease.clone());
        let lease_task =
            tokio::spawn(elector.run(leading_tx, self.controller.clone(), stop_rx.clone()));
        let (verdicts_tx, verdicts_rx) = channel::channel(writer::Verdicts::default());
        let writer = writer::StatusWriter::new(
            self.client.clone(),
            stores.clone(),
            &self.options.lease.identity,
            self.controller.clone(),
        );
        if let Some((source, interval)) = &self.spend {
            tasks.spawn(spend::run(
                self.client.clone(),
                stores.clone(),
                Arc::clone(source),
                *interval,
                self.controller.clone(),
                self.options.lease.identity.clone(),
                leading_rx.clone(),
                stop_rx.clone(),
            ));
        }
        tasks.spawn(writer.run(verdicts_rx, leading_rx, stop_rx.clone()));

        let mut shutdown = std::pin::pin!(shutdown);
        let mut rebuild = Rebuild {
            source: &self,
            stores: &stores,
            referenced: &referenced,
            verdicts: &verdicts_tx,
            generation: 0,
            reported: HashSet::new(),
            last_good: LastGood::default(),
        };
        let listed = tokio::select! {
            ok = stores.wait_ready() => Some(ok),
            () = &mut shutdown => None,
        };
        match listed {
            None => {}
            Some(false) => {
                tracing::error!("a watch ended before its first list; the cluster source stopped");
            }
            Some(true) => {
                tracing::info!("initial list complete");
                trigger.take();
                rebuild.run(None);
                self.rebuilt();
                let mut share_at: Option<Instant> = None;
                loop {
                    tokio::select! {
                        () = trigger.changed() => {}
                        () = restatused.notified() => {
                            share_at.get_or_insert_with(|| Instant::now() + SHARE_AFTER);
                            continue;
                        }
                        () = sleep_until(share_at) => {
                            share_at = None;
                            rebuild.share_stored();
                            self.rebuilt();
                            continue;
                        }
                        () = &mut shutdown => break,
                    }
                    tokio::time::sleep(self.options.debounce).await;
                    if let Some(first_seen) = trigger.take() {
                        rebuild.run(Some(first_seen));
                        self.rebuilt();
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), lease_task).await;
        tasks.abort_all();
    }

    fn rebuilt(&self) {
        if let Some(f) = self.after_rebuild {
            f();
        }
    }

    /// Whether the API server serves AIBudget. A cluster upgraded without its new CRD (Helm
    /// does not upgrade CRDs) still serves everything else; consumers naming a budget are
    /// then refused with `BudgetNotFound`. Only a 404 counts as not served.
    async fn budgets_served(&self, scopes: &[Option<String>]) -> bool {
        let api: Api<AIBudget> = match scopes.first().cloned().flatten() {
            Some(ns) => Api::namespaced(self.client.clone(), &ns),
            None => Api::all(self.client.clone()),
        };
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::warn!("the AIBudget CRD is not installed: shared budgets are off (install crds/aibudgets.switchyard.dev.yaml)");
                false
            }
            _ => true,
        }
    }

    /// A reflector for a custom resource: a change of generation triggers a rebuild, a
    /// change of status only (as our own status writes) wakes `restatused`.
    fn spawn_crd<K>(
        &self,
        tasks: &mut JoinSet<()>,
        stores: &mut Stores,
        scope: &Option<String>,
        trigger: &Arc<Trigger>,
        restatused: &Arc<Notify>,
    ) where
        K: Stored + DeserializeOwned + std::fmt::Debug + Send + Sync,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let mut filter = GenerationFilter::default();
        let restatused = Arc::clone(restatused);
        self.spawn_reflector::<K>(
            tasks,
            stores,
            scope,
            watcher::Config::default(),
            K::LABEL,
            move |e| {
                let passes = filter.passes(e);
                if !passes && matches!(e, watcher::Event::Apply(_)) {
                    restatused.notify_one();
                }
                passes
            },
            trigger,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_reflector<K>(
        &self,
        tasks: &mut JoinSet<()>,
        stores: &mut Stores,
        scope: &Option<String>,
        config: watcher::Config,
        kind: &'static str,
        passes: impl FnMut(&watcher::Event<K>) -> bool + Send + 'static,
        trigger: &Arc<Trigger>,
    ) where
        K: Stored + DeserializeOwned + std::fmt::Debug + Send + Sync,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let api: Api<K> = match scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let (store, writer) = watch::store::<K>();
        K::stores_mut(stores).push(store);
        // Lists are served from the API server's watch cache (`resourceVersion=0`), as
        // client-go's informers list, rather than read from etcd: at 11 000 objects the
        // etcd read cost kube-apiserver 0.4-1.0 ms of CPU per object against 0.1-0.2 ms,
        // seconds of it before the first table and the first status write. The watch that
        // follows brings anything the cache had not seen yet.
        tasks.spawn(watch::reflect(
            api,
            config.any_semantic(),
            writer,
            kind,
            passes,
            trigger.clone(),
            self.controller.clone(),
        ));
    }
}

/// One rebuild: snapshot the stores, compile, swap, hand the verdicts to the writer.
struct Rebuild<'a> {
    source: &'a KubeSource,
    stores: &'a Stores,
    referenced: &'a Referenced,
    verdicts: &'a channel::Sender<writer::Verdicts>,
    generation: u64,
    /// Diagnostics already logged, so each is logged once, not on every rebuild.
    reported: HashSet<String>,
    /// The last version of each resource that compiled, to fall back on when an edit is
    /// refused.
    last_good: LastGood,
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Rebuild<'_> {
    /// Lets the last good versions share the stores' copies ([`LastGood::share`]).
    fn share_stored(&mut self) {
        let stores = self.stores;
        self.last_good.share::<ModelBackend>(|k| stores.get(k));
        self.last_good.share::<AIRoute>(|k| stores.get(k));
        self.last_good.share::<AIConsumer>(|k| stores.get(k));
    }

    fn run(&mut self, first_seen: Option<tokio::time::Instant>) {
        let opts = &self.source.options;
        let mut index = Index::new(opts.namespaces.clone());
        self.stores.fill::<ModelBackend>(&mut index);
        self.stores.fill::<AIRoute>(&mut index);
        self.stores.fill::<AIConsumer>(&mut index);
        self.stores.fill::<AIBudget>(&mut index);
        // Publish the referenced Secrets *before* reading the Secret stores: a Secret event
        // handled after this sees the new set and triggers, one handled before is already
        // in the stores read below. Either way no change is missed. Those of the versions
        // kept to fall back on count too: a held version is rebuilt when its Secret changes.
        if let Ok(mut r) = self.referenced.write() {
            let mut referenced = index.referenced_secrets();
            referenced.extend(self.last_good.referenced_secrets());
            *r = referenced;
        }
        self.stores.fill::<Secret>(&mut index);

        self.generation += 1;
        let outcome = compile_holding(&index, &self.last_good, self.generation);
        self.last_good.update(&index, &outcome);
        for kind in [Kind::ModelBackend, Kind::AIRoute, Kind::AIConsumer] {
            let rejected: HashSet<(&str, &str)> = outcome
                .compiled
                .diagnostics
                .iter()
                .filter(|d| d.kind == kind.as_str() && d.severity == Severity::Error)
                .map(|d| (d.namespace.as_str(), d.name.as_str()))
                .collect();
            let controller = &self.source.controller;
            controller
                .rejected
                .with_label_values(&[kind.as_str()])
                .set(rejected.len() as i64);
            let held = outcome.held.iter().filter(|h| h.kind == kind).count();
            controller
                .held
                .with_label_values(&[kind.as_str()])
                .set(held as i64);
        }
        let mut reported = HashSet::new();
        let held_lines = outcome.held.iter().map(|h| {
            let generation = |g: Option<i64>| g.map_or_else(|| "?".into(), |g| g.to_string());
            format!(
                "{} {}/{}: generation {} refused, generation {} keeps serving",
                h.kind,
                h.key.0,
                h.key.1,
                generation(h.refused),
                generation(h.serving)
            )
        });
        for line in outcome
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .chain(held_lines)
        {
            if !self.reported.contains(&line) {
                tracing::warn!("{line}");
            }
            reported.insert(line);
        }
        self.reported = reported;
        let compiled = outcome.compiled;
        let routes = compiled.table.route_count();
        let metrics = &self.source.metrics;
        crate::publish(&self.source.table, compiled.table, metrics);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics.config_generation.set(self.generation as i64);
        if let Some(t) = first_seen {
            self.source
                .controller
                .propagation
                .observe(t.elapsed().as_secs_f64());
        }
        tracing::info!(
            generation = self.generation,
            routes,
            problems = outcome.diagnostics.len(),
            held = outcome.held.len(),
            compiles = outcome.compiles,
            "routing table loaded"
        );
        let hints = Hints {
            secret_selector: opts.secret_selector.clone(),
        };
        let mut verdicts = verdicts(&index, &outcome.diagnostics, &hints);
        mark_held(&mut verdicts, &outcome.held);
        self.verdicts.send_replace(Arc::new(verdicts));
    }
}

// === impl Stores ===

impl Stores {
    /// The object `key` of kind `K`, if some store has it.
    pub(crate) fn get<K: Stored>(&self, key: &ObjKey) -> Option<Arc<K>> {
        let r = ObjectRef::new(&key.1).within(&key.0);
        K::stores(self).iter().find_map(|s| s.get(&r))
    }

    /// Copies every `K` into `index`.
    fn fill<K: Stored>(&self, index: &mut Index) {
        for store in K::stores(self) {
            for obj in store.state() {
                index.apply::<K>(obj);
            }
        }
    }

    /// Waits until every store has completed its first list; false if a reflector died.
    async fn wait_ready(&self) -> bool {
        // The reflectors run in their own tasks, so waiting in turn takes as long as the
        // slowest list.
        async fn all<K: Stored>(stores: &[Store<K>]) -> bool {
            for s in stores {
                if s.wait_until_ready().await.is_err() {
                    return false;
                }
            }
            true
        }
        all(&self.backends).await
            && all(&self.routes).await
            && all(&self.consumers).await
            && all(&self.budgets).await
            && all(&self.secrets).await
    }
}

impl Stored for ModelBackend {
    const LABEL: &'static str = "ModelBackend";
    fn stores(s: &Stores) -> &[Store<Self>] {
        &s.backends
    }
    fn stores_mut(s: &mut Stores) -> &mut Vec<Store<Self>> {
        &mut s.backends
    }
}

impl Stored for AIRoute {
    const LABEL: &'static str = "AIRoute";
    fn stores(s: &Stores) -> &[Store<Self>] {
        &s.routes
    }
    fn stores_mut(s: &mut Stores) -> &mut Vec<Store<Self>> {
        &mut s.routes
    }
}

impl Stored for AIConsumer {
    const LABEL: &'static str = "AIConsumer";
    fn stores(s: &Stores) -> &[Store<Self>] {
        &s.consumers
    }
    fn stores_mut(s: &mut Stores) -> &mut Vec<Store<Self>> {
        &mut s.consumers
    }
}

impl Stored for AIBudget {
    const LABEL: &'static str = "AIBudget";
    fn stores(s: &Stores) -> &[Store<Self>] {
        &s.budgets
    }
    fn stores_mut(s: &mut Stores) -> &mut Vec<Store<Self>> {
        &mut s.budgets
    }
}

impl Stored for Secret {
    const LABEL: &'static str = "Secret";
    fn stores(s: &Stores) -> &[Store<Self>] {
        &s.secrets
    }
    fn stores_mut(s: &mut Stores) -> &mut Vec<Store<Self>> {
        &mut s.secrets
    }
}
