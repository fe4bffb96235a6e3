//! Writes each object's status and records an Event on each change of verdict — only while
//! this replica holds the Lease, and off the compile path: the rebuild loop hands over the
//! latest verdicts through a one-slot channel (newest wins, the rebuild never waits) and
//! this task catches up.
//!
//! Status is a JSON merge patch on the `/status` subresource holding `observedGeneration`
//! and `conditions` only (an AIConsumer's `spendUsd` is left alone), sent only when it
//! differs from what the object carries.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;

use k8s_openapi::jiff::Timestamp;
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use switchyard_api::{AIConsumer, AIRoute, Condition, ModelBackend};
use tokio::{sync::watch, time::Instant};

use super::{
    index::{Kind, ObjKey},
    metrics::ControllerMetrics,
    status::{event_for, merge_conditions, verdict_changed, HasStatus, Verdict},
    Stored, Stores,
};

/// The latest verdicts, as handed from the rebuild loop to the writer.
pub(crate) type Verdicts = Arc<Vec<Verdict>>;

/// The status writer task.
pub(crate) struct StatusWriter {
    client: Client,
    stores: Stores,
    recorder: Recorder,
    metrics: ControllerMetrics,
    written: HashMap<(Kind, ObjKey), Written>,
}

/// What we last wrote to an object, so a store that has not yet seen our own write does not
/// make us write (and announce) it twice.
struct Written {
    uid: Option<String>,
    resource_versions: [Option<String>; 2],
    generation: Option<i64>,
    conditions: Vec<Condition>,
}

const FIELD_MANAGER: &str = "switchyard";
/// Status writes in flight at once: well inside the API server's default limits (400
/// requests in flight, 200 mutating) and its priority-and-fairness shares, and enough that
/// the round trip, not the count, bounds how fast 10 000 objects get their status.
const WRITES_IN_FLIGHT: usize = 16;

/// One status write decided by [`StatusWriter::pending`].
struct Pending {
    kind: Kind,
    key: ObjKey,
    /// The verdict changed: an Event goes with the write.
    announce: bool,
    uid: Option<String>,
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
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "switchyard".into(),
                instance: Some(identity.to_string()),
            },
        );
        StatusWriter {
            client,
            stores,
            recorder,
            metrics,
            written: HashMap::new(),
        }
    }

    /// Writes whenever the verdicts change or leadership is gained, until `stop`.
    pub(crate) async fn run(
        mut self,
        mut verdicts: watch::Receiver<Verdicts>,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
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
                self.written.clear();
                next = Instant::now() + RESYNC;
                continue;
            }
            let snapshot = verdicts.borrow_and_update().clone();
            let all_ok = self.sync(&snapshot).await;
            next = Instant::now() + if all_ok { RESYNC } else { RETRY };
        }
    }

    /// Brings every object's status in line with `verdicts`; false if a write failed.
    /// Which objects need a write is decided here, in order; the writes themselves go out
    /// [`WRITES_IN_FLIGHT`] at a time (one after another, 10 000 new routes took 50 s).
    async fn sync(&mut self, verdicts: &[Verdict]) -> bool {
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
        let results: Vec<(Pending, Result<Option<String>, ()>)> =
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
        for (p, r) in results {
            match r {
                Ok(Some(resource_version)) => {
                    self.written.insert(
                        (p.kind, p.key),
                        Written {
                            uid: p.uid,
                            resource_versions: [p.resource_version, Some(resource_version)],
                            generation: p.generation,
                            conditions: p.conditions,
                        },
                    );
                }
                Ok(None) => {}
                Err(()) => ok = false,
            }
        }
        let live: std::collections::HashSet<(Kind, &ObjKey)> =
            verdicts.iter().map(|v| (v.kind, &v.key)).collect();
        self.written.retain(|(k, key), _| live.contains(&(*k, key)));
        ok
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
        let id = (v.kind, v.key.clone());
        let (cur_generation, cur_conditions) = match self.written.get(&id) {
            Some(w)
                if w.uid == meta.uid && w.resource_versions.contains(&meta.resource_version) =>
            {
                (w.generation, w.conditions.as_slice())
            }
            _ => obj.current(),
        };
        let conditions = merge_conditions(cur_conditions, &v.conditions, now);
        if cur_generation == v.generation && cur_conditions == conditions.as_slice() {
            return None;
        }
        Some(Pending {
            kind: v.kind,
            announce: verdict_changed(cur_conditions, &conditions),
            key: v.key.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            generation: v.generation,
            conditions,
        })
    }

    /// Sends one status patch (and its Event when the verdict changed): the object's new
    /// resourceVersion, `None` when it was deleted meanwhile, `Err` when the write failed.
    async fn write<K>(&self, p: &Pending) -> Result<Option<String>, ()>
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
                if p.announce {
                    self.record(&updated, &p.conditions).await;
                }
                Ok(Some(
                    updated.meta().resource_version.clone().unwrap_or_default(),
                ))
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

    /// Best effort: a lost Event is not worth a retry.
    async fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, conditions: &[Condition]) {
        let spec = event_for(conditions);
        let event = Event {
            type_: if spec.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: spec.reason,
            note: Some(spec.note),
            action: "Compile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "could not record an Event");
        }
    }
}
