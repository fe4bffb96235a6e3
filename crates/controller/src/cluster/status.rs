//! From a compile's diagnostics to the status each object should carry: pure functions,
//! tested without a cluster.
//!
//! Conditions, following the Kubernetes API conventions (positive polarity, the reason of a
//! `True` condition is the condition's own type, as in Gateway API):
//! - `Accepted`: the object is in the routing table. `False` with the first error's reason
//!   (`InvalidPricing`, `BackendNotFound` …) when it was left out; `True` with reason
//!   `ConflictingMatch` when some of its model patterns lose to an older route, `False` with
//!   that reason when all of them do (it then serves nothing). Also `False`, with the
//!   message starting "generation N keeps serving", when an edit was refused and the last
//!   accepted generation serves in its place ([`super::compile_holding`]).
//! - `ResolvedRefs`: every ModelBackend / Secret it names exists, is usable and may be used.
//! - `Ready` (ModelBackends): follows `Accepted` until health checking exists; `True` while an
//!   earlier generation serves in place of a refused one.
//!
//! `lastTransitionTime` moves only when a condition's status flips; the verdict (type,
//! status, reason of every condition) decides whether an Event is due.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use switchyard_api::{AIConsumer, AIRoute, Condition, ModelBackend, Reason};
use switchyard_compile::{Diagnostic, Severity};

use super::{
    hold::Held,
    index::{backend_secret_refs, Index, Kind, ObjKey},
};

/// The status one object should carry after a compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Kind of the object.
    pub kind: Kind,
    /// Namespace and name.
    pub key: ObjKey,
    /// The uid the verdict is for, so a re-created object of the same name is not confused.
    pub uid: Option<String>,
    /// The `metadata.generation` compiled.
    pub generation: Option<i64>,
    /// The conditions, without `lastTransitionTime` (set when merged with the current ones).
    /// Shared between the verdicts that say the same: at 10 000 accepted routes one copy
    /// instead of 10 000 (the verdicts stay with the status writer between rebuilds).
    pub conditions: Arc<[Condition]>,
}

/// Cluster-specific wording added to messages.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// The label selector Secrets are watched with, if any: a Secret without the label is
    /// invisible, which the `SecretNotFound` message then says.
    pub secret_selector: Option<String>,
}

/// An Event to record for a change of verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// The `Accepted` reason, or the failing condition's.
    pub reason: String,
    /// Human-readable, at most 1 kB.
    pub note: String,
}

/// Read access to the status of each kind.
pub trait HasStatus {
    /// `(observedGeneration, conditions)` as currently stored.
    fn current(&self) -> (Option<i64>, &[Condition]);
}

/// Condition types.
pub const ACCEPTED: &str = "Accepted";
/// Condition types.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition types.
pub const READY: &str = "Ready";

const REF_REASONS: &[Reason] = &[
    Reason::BackendNotFound,
    Reason::SecretNotFound,
    Reason::BudgetNotFound,
    Reason::RefNotPermitted,
    Reason::ModelNotServed,
];

/// The verdict on every object of `index`, given the diagnostics of compiling it.
pub fn verdicts(index: &Index, diagnostics: &[Diagnostic], hints: &Hints) -> Vec<Verdict> {
    let mut by_obj: BTreeMap<(&str, &str, &str), Vec<&Diagnostic>> = BTreeMap::new();
    for d in diagnostics {
        by_obj
            .entry((d.kind, d.namespace.as_str(), d.name.as_str()))
            .or_default()
            .push(d);
    }
    let diags = |kind: Kind, key: &ObjKey| -> Vec<&Diagnostic> {
        by_obj
            .get(&(kind.as_str(), key.0.as_str(), key.1.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut shared = Shared::default();
    for b in index.backends() {
        let key = obj_key(&b.metadata);
        let d = diags(Kind::ModelBackend, &key);
        // Compile stops at the first problem of a backend, before its Secrets when the
        // spec itself is invalid: look at the Secrets here so ResolvedRefs is still right.
        let unchecked_refs = !d.is_empty() && !d.iter().any(|d| is_ref(d.error.reason));
        let own_refs = if unchecked_refs {
            backend_secret_refs(b)
                .into_iter()
                .filter(|(ns, name)| index.secret(ns, name).is_none())
                .map(|(ns, name)| format!("Secret {ns}/{name} not found"))
                .collect()
        } else {
            vec![]
        };
        let mut conditions = common_conditions(&d, own_refs, false, hints);
        let accepted = &conditions[0];
        conditions.push(Condition {
            type_: READY.into(),
            status: accepted.status.clone(),
            reason: if accepted.status == "True" {
                READY.into()
            } else {
                accepted.reason.clone()
            },
            message: if accepted.status == "True" {
                "Serving. Health checks are not implemented yet: Ready follows Accepted.".into()
            } else {
                "Not serving: the backend was not accepted.".into()
            },
            ..Condition::default()
        });
        out.push(verdict(
            Kind::ModelBackend,
            &b.metadata,
            key,
            conditions,
            &mut shared,
        ));
    }
    for r in index.routes() {
        let key = obj_key(&r.metadata);
        let d = diags(Kind::AIRoute, &key);
        let shadowed = d
            .iter()
            .filter(|d| {
                d.severity == Severity::Warning && d.error.reason == Reason::ConflictingMatch
            })
            .count();
        let all_shadowed = shadowed > 0 && shadowed >= r.spec.match_.models.len();
        let conditions = common_conditions(&d, vec![], all_shadowed, hints);
        out.push(verdict(
            Kind::AIRoute,
            &r.metadata,
            key,
            conditions,
            &mut shared,
        ));
    }
    for c in index.consumers() {
        let key = obj_key(&c.metadata);
        let d = diags(Kind::AIConsumer, &key);
        let conditions = common_conditions(&d, vec![], false, hints);
        out.push(verdict(
            Kind::AIConsumer,
            &c.metadata,
            key,
            conditions,
            &mut shared,
        ));
    }
    out
}

/// Marks the verdicts of the resources held back ([`super::compile_holding`]): `Accepted`
/// stays `False` with the refused generation's reason, its message first saying which
/// generation keeps serving; a ModelBackend's `Ready` is `True`, as its previous generation
/// serves. `observedGeneration` stays the refused one: it was observed.
pub fn mark_held(verdicts: &mut [Verdict], held: &[Held]) {
    for v in verdicts {
        let Some(h) = held.iter().find(|h| h.kind == v.kind && h.key == v.key) else {
            continue;
        };
        let serving = h.serving.map_or_else(
            || "the previous generation".to_string(),
            |g| format!("generation {g}"),
        );
        let refused = h.refused.map_or_else(
            || "the new generation".to_string(),
            |g| format!("generation {g}"),
        );
        let mut conditions = v.conditions.to_vec();
        for c in &mut conditions {
            match c.type_.as_str() {
                ACCEPTED => {
                    c.message = format!(
                        "{serving} keeps serving; {refused} was refused: {}",
                        c.message
                    );
                }
                READY => {
                    c.status = "True".into();
                    c.reason = READY.into();
                    c.message =
                        format!("Serving {serving}; {refused} was not accepted (see Accepted).");
                }
                _ => {}
            }
        }
        v.conditions = conditions.into();
    }
}

/// One copy of each distinct list of conditions.
type Shared = HashMap<Vec<Condition>, Arc<[Condition]>>;

fn obj_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn verdict(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: ObjKey,
    mut conditions: Vec<Condition>,
    shared: &mut Shared,
) -> Verdict {
    for c in &mut conditions {
        c.observed_generation = meta.generation;
    }
    let conditions = match shared.get(&conditions) {
        Some(same) => Arc::clone(same),
        None => {
            let one: Arc<[Condition]> = conditions.as_slice().into();
            shared.insert(conditions, Arc::clone(&one));
            one
        }
    };
    Verdict {
        kind,
        key,
        uid: meta.uid.clone(),
        generation: meta.generation,
        conditions,
    }
}

fn is_ref(reason: Reason) -> bool {
    REF_REASONS.contains(&reason)
}

fn describe(d: &Diagnostic, hints: &Hints) -> String {
    let mut s = format!("{}: {}", d.error.field, d.error.message);
    if d.error.reason == Reason::SecretNotFound && d.error.message.ends_with("not found") {
        if let Some(sel) = &hints.secret_selector {
            s.push_str(&format!(
                " (only Secrets labelled {sel} are visible to Switchyard)"
            ));
        }
    }
    s
}

/// `Accepted` and `ResolvedRefs`, in that order.
fn common_conditions(
    diags: &[&Diagnostic],
    extra_unresolved: Vec<String>,
    all_shadowed: bool,
    hints: &Hints,
) -> Vec<Condition> {
    let errors: Vec<&Diagnostic> = diags
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let warnings: Vec<&Diagnostic> = diags
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    let join = |ds: &[&Diagnostic]| {
        ds.iter()
            .map(|d| describe(d, hints))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let accepted = if let Some(first) = errors.first() {
        cond(ACCEPTED, false, first.error.reason.as_str(), join(&errors))
    } else if let Some(first) = warnings.first() {
        let msg = join(&warnings);
        if all_shadowed {
            cond(
                ACCEPTED,
                false,
                first.error.reason.as_str(),
                format!("every model pattern is taken by another route: {msg}"),
            )
        } else {
            cond(ACCEPTED, true, first.error.reason.as_str(), msg)
        }
    } else {
        cond(
            ACCEPTED,
            true,
            ACCEPTED,
            "Accepted into the routing table".into(),
        )
    };
    let unresolved: Vec<&Diagnostic> = errors
        .iter()
        .copied()
        .filter(|d| is_ref(d.error.reason))
        .collect();
    let resolved = if let Some(first) = unresolved.first() {
        cond(
            RESOLVED_REFS,
            false,
            first.error.reason.as_str(),
            join(&unresolved),
        )
    } else if !extra_unresolved.is_empty() {
        let mut msg = extra_unresolved.join("; ");
        if let Some(sel) = &hints.secret_selector {
            msg.push_str(&format!(
                " (only Secrets labelled {sel} are visible to Switchyard)"
            ));
        }
        cond(RESOLVED_REFS, false, Reason::SecretNotFound.as_str(), msg)
    } else {
        cond(
            RESOLVED_REFS,
            true,
            RESOLVED_REFS,
            "All references resolved".into(),
        )
    };
    vec![accepted, resolved]
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: None,
    }
}

/// The conditions to write: `desired`, with each `lastTransitionTime` carried over from
/// `current` when that condition's status did not change, else `now`.
pub fn merge_conditions(current: &[Condition], desired: &[Condition], now: &str) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let kept = current
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == d.status)
                .and_then(|c| c.last_transition_time.clone());
            Condition {
                last_transition_time: Some(kept.unwrap_or_else(|| now.to_string())),
                ..d.clone()
            }
        })
        .collect()
}

/// Whether [`merge_conditions`] of `current` and `desired` would give `current` back: the
/// status already says this. Worked out without building the merged list, as the status
/// writer asks it of every object on every pass.
pub fn conditions_current(current: &[Condition], desired: &[Condition], now: &str) -> bool {
    current.len() == desired.len()
        && current.iter().zip(desired).all(|(c, d)| {
            let kept = current
                .iter()
                .find(|k| k.type_ == d.type_ && k.status == d.status)
                .and_then(|k| k.last_transition_time.as_deref());
            c.type_ == d.type_
                && c.status == d.status
                && c.reason == d.reason
                && c.message == d.message
                && c.observed_generation == d.observed_generation
                && c.last_transition_time.as_deref() == Some(kept.unwrap_or(now))
        })
}

/// Whether the verdict (type, status and reason of each condition) differs: the test for
/// recording an Event. Messages and times alone do not count.
pub fn verdict_changed(current: &[Condition], new: &[Condition]) -> bool {
    let key = |cs: &[Condition]| {
        let mut v: Vec<(String, String, String)> = cs
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        v.sort();
        v
    };
    key(current) != key(new)
}

/// The Event for a new verdict: `Warning` when a condition is `False`, named after its
/// reason; else `Normal` with reason `Accepted` (or a warning reason such as
/// `ConflictingMatch`).
pub fn event_for(conditions: &[Condition]) -> EventSpec {
    let failing = conditions.iter().find(|c| c.status != "True");
    let accepted = conditions.iter().find(|c| c.type_ == ACCEPTED);
    let (warning, c) = match (failing, accepted) {
        (Some(f), _) => (true, Some(f)),
        (None, a) => (a.is_some_and(|a| a.reason != ACCEPTED), a),
    };
    let (reason, message) = c.map_or((ACCEPTED, ""), |c| (c.reason.as_str(), c.message.as_str()));
    EventSpec {
        warning,
        reason: reason.to_string(),
        note: truncate(message, 1000),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl HasStatus for ModelBackend {
    fn current(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[][..]), |s| {
            (s.observed_generation, &s.conditions[..])
        })
    }
}

impl HasStatus for AIRoute {
    fn current(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[][..]), |s| {
            (s.observed_generation, &s.conditions[..])
        })
    }
}

impl HasStatus for AIConsumer {
    fn current(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[][..]), |s| {
            (s.observed_generation, &s.conditions[..])
        })
    }
}

#[cfg(test)]
mod tests;
