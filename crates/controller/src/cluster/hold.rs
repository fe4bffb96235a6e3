//! Keeping the last accepted version of an edited resource serving while its new version is
//! refused: the cluster's counterpart of local mode keeping the previous table when a reload
//! has errors.
//!
//! After every rebuild, [`LastGood`] remembers, per ModelBackend, AIRoute and AIConsumer, the
//! last version that compiled without an error. When the current version of a resource has an
//! error and a remembered version of the same object (same uid) has a different
//! `metadata.generation` — the object itself was edited — [`compile_holding`] compiles again
//! with the remembered version in its place, and that table is served. The status then says
//! the new generation was refused and which one keeps serving ([`super::status::mark_held`]).
//!
//! Nothing is held back when:
//! - the resource's own generation is unchanged: its failure comes from outside (a Secret it
//!   needs was deleted), and it must stop — an AIConsumer no longer authenticates, a
//!   ModelBackend no longer forwards without its key;
//! - the remembered version fails as well in today's cluster (its Secret is gone too);
//! - the object was deleted (it leaves the table) or re-created under the same name (a new
//!   uid: a new object, not an edit).
//!
//! AIRoutes refer to ModelBackends, so backends are held back first: a route that fails only
//! because its backend's new version was refused then compiles against the backend's held
//! version, and keeps its own current version.
//!
//! The memory lives in the process: a replica started after a refused edit never saw the
//! version before it, and leaves the resource out.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use switchyard_api::{AIConsumer, AIRoute, ModelBackend};
use switchyard_compile::{compile_inputs, Compiled, Diagnostic, Severity};

use super::index::{backend_secret_refs, consumer_secret_refs, Index, Indexed, Kind, ObjKey};

/// A resource: its kind, namespace and name.
pub type Id = (Kind, ObjKey);

/// Most compiles in one rebuild. One is the norm; holding back backends, then routes and
/// consumers, then checking takes three; giving up on a held version takes one more each.
const MAX_COMPILES: usize = 6;

/// The last version of each resource that compiled without an error, kept across rebuilds.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    backends: BTreeMap<ObjKey, Arc<ModelBackend>>,
    routes: BTreeMap<ObjKey, Arc<AIRoute>>,
    consumers: BTreeMap<ObjKey, Arc<AIConsumer>>,
}

/// A resource whose current version was refused while its last good version keeps serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Kind.
    pub kind: Kind,
    /// Namespace and name.
    pub key: ObjKey,
    /// The generation that keeps serving.
    pub serving: Option<i64>,
    /// The generation refused (the current one).
    pub refused: Option<i64>,
    /// What compiling the refused generation found.
    pub diagnostics: Vec<Diagnostic>,
}

/// The result of [`compile_holding`].
pub struct Outcome {
    /// The table to serve: the current resources, with the held ones' last good versions.
    pub compiled: Compiled,
    /// The resources held back, in kind, namespace, name order.
    pub held: Vec<Held>,
    /// The diagnostics of every resource's *current* version, for status and logs: the final
    /// compile's, with those of each held resource replaced by its refused version's.
    pub diagnostics: Vec<Diagnostic>,
    /// How many compiles it took.
    pub compiles: usize,
}

/// A kind [`LastGood`] remembers.
pub trait Remembered: Indexed {
    /// The kind.
    const KIND: Kind;
    /// Its remembered versions.
    fn remembered(last_good: &LastGood) -> &BTreeMap<ObjKey, Arc<Self>>;
    /// Its remembered versions, to change.
    fn remembered_mut(last_good: &mut LastGood) -> &mut BTreeMap<ObjKey, Arc<Self>>;
}

/// Compiles `index` as table `generation`, holding back the refused edits that have a last
/// good version in `last_good`.
pub fn compile_holding(index: &Index, last_good: &LastGood, generation: u64) -> Outcome {
    let mut held: BTreeMap<Id, Held> = BTreeMap::new();
    let mut given_up: BTreeSet<Id> = BTreeSet::new();
    let mut compiled = compile_inputs(&index.inputs(), generation);
    let mut compiles = 1;
    while compiles < MAX_COMPILES {
        let failing = failing(&compiled.diagnostics);
        let mut next = held.clone();
        // A held version that fails too (its Secret is gone as well): refused after all.
        next.retain(|id, _| !failing.contains(id));
        given_up.extend(held.keys().filter(|id| !next.contains_key(*id)).cloned());
        let candidates: Vec<&Id> = failing
            .iter()
            .filter(|id| !held.contains_key(*id) && !given_up.contains(*id))
            .filter(|id| last_good.eligible(index, id))
            .collect();
        // A route may fail only because of its backend: wait for the backends to be held.
        let backends_first = candidates.iter().any(|(k, _)| *k == Kind::ModelBackend);
        for id in candidates {
            if backends_first && id.0 == Kind::AIRoute {
                continue;
            }
            if let Some(h) = last_good.held(index, id, diagnostics_of(&compiled.diagnostics, id)) {
                next.insert(id.clone(), h);
            }
        }
        if next.keys().eq(held.keys()) {
            break;
        }
        held = next;
        compiled = compile_inputs(
            &last_good.substituted(index, held.keys()).inputs(),
            generation,
        );
        compiles += 1;
    }

    // Status and logs are about the current versions: a held resource's come from its
    // refused version, not from the version serving in its place.
    let mut diagnostics: Vec<Diagnostic> = compiled
        .diagnostics
        .iter()
        .filter(|d| id_of(d).is_none_or(|id| !held.contains_key(&id)))
        .cloned()
        .chain(held.values().flat_map(|h| h.diagnostics.iter().cloned()))
        .collect();
    diagnostics.sort_by(|a, b| {
        (a.kind, &a.namespace, &a.name, &a.error.field).cmp(&(
            b.kind,
            &b.namespace,
            &b.name,
            &b.error.field,
        ))
    });
    // Only reached when the compile limit cut the loop short: a held version that failed
    // in the last compile is not serving.
    let failing = failing(&compiled.diagnostics);
    held.retain(|id, _| !failing.contains(id));
    Outcome {
        compiled,
        held: held.into_values().collect(),
        diagnostics,
        compiles,
    }
}

fn id_of(d: &Diagnostic) -> Option<Id> {
    Some((Kind::parse(d.kind)?, (d.namespace.clone(), d.name.clone())))
}

/// The resources with an error diagnostic.
fn failing(diagnostics: &[Diagnostic]) -> BTreeSet<Id> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .filter_map(id_of)
        .collect()
}

fn diagnostics_of(diagnostics: &[Diagnostic], id: &Id) -> Vec<Diagnostic> {
    diagnostics
        .iter()
        .filter(|d| id_of(d).as_ref() == Some(id))
        .cloned()
        .collect()
}

// === impl LastGood ===

impl LastGood {
    /// Remembers, after a rebuild, the version of each resource of `index` that compiled
    /// without an error; keeps the previous one of each held or failing resource; forgets
    /// deleted and re-created objects.
    pub fn update(&mut self, index: &Index, outcome: &Outcome) {
        let failing = failing(&outcome.compiled.diagnostics);
        let held: BTreeSet<Id> = outcome
            .held
            .iter()
            .map(|h| (h.kind, h.key.clone()))
            .collect();
        self.update_kind::<ModelBackend>(index, &failing, &held);
        self.update_kind::<AIRoute>(index, &failing, &held);
        self.update_kind::<AIConsumer>(index, &failing, &held);
    }

    fn update_kind<K: Remembered>(
        &mut self,
        index: &Index,
        failing: &BTreeSet<Id>,
        held: &BTreeSet<Id>,
    ) {
        let old = std::mem::take(K::remembered_mut(self));
        let mut new = BTreeMap::new();
        for (key, obj) in K::map_ref(index) {
            let id = (K::KIND, key.clone());
            if !failing.contains(&id) && !held.contains(&id) {
                new.insert(key.clone(), Arc::clone(obj));
            } else if let Some(good) = old.get(key).filter(|g| g.meta().uid == obj.meta().uid) {
                new.insert(key.clone(), Arc::clone(good));
            }
        }
        *K::remembered_mut(self) = new;
    }

    /// Shares the current copy of each remembered version that is still current: the same
    /// object at the same generation, as after a status write (which leaves the spec alone
    /// and generation as it was) gave the store a new copy. Without this every status write
    /// left two copies of its object, the store's and this one (10 MiB at 10 000 routes).
    pub fn share<K: Remembered>(&mut self, current: impl Fn(&ObjKey) -> Option<Arc<K>>) {
        for (key, good) in K::remembered_mut(self).iter_mut() {
            let Some(cur) = current(key) else { continue };
            let (c, g) = (cur.meta(), good.meta());
            if !Arc::ptr_eq(&cur, good) && c.uid == g.uid && c.generation == g.generation {
                *good = cur;
            }
        }
    }

    /// The remembered version of `key`, if any.
    pub fn get<K: Remembered>(&self, key: &ObjKey) -> Option<&Arc<K>> {
        K::remembered(self).get(key)
    }

    /// The Secrets the remembered versions refer to: a held version must be rebuilt when one
    /// of them changes, though the current version may no longer name it.
    pub fn referenced_secrets(&self) -> BTreeSet<ObjKey> {
        self.backends
            .values()
            .flat_map(|b| backend_secret_refs(b))
            .chain(
                self.consumers
                    .values()
                    .flat_map(|c| consumer_secret_refs(c)),
            )
            .collect()
    }

    /// Whether `id` has a remembered version to fall back on: the same object, another
    /// generation.
    fn eligible(&self, index: &Index, id: &Id) -> bool {
        match id.0 {
            Kind::ModelBackend => self.eligible_kind::<ModelBackend>(index, &id.1),
            Kind::AIRoute => self.eligible_kind::<AIRoute>(index, &id.1),
            Kind::AIConsumer => self.eligible_kind::<AIConsumer>(index, &id.1),
        }
    }

    fn eligible_kind<K: Remembered>(&self, index: &Index, key: &ObjKey) -> bool {
        let (Some(current), Some(good)) = (index.get::<K>(key), self.get::<K>(key)) else {
            return false;
        };
        let (c, g) = (current.meta(), good.meta());
        c.uid.is_some()
            && c.uid == g.uid
            && c.generation.is_some()
            && g.generation.is_some()
            && c.generation != g.generation
    }

    fn held(&self, index: &Index, id: &Id, diagnostics: Vec<Diagnostic>) -> Option<Held> {
        let (serving, refused) = match id.0 {
            Kind::ModelBackend => self.generations::<ModelBackend>(index, &id.1)?,
            Kind::AIRoute => self.generations::<AIRoute>(index, &id.1)?,
            Kind::AIConsumer => self.generations::<AIConsumer>(index, &id.1)?,
        };
        Some(Held {
            kind: id.0,
            key: id.1.clone(),
            serving,
            refused,
            diagnostics,
        })
    }

    fn generations<K: Remembered>(
        &self,
        index: &Index,
        key: &ObjKey,
    ) -> Option<(Option<i64>, Option<i64>)> {
        Some((
            self.get::<K>(key)?.meta().generation,
            index.get::<K>(key)?.meta().generation,
        ))
    }

    /// `index` with the remembered versions of `ids` in place of the current ones.
    fn substituted<'i>(&self, index: &Index, ids: impl Iterator<Item = &'i Id>) -> Index {
        let mut out = index.clone();
        for (kind, key) in ids {
            match kind {
                Kind::ModelBackend => self.substitute::<ModelBackend>(&mut out, key),
                Kind::AIRoute => self.substitute::<AIRoute>(&mut out, key),
                Kind::AIConsumer => self.substitute::<AIConsumer>(&mut out, key),
            }
        }
        out
    }

    fn substitute<K: Remembered>(&self, index: &mut Index, key: &ObjKey) {
        if let Some(good) = self.get::<K>(key) {
            index.apply::<K>(Arc::clone(good));
        }
    }

    /// How many versions are remembered.
    pub fn len(&self) -> usize {
        self.backends.len() + self.routes.len() + self.consumers.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Remembered for ModelBackend {
    const KIND: Kind = Kind::ModelBackend;
    fn remembered(last_good: &LastGood) -> &BTreeMap<ObjKey, Arc<Self>> {
        &last_good.backends
    }
    fn remembered_mut(last_good: &mut LastGood) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut last_good.backends
    }
}

impl Remembered for AIRoute {
    const KIND: Kind = Kind::AIRoute;
    fn remembered(last_good: &LastGood) -> &BTreeMap<ObjKey, Arc<Self>> {
        &last_good.routes
    }
    fn remembered_mut(last_good: &mut LastGood) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut last_good.routes
    }
}

impl Remembered for AIConsumer {
    const KIND: Kind = Kind::AIConsumer;
    fn remembered(last_good: &LastGood) -> &BTreeMap<ObjKey, Arc<Self>> {
        &last_good.consumers
    }
    fn remembered_mut(last_good: &mut LastGood) -> &mut BTreeMap<ObjKey, Arc<Self>> {
        &mut last_good.consumers
    }
}

#[cfg(test)]
mod tests;
