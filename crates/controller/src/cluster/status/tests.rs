use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_compile::compile;

use super::*;
use crate::cluster::{index::Namespaces, test_util::*};

fn run(index: &Index) -> Vec<Verdict> {
    let compiled = compile(&index.resources(), 1);
    verdicts(
        index,
        &compiled.diagnostics,
        &Hints {
            secret_selector: Some("switchyard.dev/secret=true".into()),
        },
    )
}

fn find<'v>(vs: &'v [Verdict], kind: Kind, ns: &str, name: &str) -> &'v Verdict {
    vs.iter()
        .find(|v| v.kind == kind && v.key == key(ns, name))
        .unwrap_or_else(|| panic!("no verdict for {kind} {ns}/{name}: {vs:#?}"))
}

/// `(type, status, reason)` of each condition.
fn summary(v: &Verdict) -> Vec<(&str, &str, &str)> {
    v.conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

fn healthy() -> Index {
    let mut index = Index::new(Namespaces::All);
    index.apply(mk_backend("ns", "b", Some("b-key")));
    index.apply(mk_secret("ns", "b-key", "apiKey", "sk-1"));
    index.apply(mk_route("ns", "r", &["m"], "b"));
    index.apply(mk_consumer("ns", "c", "c-key"));
    index.apply(mk_secret("ns", "c-key", "key", "vk-1"));
    index
}

#[test]
fn everything_fine_is_accepted_with_observed_generation() {
    let mut index = healthy();
    let mut r = mk_route("ns", "r", &["m"], "b");
    r.metadata.generation = Some(7);
    index.apply(r);
    let vs = run(&index);
    assert_eq!(vs.len(), 3);
    assert_eq!(
        summary(find(&vs, Kind::ModelBackend, "ns", "b")),
        vec![
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
            ("Ready", "True", "Ready"),
        ]
    );
    let route = find(&vs, Kind::AIRoute, "ns", "r");
    assert_eq!(
        summary(route),
        vec![
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ]
    );
    assert_eq!(route.generation, Some(7));
    assert!(route
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(7) && c.last_transition_time.is_none()));
    assert_eq!(route.uid.as_deref(), Some("uid-ns-r"));
    assert_eq!(
        summary(find(&vs, Kind::AIConsumer, "ns", "c"))[0],
        ("Accepted", "True", "Accepted")
    );
}

#[test]
fn missing_backend_rejects_only_that_route() {
    let mut index = healthy();
    index.apply(mk_route("ns", "ghostly", &["g"], "ghost"));
    let vs = run(&index);
    let bad = find(&vs, Kind::AIRoute, "ns", "ghostly");
    assert_eq!(
        summary(bad),
        vec![
            ("Accepted", "False", "BackendNotFound"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ]
    );
    assert!(
        bad.conditions[1]
            .message
            .contains("spec.backends[0].backendRef.name: ModelBackend ns/ghost not found"),
        "{}",
        bad.conditions[1].message
    );
    assert_eq!(
        summary(find(&vs, Kind::AIRoute, "ns", "r"))[0],
        ("Accepted", "True", "Accepted")
    );
}

#[test]
fn missing_secret_says_which_label_is_watched() {
    let mut index = Index::new(Namespaces::All);
    index.apply(mk_backend("ns", "b", Some("unlabelled")));
    let vs = run(&index);
    let b = find(&vs, Kind::ModelBackend, "ns", "b");
    assert_eq!(
        summary(b),
        vec![
            ("Accepted", "False", "SecretNotFound"),
            ("ResolvedRefs", "False", "SecretNotFound"),
            ("Ready", "False", "SecretNotFound"),
        ]
    );
    assert!(
        b.conditions[1].message.contains(
            "Secret ns/unlabelled not found (only Secrets labelled switchyard.dev/secret=true"
        ),
        "{}",
        b.conditions[1].message
    );
}

#[test]
fn invalid_backend_still_reports_its_refs() {
    let mut index = Index::new(Namespaces::All);
    let mut b = mk_backend("ns", "b", Some("absent"));
    b.spec.models[0].pricing = Some(switchyard_api::backend::Pricing {
        input_per_million: Some("cheap".into()),
        ..Default::default()
    });
    index.apply(b.clone());
    let vs = run(&index);
    assert_eq!(
        summary(find(&vs, Kind::ModelBackend, "ns", "b")),
        vec![
            ("Accepted", "False", "InvalidPricing"),
            ("ResolvedRefs", "False", "SecretNotFound"),
            ("Ready", "False", "InvalidPricing"),
        ]
    );
    index.apply(mk_secret("ns", "absent", "apiKey", "sk"));
    let vs = run(&index);
    assert_eq!(
        summary(find(&vs, Kind::ModelBackend, "ns", "b"))[1],
        ("ResolvedRefs", "True", "ResolvedRefs")
    );
}

#[test]
fn conflicts_name_the_loser() {
    let mut index = healthy();
    let mut older = mk_route("ns", "zz-older", &["m", "x"], "b");
    older.metadata.creation_timestamp = Some(Time("2020-01-01T00:00:00Z".parse().unwrap()));
    index.apply(older);
    // `r` (newer) matches only `m`, which the older route takes: it serves nothing.
    index.apply(mk_route("ns", "partly", &["x", "y"], "b"));
    let vs = run(&index);
    assert_eq!(
        summary(find(&vs, Kind::AIRoute, "ns", "zz-older"))[0],
        ("Accepted", "True", "Accepted")
    );
    let r = find(&vs, Kind::AIRoute, "ns", "r");
    assert_eq!(summary(r)[0], ("Accepted", "False", "ConflictingMatch"));
    assert!(r.conditions[0].message.contains("ns/zz-older"));
    assert_eq!(summary(r)[1], ("ResolvedRefs", "True", "ResolvedRefs"));
    assert_eq!(
        summary(find(&vs, Kind::AIRoute, "ns", "partly"))[0],
        ("Accepted", "True", "ConflictingMatch")
    );
}

#[test]
fn cross_namespace_refs_are_refused_unless_allowed() {
    let mut index = healthy();
    index.apply(mk_route("other", "borrow", &["o"], "b"));
    let mut r = mk_route("other", "borrow", &["o"], "b");
    r.spec.backends[0].backend_ref.namespace = Some("ns".into());
    index.apply(r);
    let vs = run(&index);
    assert_eq!(
        summary(find(&vs, Kind::AIRoute, "other", "borrow")),
        vec![
            ("Accepted", "False", "RefNotPermitted"),
            ("ResolvedRefs", "False", "RefNotPermitted"),
        ]
    );
    let mut b = mk_backend("ns", "b", Some("b-key"));
    b.spec.allowed_route_namespaces = vec!["other".into()];
    index.apply(b);
    let vs = run(&index);
    assert_eq!(
        summary(find(&vs, Kind::AIRoute, "other", "borrow"))[0],
        ("Accepted", "True", "Accepted")
    );
}

fn c(type_: &str, status: &str, reason: &str, message: &str, at: Option<&str>) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: at.map(Into::into),
        observed_generation: Some(1),
    }
}

#[test]
fn transition_time_moves_only_when_status_flips() {
    let current = vec![
        c("Accepted", "False", "BackendNotFound", "old", Some("t0")),
        c(
            "ResolvedRefs",
            "False",
            "BackendNotFound",
            "old",
            Some("t0"),
        ),
    ];
    // Same status, new reason and message: time kept, but it is a new verdict.
    let desired = vec![
        c("Accepted", "False", "ModelNotServed", "new", None),
        c("ResolvedRefs", "True", "ResolvedRefs", "ok", None),
    ];
    let merged = merge_conditions(&current, &desired, "t1");
    assert_eq!(merged[0].last_transition_time.as_deref(), Some("t0"));
    assert_eq!(merged[0].message, "new");
    assert_eq!(merged[1].last_transition_time.as_deref(), Some("t1"));
    assert!(verdict_changed(&current, &merged));

    // Only the message changed: no Event.
    let reworded = vec![
        c(
            "Accepted",
            "False",
            "BackendNotFound",
            "reworded",
            Some("t0"),
        ),
        c(
            "ResolvedRefs",
            "False",
            "BackendNotFound",
            "old",
            Some("t0"),
        ),
    ];
    assert!(!verdict_changed(&current, &reworded));
    // A first status is a change.
    assert!(verdict_changed(&[], &current));
    // Nothing there yet: every condition starts now.
    let fresh = merge_conditions(&[], &desired, "t2");
    assert!(fresh
        .iter()
        .all(|c| c.last_transition_time.as_deref() == Some("t2")));
}

#[test]
fn conditions_current_is_merge_giving_current_back() {
    let ok = |at: Option<&str>| {
        vec![
            c("Accepted", "True", "Accepted", "fine", at),
            c("ResolvedRefs", "True", "ResolvedRefs", "ok", at),
        ]
    };
    let desired = ok(None);
    let mut reworded = ok(Some("t0"));
    reworded[0].message = "other".into();
    let mut regenerated = ok(Some("t0"));
    regenerated[1].observed_generation = Some(2);
    let mut flipped = ok(Some("t0"));
    flipped[0].status = "False".into();
    let mut untimed = ok(Some("t0"));
    untimed[1].last_transition_time = None;
    let mut now_timed = ok(Some("t0"));
    now_timed[0].last_transition_time = Some("t1".into());
    let currents = [
        vec![],
        ok(Some("t0")),
        ok(Some("t1")),
        ok(None),
        ok(Some("t0"))[..1].to_vec(),
        [ok(Some("t0")), ok(Some("t0"))].concat(),
        reworded,
        regenerated,
        flipped,
        untimed,
        now_timed,
    ];
    let mut desireds = vec![desired.clone(), desired[..1].to_vec()];
    let mut failing = desired.clone();
    failing[0].status = "False".into();
    desireds.push(failing);
    for current in &currents {
        for desired in &desireds {
            assert_eq!(
                conditions_current(current, desired, "t1"),
                merge_conditions(current, desired, "t1") == *current,
                "{current:?} / {desired:?}"
            );
        }
    }
    assert!(conditions_current(&ok(Some("t0")), &desired, "t1"));
}

#[test]
fn verdicts_share_equal_conditions() {
    let mut index = Index::new(Namespaces::All);
    index.apply(mk_backend("ns", "b", Some("key")));
    index.apply(mk_secret("ns", "key", "apiKey", "sk"));
    index.apply(mk_route("ns", "r1", &["m1"], "b"));
    index.apply(mk_route("ns", "r2", &["m2"], "b"));
    index.apply(mk_route("ns", "bad", &["m3"], "missing"));
    let vs = run(&index);
    let (r1, r2, bad) = (
        find(&vs, Kind::AIRoute, "ns", "r1"),
        find(&vs, Kind::AIRoute, "ns", "r2"),
        find(&vs, Kind::AIRoute, "ns", "bad"),
    );
    assert!(Arc::ptr_eq(&r1.conditions, &r2.conditions));
    assert!(!Arc::ptr_eq(&r1.conditions, &bad.conditions));
    assert_eq!(bad.conditions[0].reason, "BackendNotFound");
}

#[test]
fn events_follow_the_verdict() {
    let ok = vec![
        c("Accepted", "True", "Accepted", "fine", None),
        c("ResolvedRefs", "True", "ResolvedRefs", "ok", None),
    ];
    assert_eq!(
        event_for(&ok),
        EventSpec {
            warning: false,
            reason: "Accepted".into(),
            note: "fine".into()
        }
    );
    let bad = vec![
        c("Accepted", "False", "BackendNotFound", "no backend", None),
        c(
            "ResolvedRefs",
            "False",
            "BackendNotFound",
            "no backend",
            None,
        ),
    ];
    let e = event_for(&bad);
    assert!(e.warning);
    assert_eq!(e.reason, "BackendNotFound");
    let shadowed = vec![c("Accepted", "True", "ConflictingMatch", "shadowed", None)];
    assert!(event_for(&shadowed).warning);
    let long = vec![c("Accepted", "False", "X", &"é".repeat(800), None)];
    assert!(event_for(&long).note.len() <= 1004);
}
