//! Watch streams: one reflector per kind and namespace scope, and what in their events
//! calls for a rebuild.
//!
//! `kube-runtime`'s watcher lists, then watches from the list's resourceVersion; on a
//! `410 Gone` (the version was compacted away, as after an API server restart) it re-lists
//! from scratch, and on any other failure it retries the watch after back-off. The reflector
//! store replaces its contents atomically when a re-list completes, so objects deleted while
//! disconnected disappear then.
//!
//! The back-off is [`ReconnectBackoff`], applied here rather than with `default_backoff()`,
//! for two reasons. client-go's 0.8 s → 30 s suits controllers whose work can wait, but a
//! gateway serving a stale table for up to half a minute after the API server is back is
//! what users notice; a handful of watches per replica retrying at most every 5 s, with
//! jitter, is still gentle. And a `410 Gone` is not a failure to back off from: the re-list
//! it calls for starts at once (`StreamBackoff` would sleep first, as for any error).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    runtime::{
        predicates,
        reflector::{self, Store},
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api, Resource,
};
use serde::de::DeserializeOwned;
use tokio::{sync::Notify, time::Instant};

use super::{index::ObjKey, metrics::ControllerMetrics};

/// Wakes the rebuild loop, remembering when the first unbuilt change was seen.
#[derive(Default)]
pub(crate) struct Trigger {
    notify: Notify,
    first_seen: Mutex<Option<Instant>>,
}

/// Passes an event on when it can change the table: the generation predicate of
/// `kube-runtime` on applied objects (so our own status writes, which leave
/// `metadata.generation` alone, are dropped), and always on deletes and completed re-lists.
///
/// This is `predicate_filter(predicates::generation)` applied to events rather than to
/// decoded objects: on an object stream a delete carries an unchanged generation and would
/// be swallowed, leaving a deleted route served.
#[derive(Default)]
pub(crate) struct GenerationFilter {
    seen: HashMap<(ObjKey, Option<String>), u64>,
    relisted: Option<HashSet<(ObjKey, Option<String>)>>,
}

/// Back-off between failed lists or watches: 0.5 s doubling to 5 s, each delay drawn
/// between half and all of that (jitter, so replicas do not reconnect in step); reset by the
/// first event that gets through.
#[derive(Clone, Debug)]
pub(crate) struct ReconnectBackoff {
    next: std::time::Duration,
}

/// The Secrets referenced by the last snapshot of the custom resources; shared with the
/// Secret watches so that only changes to these trigger a rebuild.
pub(crate) type Referenced = Arc<RwLock<BTreeSet<ObjKey>>>;

// === impl Trigger ===

impl Trigger {
    /// Notes a change.
    pub(crate) fn fire(&self) {
        if let Ok(mut first) = self.first_seen.lock() {
            first.get_or_insert_with(Instant::now);
        }
        self.notify.notify_one();
    }

    /// Waits for a change.
    pub(crate) async fn changed(&self) {
        self.notify.notified().await;
    }

    /// When the oldest change not yet built was seen, clearing it; `None` if nothing is
    /// pending.
    pub(crate) fn take(&self) -> Option<Instant> {
        self.first_seen.lock().ok().and_then(|mut f| f.take())
    }
}

// === impl ReconnectBackoff ===

impl ReconnectBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff { next: Self::MIN }
    }
}

impl Iterator for ReconnectBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let ceiling = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(ceiling.mul_f64(0.5 + fastrand::f64() / 2.0))
    }
}

impl ReconnectBackoff {
    /// Back to the shortest delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

// === impl GenerationFilter ===

impl GenerationFilter {
    /// Whether `event` should trigger a rebuild.
    pub(crate) fn passes<K: Resource>(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(obj) => self.changed(obj),
            Event::InitApply(obj) => {
                let changed = self.changed(obj);
                if let Some(seen) = &mut self.relisted {
                    seen.insert(id(obj));
                }
                changed
            }
            Event::Delete(obj) => {
                self.seen.remove(&id(obj));
                true
            }
            Event::Init => {
                self.relisted = Some(HashSet::new());
                false
            }
            Event::InitDone => {
                // Forget objects that vanished while we were not watching.
                if let Some(relisted) = self.relisted.take() {
                    self.seen.retain(|k, _| relisted.contains(k));
                }
                true
            }
        }
    }

    fn changed<K: Resource>(&mut self, obj: &K) -> bool {
        // No generation (never the case for our CRDs): always pass.
        let Some(hash) = predicates::generation(obj) else {
            return true;
        };
        self.seen.insert(id(obj), hash) != Some(hash)
    }
}

fn id<K: Resource>(obj: &K) -> (ObjKey, Option<String>) {
    let m = obj.meta();
    (
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        ),
        m.uid.clone(),
    )
}

/// Whether a Secret event should trigger a rebuild: only when a custom resource refers to
/// it, and after each (re-)list.
pub(crate) fn secret_passes(event: &Event<Secret>, referenced: &Referenced) -> bool {
    let is_ref = |s: &Secret| {
        referenced
            .read()
            .map(|r| r.contains(&id(s).0))
            .unwrap_or(true)
    };
    match event {
        Event::Apply(s) | Event::Delete(s) => is_ref(s),
        Event::Init | Event::InitApply(_) => false,
        Event::InitDone => true,
    }
}

/// Runs one reflector until the stream ends (it does not: the watcher retries forever),
/// feeding `store` and firing `trigger` for the events `passes` lets through.
pub(crate) async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    kind: &'static str,
    mut passes: impl FnMut(&Event<K>) -> bool + Send,
    trigger: Arc<Trigger>,
    metrics: ControllerMetrics,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher::watcher(api, config)
        .modify(strip_unread_metadata)
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    let mut backoff = ReconnectBackoff::default();
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                backoff.reset();
                if failing {
                    tracing::info!(kind, "watch re-established");
                    failing = false;
                }
                if passes(&event) {
                    trigger.fire();
                }
            }
            Err(e) => {
                metrics.watch_reconnects.with_label_values(&[kind]).inc();
                if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                    // The watcher is already set to re-list; do it now.
                    tracing::info!(kind, "watch expired (410 Gone): re-listing");
                    continue;
                }
                if !failing {
                    tracing::warn!(kind, error = %e, "watch failed; serving the last table and retrying with back-off");
                } else {
                    tracing::debug!(kind, error = %e, "watch still failing");
                }
                failing = true;
                // Not polling the watcher meanwhile is what pauses it.
                if let Some(delay) = backoff.next() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the controller never reads from an object before it is stored: its
/// `managedFields` and `kubectl apply`'s copy of it. Together they are most of a small
/// object's size; at 10 000 AIRoutes they were most of the process's memory.
fn strip_unread_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A reflector store and its writer.
pub(crate) fn store<K>() -> (Store<K>, reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    reflector::store()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_util::*;

    #[test]
    fn stored_objects_lose_managed_fields_and_the_applied_copy_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut s = Secret::default();
        s.metadata.name = Some("k".into());
        s.metadata.generation = Some(3);
        s.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default(); 2]);
        s.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                ("team".to_string(), "a".to_string()),
            ]
            .into(),
        );
        strip_unread_metadata(&mut s);
        assert_eq!(s.metadata.managed_fields, None);
        assert_eq!(
            s.metadata.annotations,
            Some([("team".to_string(), "a".to_string())].into())
        );
        assert_eq!(
            (s.metadata.name.as_deref(), s.metadata.generation),
            (Some("k"), Some(3))
        );
        s.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        strip_unread_metadata(&mut s);
        assert_eq!(s.metadata.annotations, None);
    }

    #[test]
    fn generation_filter_drops_status_only_updates_but_not_deletes() {
        let mut f = GenerationFilter::default();
        let r = mk_route("ns", "r", &["m"], "b");
        assert!(f.passes(&Event::Apply(r.clone())));
        // A status write: same generation, new resourceVersion.
        let mut status_only = r.clone();
        status_only.metadata.resource_version = Some("2".into());
        assert!(!f.passes(&Event::Apply(status_only)));
        let mut edited = r.clone();
        edited.metadata.generation = Some(2);
        assert!(f.passes(&Event::Apply(edited.clone())));
        // The delete event carries the last generation: it must still pass.
        assert!(f.passes(&Event::Delete(edited)));
        // Re-created under the same name (new uid, generation 1 again).
        let mut again = r.clone();
        again.metadata.uid = Some("uid-2".into());
        assert!(f.passes(&Event::Apply(again)));
    }

    #[test]
    fn relist_passes_once_done_and_forgets_vanished_objects() {
        let mut f = GenerationFilter::default();
        let a = mk_route("ns", "a", &["m"], "b");
        let b = mk_route("ns", "b", &["m"], "b");
        assert!(!f.passes(&Event::<AIRouteT>::Init));
        assert!(f.passes(&Event::InitApply(a.clone())));
        assert!(f.passes(&Event::InitApply(b.clone())));
        assert!(f.passes(&Event::<AIRouteT>::InitDone));
        // Reconnect: `b` was deleted meanwhile; unchanged `a` alone does not trigger, the
        // completed list does.
        assert!(!f.passes(&Event::<AIRouteT>::Init));
        assert!(!f.passes(&Event::InitApply(a)));
        assert!(f.passes(&Event::<AIRouteT>::InitDone));
        assert_eq!(f.seen.len(), 1);
        // `b` comes back with the same uid and generation: it is new again.
        assert!(f.passes(&Event::Apply(b)));
    }

    type AIRouteT = switchyard_api::AIRoute;

    #[test]
    fn only_referenced_secrets_trigger() {
        let referenced: Referenced = Arc::new(RwLock::new(BTreeSet::from([key("ns", "used")])));
        let used = mk_secret("ns", "used", "k", "v");
        let other = mk_secret("ns", "other", "k", "v");
        let elsewhere = mk_secret("ns2", "used", "k", "v");
        assert!(secret_passes(&Event::Apply(used.clone()), &referenced));
        assert!(secret_passes(&Event::Delete(used.clone()), &referenced));
        assert!(!secret_passes(&Event::Apply(other), &referenced));
        assert!(!secret_passes(&Event::Apply(elsewhere), &referenced));
        assert!(!secret_passes(&Event::InitApply(used), &referenced));
        assert!(secret_passes(&Event::InitDone, &referenced));
    }

    #[test]
    fn backoff_grows_to_five_seconds_with_jitter_and_resets() {
        let mut b = ReconnectBackoff::default();
        let first: Vec<_> = b.by_ref().take(6).collect();
        for (d, ceiling_ms) in first.iter().zip([500, 1000, 2000, 4000, 5000, 5000]) {
            let ceiling = std::time::Duration::from_millis(ceiling_ms);
            assert!(*d <= ceiling && *d >= ceiling / 2, "{d:?} vs {ceiling:?}");
        }
        b.reset();
        assert!(b.next().unwrap() <= std::time::Duration::from_millis(500));
    }

    #[tokio::test]
    async fn trigger_keeps_the_first_time_until_taken() {
        let t = Trigger::default();
        assert!(t.take().is_none());
        t.fire();
        let first = *t.first_seen.lock().unwrap();
        t.fire();
        tokio::time::timeout(std::time::Duration::from_secs(1), t.changed())
            .await
            .unwrap();
        assert_eq!(t.take(), first);
        assert!(t.take().is_none());
    }
}
