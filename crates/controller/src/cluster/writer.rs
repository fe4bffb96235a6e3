//! Writes each object's status and records an Event on each change of verdict — only while
//! this replica holds the Lease, and off the compile path: the rebuild loop hands over the
//! latest verdicts through a one-slot channel (newest wins, the rebuild never waits) and
//! this task catches up.
//!
//! Status is a JSON merge patch on the `/status` subresource holding `observedGeneration`
//! and `conditions` only (an AIConsumer's `spendUsd` is left alone), sent only when it
//! differs from what the object carries.
//!
//! No other way of writing it is materially cheaper for the API server, whose CPU is what
//! bounds 11 000 first writes (`bench/kube_status_writes.py`, kube-apiserver 1.20, 1 000
//! AIRoutes, 16 in flight): a merge patch, a JSON patch and a server-side apply all cost it
//! 4-5 ms of CPU per write, within the noise of each other, with or without `message`, with
//! the response as `PartialObjectMetadata`; a GET of the same object costs 1.2-2 ms. A PUT of
//! `/status` was ~10 % cheaper, but it needs the whole object: one carrying the status
//! alone made the API server drop the other managers' `managedFields` entries (kubectl's
//! ownership of `spec`), and the stores keep neither `managedFields` nor `kubectl apply`'s
//! annotation to send back.
//!
//! The Events of a pass go out after its status writes, from a task of their own: status is
//! what users and tools read, and at 10 000 new routes the Events (one per object) would
//! otherwise halve how fast it converges. They are created directly, not through
//! `kube-runtime`'s `Recorder`, whose cache keeps a copy of every Event for six minutes to
//! count repeats — 2.6 KiB per object, 28 MiB at 10 000 routes, for a count we never need
//! (an Event is only recorded when the verdict changes).
//!
//! A pass records at most [`NORMAL_EVENTS_PER_PASS`] `Normal` Events (Warnings are never
//! dropped): on a fresh install of 10 000 routes every object turns Accepted in the first
//! pass, and one Event each was 11 000 more POSTs (~1.3 ms of API-server CPU each, a third
//! of a status write), queued behind the statuses and slowing everything else it serves
//! (creates of new routes among them). Their status says the same. A verdict that is
//! served but carries a warning reason (`PricingUnknown`, `ConflictingMatch`) is a
//! Warning, so it is kept: the scale bench's 1 001 ModelBackends name a model without a
//! price, and their 1 001 `PricingUnknown` Warnings are most of its Events.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use switchyard_api::{AIConsumer, AIRoute, Condition, ModelBackend};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    index::{Kind, ObjKey},
    metrics::ControllerMetrics,
    status::{
        conditions_current, event_for, merge_conditions, verdict_changed, EventSpec, HasStatus,
        Verdict,
    },
    Stored, Stores,
};

/// The latest verdicts, as handed from the rebuild loop to the writer.
pub(crate) type Verdicts = Arc<Vec<Verdict>>;

/// The status writer task.
pub(crate) struct StatusWriter {
    client: Client,
    stores: Stores,
    events: Events,
    metrics: ControllerMetrics,
    /// The objects written whose store copy may not show the write yet, with the
    /// resourceVersion the write was decided on: while the store still has that version,
    /// the object is left alone rather than written (and announced) twice. An entry goes
    /// once the store has moved on, so the map is empty between passes, not a second copy
    /// of every status.
    unseen: HashMap<(Kind, ObjKey), String>,
}

/// Creates Events (`events.k8s.io/v1`) as the status writer's reporter.
#[derive(Clone)]
struct Events {
    client: Client,
    controller: String,
    instance: String,
}

/// An Event to create: about which object, saying what.
type EventFor = (ObjectReference, EventSpec);

const FIELD_MANAGER: &str = "switchyard";
/// Status writes in flight at once: well inside the API server's default limits (400
/// requests in flight, 200 mutating) and its priority-and-fairness shares. More does not
/// make 11 000 new objects converge much faster where the API server is the bottleneck:
/// against envtest on 2 shared cores, 16 / 32 / 64 wrote all 11 000 in 63 / 64 / 51 s
/// (~175-215 writes/s), and at 64 the API server logged patches taking 0.7 s. Fewer is not
/// cheaper: at 4 in flight each write cost the API server more CPU (5.6 against 4.5-4.7 ms
/// at 16-32) and the pass took longer. Priority and fairness give a user's requests 59 seats
/// (`global-default`) and a service account's 293 (`workload-low`) on a default 1.20
/// server, so 16 (with the Events and watches) stay far inside either.
const WRITES_IN_FLIGHT: usize = 16;
/// Event creations in flight at once.
const EVENTS_IN_FLIGHT: usize = 16;
/// `Normal` Events recorded per pass at most; the rest are counted in a log line.
const NORMAL_EVENTS_PER_PASS: usize = 100;

/// One status write decided by [`StatusWriter::pending`].
struct Pending {
    kind: Kind,
    key: ObjKey,
    /// The verdict changed: an Event goes with the write.
    announce: bool,
    /// The object's version the write was decided on.
    resource_version: Option<String>,
    generation: Option<i64>,
    conditions: Vec<Condition>,
}
/// Re-check everything now and then, to repair status someone else changed.
const RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

// === impl StatusWriter ===

impl StatusWriter {
    pub(crate) fn new(
        client: Client,
        stores: Stores,
        identity: &str,
        metrics: ControllerMetrics,
    ) -> Self {
        let events = Events {
            client: client.clone(),
            controller: FIELD_MANAGER.into(),
            instance: identity.to_string(),
        };
        StatusWriter {
            client,
            stores,
            events,
            metrics,
            unseen: HashMap::new(),
        }
    }

    /// Writes whenever the verdicts change or leadership is gained, until `stop`.
    pub(crate) async fn run(
        mut self,
        mut verdicts: watch::Receiver<Verdicts>,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let events = tokio::spawn(self.events.clone().run(events_rx));
        let mut next = Instant::now() + RESYNC;
        loop {
            tokio::select! {
                r = verdicts.changed() => if r.is_err() { break },
                r = leading.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if !*leading.borrow_and_update() {
                // A new leader starts from what is in the cluster, not from our memory.
                self.unseen.clear();
                next = Instant::now() + RESYNC;
                continue;
            }
            let snapshot = verdicts.borrow_and_update().clone();
            let (all_ok, announce) = self.sync(&snapshot).await;
            let (announce, dropped) = cap_normal(announce, NORMAL_EVENTS_PER_PASS);
            if dropped > 0 {
                tracing::info!(
                    recorded = announce.len(),
                    not_recorded = dropped,
                    "more objects were accepted in one pass than Normal Events are recorded for; their status says so"
                );
            }
            for event in announce {
                let _ = events_tx.send(event);
            }
            // A failed write, or a write the store has not shown yet (it decides whether
            // the next write is due), is looked at again soon.
            next = Instant::now()
                + if all_ok && self.unseen.is_empty() {
                    RESYNC
                } else {
                    RETRY
                };
        }
        events.abort();
    }

    /// Brings every object's status in line with `verdicts`: false if a write failed, and
    /// the Events due. Which objects need a write is decided here, in order; the writes
    /// themselves go out [`WRITES_IN_FLIGHT`] at a time (one after another, 10 000 new routes
    /// took 50 s).
    async fn sync(&mut self, verdicts: &[Verdict]) -> (bool, Vec<EventFor>) {
        // Forget the writes the store has caught up with.
        let stores = &self.stores;
        self.unseen
            .retain(|(kind, key), rv| unseen(stores, *kind, key, rv));
        // One timestamp for the pass: any condition that flips now flipped at this time.
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let pending: Vec<Pending> = verdicts
            .iter()
            .filter_map(|v| match v.kind {
                Kind::ModelBackend => self.pending::<ModelBackend>(v, &now),
                Kind::AIRoute => self.pending::<AIRoute>(v, &now),
                Kind::AIConsumer => self.pending::<AIConsumer>(v, &now),
            })
            .collect();
        let this = &*self;
        let results: Vec<(Pending, Result<Option<ObjectReference>, ()>)> =
            futures_util::stream::iter(pending)
                .map(|p| async move {
                    let r = match p.kind {
                        Kind::ModelBackend => this.write::<ModelBackend>(&p).await,
                        Kind::AIRoute => this.write::<AIRoute>(&p).await,
                        Kind::AIConsumer => this.write::<AIConsumer>(&p).await,
                    };
                    (p, r)
                })
                .buffer_unordered(WRITES_IN_FLIGHT)
                .collect()
                .await;
        let mut ok = true;
        let mut announce = Vec::new();
        for (p, r) in results {
            match r {
                Ok(Some(reference)) => {
                    if p.announce {
                        announce.push((reference, event_for(&p.conditions)));
                    }
                    if let Some(rv) = p.resource_version {
                        self.unseen.insert((p.kind, p.key), rv);
                    }
                }
                Ok(None) => {}
                Err(()) => ok = false,
            }
        }
        // Most writes are in the store by now.
        let stores = &self.stores;
        self.unseen
            .retain(|(kind, key), rv| unseen(stores, *kind, key, rv));
        (ok, announce)
    }

    /// The write `v` needs, if any: none when the object is gone, was replaced or edited
    /// since (the rebuild that triggers brings a new verdict), or already says this.
    fn pending<K>(&self, v: &Verdict, now: &str) -> Option<Pending>
    where
        K: Stored + HasStatus + Resource<DynamicType = ()>,
    {
        let obj = self.stores.get::<K>(&v.key)?;
        let meta = obj.meta();
        if meta.uid != v.uid || meta.generation != v.generation {
            return None;
        }
        if self.unseen.contains_key(&(v.kind, v.key.clone())) {
            // Written, and the store does not show it yet: the next pass decides.
            return None;
        }
        let (cur_generation, cur_conditions) = obj.current();
        if cur_generation == v.generation && conditions_current(cur_conditions, &v.conditions, now)
        {
            return None;
        }
        let conditions = merge_conditions(cur_conditions, &v.conditions, now);
        if cur_generation == v.generation && cur_conditions == conditions.as_slice() {
            return None;
        }
        Some(Pending {
            kind: v.kind,
            announce: verdict_changed(cur_conditions, &conditions),
            key: v.key.clone(),
            resource_version: meta.resource_version.clone(),
            generation: v.generation,
            conditions,
        })
    }

    /// Sends one status patch: a reference to the object's new version (for its Event),
    /// `None` when it was deleted meanwhile, `Err` when the write failed.
    async fn write<K>(&self, p: &Pending) -> Result<Option<ObjectReference>, ()>
    where
        K: Stored
            + HasStatus
            + Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let patch = serde_json::json!({
            "status": {
                "observedGeneration": p.generation,
                "conditions": p.conditions,
            }
        });
        let api: Api<K> = Api::namespaced(self.client.clone(), &p.key.0);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&p.key.1, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.metrics
                    .status_writes
                    .with_label_values(&["success"])
                    .inc();
                tracing::debug!(kind = %p.kind, namespace = %p.key.0, name = %p.key.1, "status written");
                Ok(Some(updated.object_ref(&())))
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
            Err(e) => {
                self.metrics
                    .status_writes
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(kind = %p.kind, namespace = %p.key.0, name = %p.key.1, error = %e, "status write failed; will retry");
                Err(())
            }
        }
    }
}

/// `events` with the `Normal` ones after the first `max` left out (Warnings all kept, in
/// order), and how many were left out.
fn cap_normal(events: Vec<EventFor>, max: usize) -> (Vec<EventFor>, usize) {
    let mut normal = 0;
    let mut dropped = 0;
    let kept = events
        .into_iter()
        .filter(|(_, spec)| {
            if spec.warning {
                return true;
            }
            normal += 1;
            let keep = normal <= max;
            dropped += usize::from(!keep);
            keep
        })
        .collect();
    (kept, dropped)
}

/// Whether the store still shows `kind`/`key` at `rv`, the version a write was decided on.
fn unseen(stores: &Stores, kind: Kind, key: &ObjKey, rv: &str) -> bool {
    fn at<K: Stored>(stores: &Stores, key: &ObjKey, rv: &str) -> bool {
        stores
            .get::<K>(key)
            .is_some_and(|o| o.meta().resource_version.as_deref() == Some(rv))
    }
    match kind {
        Kind::ModelBackend => at::<ModelBackend>(stores, key, rv),
        Kind::AIRoute => at::<AIRoute>(stores, key, rv),
        Kind::AIConsumer => at::<AIConsumer>(stores, key, rv),
    }
}

// === impl Events ===

impl Events {
    /// Creates the Events handed over, [`EVENTS_IN_FLIGHT`] at a time, until the sender
    /// is dropped.
    async fn run(self, rx: mpsc::UnboundedReceiver<EventFor>) {
        let this = &self;
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(|(reference, spec)| async move { this.create(reference, spec).await })
            .buffer_unordered(EVENTS_IN_FLIGHT)
            .for_each(|()| async {})
            .await;
    }

    /// Best effort: a lost Event is not worth a retry. Written as `kube-runtime`'s
    /// `Recorder` writes a first occurrence.
    async fn create(&self, reference: ObjectReference, spec: EventSpec) {
        let now = Timestamp::now();
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = K8sEvent {
            action: Some("Compile".into()),
            reason: Some(spec.reason),
            event_time: Some(MicroTime(now)),
            note: Some(spec.note),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            regarding: Some(reference),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if spec.warning { "Warning" } else { "Normal" }.into()),
            ..K8sEvent::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "could not record an Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, warning: bool) -> EventFor {
        let reference = ObjectReference {
            name: Some(name.into()),
            ..ObjectReference::default()
        };
        let spec = EventSpec {
            warning,
            reason: if warning {
                "BackendNotFound"
            } else {
                "Accepted"
            }
            .into(),
            note: String::new(),
        };
        (reference, spec)
    }

    #[test]
    fn normal_events_are_capped_per_pass_and_warnings_never() {
        let events = vec![
            event("a", false),
            event("b", true),
            event("c", false),
            event("d", false),
            event("e", true),
        ];
        let (kept, dropped) = cap_normal(events, 2);
        let names: Vec<_> = kept
            .iter()
            .map(|(r, s)| (r.name.as_deref().unwrap_or(""), s.warning))
            .collect();
        assert_eq!(
            names,
            [("a", false), ("b", true), ("c", false), ("e", true)]
        );
        assert_eq!(dropped, 1);
        let (kept, dropped) = cap_normal(vec![event("a", false)], 100);
        assert_eq!((kept.len(), dropped), (1, 0));
    }
}
