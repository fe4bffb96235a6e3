use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use switchyard_api::{backend::Pricing, consumer::Budget, AIConsumer, AIRoute};
use switchyard_router::TableHandle;

use super::*;
use crate::cluster::{
    index::Namespaces,
    status::{mark_held, verdicts, Hints, Verdict},
    test_util::*,
};

fn healthy() -> Index {
    let mut index = Index::new(Namespaces::All);
    index.apply(mk_backend("ns", "b", Some("b-key")));
    index.apply(mk_secret("ns", "b-key", "apiKey", "sk-1"));
    index.apply(mk_route("ns", "r", &["m"], "b"));
    index.apply(mk_consumer("ns", "c", "c-key"));
    index.apply(mk_secret("ns", "c-key", "key", "vk-1"));
    index
}

/// One rebuild: compile holding back, then remember.
fn rebuild(index: &Index, last_good: &mut LastGood) -> Outcome {
    let outcome = compile_holding(index, last_good, 1);
    last_good.update(index, &outcome);
    outcome
}

fn edited<K: Clone + Resource>(obj: &Arc<K>, generation: i64, edit: impl FnOnce(&mut K)) -> K {
    let mut obj = (**obj).clone();
    obj.meta_mut().generation = Some(generation);
    edit(&mut obj);
    obj
}

fn bad_timeout(r: &mut AIRoute) {
    r.spec.match_.models.push("m2".into());
    r.spec.timeout = Some("soon".into());
}

fn bad_pricing(b: &mut ModelBackend) {
    b.spec.models[0].pricing = Some(Pricing {
        input_per_million: Some("cheap".into()),
        ..Pricing::default()
    });
}

fn models(outcome: &Outcome) -> Vec<&str> {
    outcome
        .compiled
        .table
        .models()
        .iter()
        .map(|m| &**m)
        .collect()
}

fn held_ids(outcome: &Outcome) -> Vec<(Kind, &str, Option<i64>, Option<i64>)> {
    outcome
        .held
        .iter()
        .map(|h| (h.kind, h.key.1.as_str(), h.serving, h.refused))
        .collect()
}

fn errors_of<'o>(outcome: &'o Outcome, kind: Kind, name: &str) -> Vec<&'o str> {
    outcome
        .diagnostics
        .iter()
        .filter(|d| d.kind == kind.as_str() && d.name == name && d.severity == Severity::Error)
        .map(|d| d.error.reason.as_str())
        .collect()
}

fn status(index: &Index, outcome: &Outcome) -> Vec<Verdict> {
    let mut vs = verdicts(index, &outcome.diagnostics, &Hints::default());
    mark_held(&mut vs, &outcome.held);
    vs
}

fn find<'v>(vs: &'v [Verdict], kind: Kind, name: &str) -> &'v Verdict {
    vs.iter()
        .find(|v| v.kind == kind && v.key == key("ns", name))
        .unwrap_or_else(|| panic!("no verdict for {kind} ns/{name}: {vs:#?}"))
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version_serving() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    let first = rebuild(&index, &mut last_good);
    assert!(first.held.is_empty() && first.diagnostics.is_empty());
    assert_eq!(first.compiles, 1);
    assert_eq!(last_good.len(), 3);

    let r2 = edited(
        index.get::<AIRoute>(&key("ns", "r")).unwrap(),
        2,
        bad_timeout,
    );
    index.apply(r2);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::AIRoute, "r", Some(1), Some(2))]
    );
    assert_eq!(outcome.compiles, 2);
    // Generation 1 serves: `m`, not the `m2` that generation 2 added.
    assert_eq!(models(&outcome), vec!["m"]);
    assert!(!outcome.compiled.has_errors());
    assert_eq!(
        errors_of(&outcome, Kind::AIRoute, "r"),
        vec!["InvalidDuration"]
    );
    // Still generation 1 to fall back on.
    let kept = last_good.get::<AIRoute>(&key("ns", "r")).unwrap();
    assert_eq!(kept.metadata.generation, Some(1));

    let vs = status(&index, &outcome);
    let r = find(&vs, Kind::AIRoute, "r");
    assert_eq!(r.generation, Some(2), "the refused generation was observed");
    let accepted = &r.conditions[0];
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "InvalidDuration")
    );
    assert!(
        accepted
            .message
            .starts_with("generation 1 keeps serving; generation 2 was refused: spec.timeout"),
        "{}",
        accepted.message
    );
    assert!(r
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(2)));
    let e = crate::cluster::status::event_for(&r.conditions);
    assert!(e.warning);
    assert_eq!(e.reason, "InvalidDuration");
    assert!(e.note.contains("generation 1 keeps serving"), "{}", e.note);

    // Edited again, still invalid: generation 1 still serves.
    let r3 = edited(index.get::<AIRoute>(&key("ns", "r")).unwrap(), 3, |_| {});
    index.apply(r3);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::AIRoute, "r", Some(1), Some(3))]
    );

    // Fixed: the new version takes over and becomes the one to fall back on.
    let r4 = edited(index.get::<AIRoute>(&key("ns", "r")).unwrap(), 4, |r| {
        r.spec.timeout = Some("30s".into());
    });
    index.apply(r4);
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty());
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics);
    assert_eq!(models(&outcome), vec!["m", "m2"]);
    let kept = last_good.get::<AIRoute>(&key("ns", "r")).unwrap();
    assert_eq!(kept.metadata.generation, Some(4));
}

#[test]
fn a_missing_secret_is_refused_not_held() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    rebuild(&index, &mut last_good);

    // The consumer's own spec is unchanged: its Secret went away, and it must stop
    // authenticating — nothing to fall back on.
    index.delete::<Secret>("ns", "c-key");
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty());
    assert_eq!(
        errors_of(&outcome, Kind::AIConsumer, "c"),
        vec!["SecretNotFound"]
    );
    let consumers = outcome.compiled.table.consumers();
    assert!(consumers.get("ns/c").is_none());
    assert!(consumers.authenticate(b"vk-1").is_none());
    assert!(consumers.auth_required(), "fails closed");

    // Edited as well, while the Secret is still missing: the last good version fails too,
    // so it is refused after all.
    let c2 = edited(index.get::<AIConsumer>(&key("ns", "c")).unwrap(), 2, |c| {
        c.spec.limits = Some(Default::default());
        c.spec.limits.as_mut().unwrap().requests_per_minute = Some(0);
    });
    index.apply(c2);
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty(), "{:?}", held_ids(&outcome));
    assert!(outcome.compiled.table.consumers().get("ns/c").is_none());
    assert_eq!(
        errors_of(&outcome, Kind::AIConsumer, "c"),
        vec!["SecretNotFound", "InvalidLimit"]
    );
    assert_eq!(outcome.compiles, 3);
    let vs = status(&index, &outcome);
    let c = find(&vs, Kind::AIConsumer, "c");
    assert_eq!(c.conditions[0].status, "False");
    assert!(!c.conditions[0].message.contains("keeps serving"));
}

#[test]
fn a_backend_whose_edit_lost_its_secret_is_refused() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    rebuild(&index, &mut last_good);
    // Edited into an invalid state and its Secret deleted: generation 1 would forward
    // without its key, so it does not serve either.
    let b2 = edited(
        index.get::<ModelBackend>(&key("ns", "b")).unwrap(),
        2,
        bad_pricing,
    );
    index.apply(b2);
    index.delete::<Secret>("ns", "b-key");
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty(), "{:?}", held_ids(&outcome));
    assert!(outcome.compiled.table.backends().is_empty());
    assert_eq!(
        errors_of(&outcome, Kind::ModelBackend, "b"),
        vec!["InvalidPricing"]
    );
    assert_eq!(
        errors_of(&outcome, Kind::AIRoute, "r"),
        vec!["BackendNotFound"]
    );
    // Three compiles: hold b back, find generation 1 failing too, give up.
    assert_eq!(outcome.compiles, 3);
}

#[test]
fn a_route_follows_its_held_backend_and_keeps_its_own_version() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    rebuild(&index, &mut last_good);

    // The backend's edit is refused; the unchanged route keeps routing to generation 1.
    let b2 = edited(
        index.get::<ModelBackend>(&key("ns", "b")).unwrap(),
        2,
        bad_pricing,
    );
    index.apply(b2);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::ModelBackend, "b", Some(1), Some(2))]
    );
    assert!(errors_of(&outcome, Kind::AIRoute, "r").is_empty());
    assert_eq!(models(&outcome), vec!["m"]);
    let vs = status(&index, &outcome);
    let b = find(&vs, Kind::ModelBackend, "b");
    let summary: Vec<_> = b
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Accepted", "False", "InvalidPricing"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
            ("Ready", "True", "Ready"),
        ]
    );
    assert!(b.conditions[2].message.contains("Serving generation 1"));
    assert_eq!(
        find(&vs, Kind::AIRoute, "r").conditions[0].reason,
        "Accepted"
    );

    // The route is edited into a valid version that names a model: it is checked against
    // the held backend and keeps its own new version.
    let r2 = edited(index.get::<AIRoute>(&key("ns", "r")).unwrap(), 2, |r| {
        r.spec.match_.models = vec!["m".into(), "m3".into()];
    });
    index.apply(r2);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::ModelBackend, "b", Some(1), Some(2))]
    );
    assert_eq!(models(&outcome), vec!["m", "m3"]);
    assert_eq!(
        last_good
            .get::<AIRoute>(&key("ns", "r"))
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );

    // Both refused: both held, the route reporting its own problem, not its backend's.
    let r3 = edited(
        index.get::<AIRoute>(&key("ns", "r")).unwrap(),
        3,
        bad_timeout,
    );
    index.apply(r3);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![
            (Kind::ModelBackend, "b", Some(1), Some(2)),
            (Kind::AIRoute, "r", Some(2), Some(3)),
        ]
    );
    assert_eq!(outcome.compiles, 3);
    assert_eq!(models(&outcome), vec!["m", "m3"]);
    assert_eq!(
        errors_of(&outcome, Kind::AIRoute, "r"),
        vec!["InvalidDuration"]
    );
}

#[test]
fn deleting_or_recreating_removes_the_fallback() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    rebuild(&index, &mut last_good);
    let r2 = edited(
        index.get::<AIRoute>(&key("ns", "r")).unwrap(),
        2,
        bad_timeout,
    );
    index.apply(r2);
    assert_eq!(rebuild(&index, &mut last_good).held.len(), 1);

    // Re-created under the same name (a new uid), invalid: a new object, nothing held.
    let mut again = mk_route("ns", "r", &["m"], "b");
    again.metadata.uid = Some("uid-ns-r-again".into());
    bad_timeout(&mut again);
    index.apply(again);
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty());
    assert_eq!(outcome.compiled.table.route_count(), 0);
    assert!(last_good.get::<AIRoute>(&key("ns", "r")).is_none());

    // Deleted: gone from the table and from memory.
    let mut index = healthy();
    let mut last_good = LastGood::default();
    rebuild(&index, &mut last_good);
    let r2 = edited(
        index.get::<AIRoute>(&key("ns", "r")).unwrap(),
        2,
        bad_timeout,
    );
    index.apply(r2);
    assert_eq!(rebuild(&index, &mut last_good).held.len(), 1);
    index.delete::<AIRoute>("ns", "r");
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty());
    assert_eq!(outcome.compiled.table.route_count(), 0);
    assert!(last_good.get::<AIRoute>(&key("ns", "r")).is_none());
    assert_eq!(last_good.len(), 2);
}

#[test]
fn a_held_consumer_keeps_its_spend_state() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    let c1 = edited(index.get::<AIConsumer>(&key("ns", "c")).unwrap(), 1, |c| {
        c.spec.budget = Some(Budget {
            usd: "10".into(),
            period: Default::default(),
        });
    });
    index.apply(c1);
    let handle = TableHandle::new();
    handle.store(rebuild(&index, &mut last_good).compiled.table);
    let state = |h: &TableHandle| {
        h.load()
            .consumers()
            .get("ns/c")
            .map(|c| Arc::clone(c.state()))
    };
    let before = state(&handle).unwrap();

    let c2 = edited(index.get::<AIConsumer>(&key("ns", "c")).unwrap(), 2, |c| {
        c.spec.budget.as_mut().unwrap().usd = "plenty".into();
    });
    index.apply(c2);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::AIConsumer, "c", Some(1), Some(2))]
    );
    assert_eq!(
        errors_of(&outcome, Kind::AIConsumer, "c"),
        vec!["InvalidLimit"]
    );
    let consumers = outcome.compiled.table.consumers();
    assert!(consumers.authenticate(b"vk-1").is_some());
    assert!(consumers.get("ns/c").unwrap().budget.is_some());
    handle.store(outcome.compiled.table);
    assert!(Arc::ptr_eq(&before, &state(&handle).unwrap()));
}

#[test]
fn the_fallbacks_secrets_stay_referenced() {
    let mut last_good = LastGood::default();
    let mut index = healthy();
    rebuild(&index, &mut last_good);
    // The backend now names a Secret that does not exist yet: refused, and generation 1
    // keeps using the old one, whose changes must still trigger rebuilds.
    let b2 = edited(
        index.get::<ModelBackend>(&key("ns", "b")).unwrap(),
        2,
        |b| {
            b.spec
                .auth
                .as_mut()
                .unwrap()
                .secret_ref
                .as_mut()
                .unwrap()
                .name = "b-new".into();
        },
    );
    index.apply(b2);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::ModelBackend, "b", Some(1), Some(2))]
    );
    assert_eq!(
        errors_of(&outcome, Kind::ModelBackend, "b"),
        vec!["SecretNotFound"]
    );
    assert!(!index.referenced_secrets().contains(&key("ns", "b-key")));
    assert!(last_good.referenced_secrets().contains(&key("ns", "b-key")));
    assert_eq!(outcome.compiled.table.backends().len(), 1);

    // The Secret appears: generation 2 takes over.
    index.apply(mk_secret("ns", "b-new", "apiKey", "sk-2"));
    let outcome = rebuild(&index, &mut last_good);
    assert!(outcome.held.is_empty());
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics);
    assert!(!last_good.referenced_secrets().contains(&key("ns", "b-key")));
}

#[test]
fn a_status_write_shares_the_stores_copy_but_a_held_version_stays() {
    let mut index = healthy();
    let mut last_good = LastGood::default();
    rebuild(&index, &mut last_good);
    let route = Arc::clone(index.get::<AIRoute>(&key("ns", "r")).unwrap());
    // A status write: a new copy at the same generation.
    let mut restatused = (*route).clone();
    restatused.metadata.resource_version = Some("2".into());
    let restatused = Arc::new(restatused);
    last_good.share::<AIRoute>(|_| Some(Arc::clone(&restatused)));
    assert!(Arc::ptr_eq(
        last_good.get::<AIRoute>(&key("ns", "r")).unwrap(),
        &restatused
    ));
    // Neither another generation nor another object (same name, new uid) takes its place.
    let refused = Arc::new(edited(&restatused, 2, bad_timeout));
    last_good.share::<AIRoute>(|_| Some(Arc::clone(&refused)));
    let mut recreated = (*restatused).clone();
    recreated.metadata.uid = Some("another".into());
    let recreated = Arc::new(recreated);
    last_good.share::<AIRoute>(|_| Some(Arc::clone(&recreated)));
    last_good.share::<AIRoute>(|_| None);
    assert!(Arc::ptr_eq(
        last_good.get::<AIRoute>(&key("ns", "r")).unwrap(),
        &restatused
    ));
    // The held version still serves in place of a refused edit.
    index.apply::<AIRoute>(refused);
    let outcome = rebuild(&index, &mut last_good);
    assert_eq!(
        held_ids(&outcome),
        vec![(Kind::AIRoute, "r", Some(1), Some(2))]
    );
}
