//! Weighted rendezvous hashing for prompt-cache affinity: weights hold in aggregate, one
//! conversation stays put, and only the conversations of a removed target or key move.

use std::collections::HashMap;

use http::HeaderMap;
use switchyard_api::Resources;
use switchyard_router::KeyChoice;

use crate::compile;

const POOL: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: k}
stringData: {a: sk-aaaa, b: sk-bbbb, c: sk-cccc, d: sk-dddd}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: big}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:9/v1/
  auth:
    keys:
    - {secretRef: {name: k, key: a}}
    - {secretRef: {name: k, key: b}}
    - {secretRef: {name: k, key: c}}
    - {secretRef: {name: k, key: d}}
  models: [{name: m, pricing: {inputPerMillion: "1"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: small}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:8/v1/
  models: [{name: m, pricing: {inputPerMillion: "1"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: split}
spec:
  match: {models: [m]}
  backends:
  - {backendRef: {name: big}, weight: 3}
  - {backendRef: {name: small}, weight: 1}
"#;

fn table(extra: &str) -> switchyard_router::RoutingTable {
    let mut r = Resources::default();
    let errs = r.parse_yaml(
        "t.yaml",
        &format!("{POOL}{extra}"),
        &HashMap::<String, String>::new(),
    );
    assert!(errs.is_empty(), "{errs:?}");
    let c = compile(&r, 1);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    c.table
}

fn key(i: u64) -> u64 {
    switchyard_providers::affinity::mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[test]
fn weights_hold_over_many_conversations() {
    // The 3:1 split and the four-key pool (the scores alone: the router's own tests).
    let t = table("");
    let route = t.route("m", &HeaderMap::new(), None).unwrap().route;
    let mut by_backend: HashMap<&str, u32> = HashMap::new();
    let mut by_key = [0u32; 4];
    let n = 40_000;
    for i in 0..n {
        let plan = route.plan_for(Some(key(i)));
        *by_backend.entry(&plan[0].backend.name).or_default() += 1;
        if &*plan[0].backend.name == "default/big" {
            match plan[0].backend.pick_key_for(Some(key(i))) {
                KeyChoice::Key(k) => by_key[k.index] += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    let big = f64::from(by_backend["default/big"]) / n as f64;
    assert!((big - 0.75).abs() < 0.015, "{big}");
    let total: u32 = by_key.iter().sum();
    for (i, k) in by_key.iter().enumerate() {
        let share = f64::from(*k) / f64::from(total);
        assert!((share - 0.25).abs() < 0.015, "key {i}: {share}");
    }
}

#[test]
fn a_conversation_stays_and_only_the_removed_ones_move() {
    let t = table("");
    let route = t.route("m", &HeaderMap::new(), None).unwrap().route;
    let big = &route.targets[0].backend;
    let pick = |k: u64| match big.pick_key_for(Some(k)) {
        KeyChoice::Key(k) => k.index,
        other => panic!("{other:?}"),
    };
    // Sticky: the same conversation, the same target and key, every time.
    for i in 0..200 {
        let first = &*route.plan_for(Some(key(i)))[0].backend.name;
        let k = pick(key(i));
        for _ in 0..5 {
            assert_eq!(&*route.plan_for(Some(key(i)))[0].backend.name, first);
            assert_eq!(pick(key(i)), k);
        }
    }
    // A key resting moves only its own conversations, each to another key, and they come
    // back when it is usable again.
    let before: Vec<usize> = (0..2000).map(|i| pick(key(i))).collect();
    big.keys()[2]
        .state()
        .rest(std::time::Duration::from_secs(60));
    for (i, was) in before.iter().enumerate() {
        let now = pick(key(i as u64));
        if *was == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(now, *was, "conversation {i} moved though its key is fine");
        }
    }
    big.keys()[2].state().rest(std::time::Duration::ZERO);
    // A saturated or unhealthy first target is passed over for the next in the same
    // rendezvous order: the plan keeps both.
    let plan = route.plan_for(Some(key(7)));
    assert_eq!(plan.len(), 2);
    // No key: the plain weighted plan.
    assert_eq!(route.plan_for(None).len(), 2);
}

#[test]
fn affinity_none_is_random_by_weight() {
    let t = table("");
    let _ = t;
    let none = r#"
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: random}
spec:
  match: {models: [r]}
  affinity: none
  backends:
  - {backendRef: {name: big}, model: m}
  - {backendRef: {name: small}, model: m}
"#;
    let t = table(none);
    let route = t.route("r", &HeaderMap::new(), None).unwrap().route;
    assert_eq!(route.affinity, switchyard_router::Affinity::None);
    let firsts: std::collections::HashSet<String> = (0..200)
        .map(|_| route.plan_for(Some(key(1)))[0].backend.name.to_string())
        .collect();
    assert_eq!(
        firsts.len(),
        2,
        "the same key went to one backend every time"
    );
}
