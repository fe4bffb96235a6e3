//! Cluster mode end to end: the real `switchyard` binary in `--kube` mode against a real
//! kube-apiserver + etcd (`tests/k8s/envtest.sh start`), resources changed with `kubectl`,
//! requests sent to real `switchyard-mock` upstreams. Each test has its own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_e2e::{
    kube::{
        backend_yaml, eventually, exclusive, route_yaml, secret_yaml, shared, Cluster, KubeGateway,
        GATEWAY_USER,
    },
    Mock,
};

const WAIT: Duration = Duration::from_secs(15);

/// How many requests `mock` has received.
async fn seen(mock: &Mock) -> usize {
    mock.requests().await.len()
}

#[tokio::test]
async fn applied_resources_route_and_edits_follow() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("route");
    let (a, b) = (Mock::start("", &[]), Mock::start("", &[]));
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("a", &a.endpoint(), "key"));
    ns.apply(&backend_yaml("b", &b.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["gpt-4o"], &[("a", 1), ("b", 0)]));

    let gw = KubeGateway::start(cluster, &[&ns.name], "solo");
    gw.wait_ready().await;
    let (status, body) = gw.chat("gpt-4o").await;
    assert_eq!(status, 200, "{body}");
    let got = a.requests().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"]["model"], "mock-model");
    assert_eq!(got[0]["headers"]["authorization"], "Bearer sk-test");
    ns.wait_condition("airoute", "chat", "Accepted", "True", "Accepted")
        .await;
    ns.wait_condition("modelbackend", "a", "Ready", "True", "Ready")
        .await;
    let route = ns.get("airoute", "chat").unwrap();
    assert_eq!(
        route["status"]["observedGeneration"],
        route["metadata"]["generation"]
    );

    // Weights flip: every request now goes to b.
    ns.apply(&route_yaml("chat", &["gpt-4o"], &[("a", 0), ("b", 1)]));
    eventually("traffic to follow the new weights", WAIT, || async {
        gw.chat("gpt-4o").await.0 == 200 && seen(&b).await > 0
    })
    .await;
    let before = seen(&a).await;
    for _ in 0..10 {
        assert_eq!(gw.chat("gpt-4o").await.0, 200);
    }
    assert_eq!(seen(&a).await, before, "a still got traffic at weight 0");
    let route = ns.get("airoute", "chat").unwrap();
    assert_eq!(route["metadata"]["generation"], 2);
    eventually("observedGeneration 2", WAIT, || async {
        ns.get("airoute", "chat").unwrap()["status"]["observedGeneration"] == 2
    })
    .await;

    // Deleted: the model is unknown again.
    ns.delete("airoute", "chat");
    eventually("the deleted route to 404", WAIT, || async {
        gw.chat("gpt-4o").await.0 == 404
    })
    .await;

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchyard_config_propagation_seconds_count"),
        "{metrics}"
    );
    let propagated = gw
        .metric("switchyard_config_propagation_seconds_count")
        .await
        .unwrap();
    assert!(propagated >= 2.0, "{metrics}");
    // Our own status writes did not cause rebuilds: one for the initial list, one for the
    // weight edit, one for the delete — a few more at most if events arrived apart.
    let generation = gw.metric("switchyard_config_generation").await.unwrap();
    assert!((3.0..=6.0).contains(&generation), "{metrics}");
}

#[tokio::test]
async fn a_bad_route_is_reported_while_the_rest_serves() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("refs");
    let mock = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("good", &mock.endpoint(), "key"));
    ns.apply(&route_yaml("fine", &["fine-model"], &[("good", 1)]));
    ns.apply(&route_yaml("orphan", &["orphan-model"], &[("later", 1)]));

    let gw = KubeGateway::start(cluster, &[&ns.name], "solo");
    gw.wait_ready().await;
    ns.wait_condition(
        "airoute",
        "orphan",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    )
    .await;
    ns.wait_condition("airoute", "orphan", "Accepted", "False", "BackendNotFound")
        .await;
    let (_, _, message) = ns.condition("airoute", "orphan", "ResolvedRefs").unwrap();
    assert!(
        message.contains(&format!("ModelBackend {}/later not found", ns.name)),
        "{message}"
    );
    assert_eq!(gw.chat("fine-model").await.0, 200);
    assert_eq!(gw.chat("orphan-model").await.0, 404);

    // The backend appears: the route is accepted and serves.
    ns.apply(&backend_yaml("later", &mock.endpoint(), "key"));
    ns.wait_condition("airoute", "orphan", "Accepted", "True", "Accepted")
        .await;
    ns.wait_condition("airoute", "orphan", "ResolvedRefs", "True", "ResolvedRefs")
        .await;
    eventually("the repaired route to serve", WAIT, || async {
        gw.chat("orphan-model").await.0 == 200
    })
    .await;

    // One Event per change of verdict: rejected, then accepted.
    eventually("both Events", WAIT, || async {
        let events = ns.events();
        let about: Vec<_> = events.iter().filter(|e| e.2 == "orphan").collect();
        about
            .iter()
            .any(|e| e.0 == "BackendNotFound" && e.1 == "Warning")
            && about.iter().any(|e| e.0 == "Accepted" && e.1 == "Normal")
    })
    .await;
    let events = ns.events();
    let fine: Vec<_> = events.iter().filter(|e| e.2 == "fine").collect();
    assert_eq!(fine.len(), 1, "one verdict, one Event: {events:?}");

    // A conflict: a newer route for the same model loses and says so.
    ns.apply(&route_yaml("copycat", &["fine-model"], &[("later", 1)]));
    ns.wait_condition(
        "airoute",
        "copycat",
        "Accepted",
        "False",
        "ConflictingMatch",
    )
    .await;
    let (_, _, message) = ns.condition("airoute", "copycat", "Accepted").unwrap();
    assert!(message.contains(&format!("{}/fine", ns.name)), "{message}");
}

#[tokio::test]
async fn a_rotated_key_reaches_the_upstream() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("rotate");
    let mock = Mock::start("", &[]);
    // Not labelled: invisible to the gateway, and its status says so.
    ns.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: key}\nstringData: {apiKey: sk-old}\n");
    ns.apply(&backend_yaml("up", &mock.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["m"], &[("up", 1)]));
    let gw = KubeGateway::start(cluster, &[&ns.name], "solo");
    gw.wait_ready().await;
    ns.wait_condition(
        "modelbackend",
        "up",
        "ResolvedRefs",
        "False",
        "SecretNotFound",
    )
    .await;
    let (_, _, message) = ns.condition("modelbackend", "up", "ResolvedRefs").unwrap();
    assert!(message.contains("switchyard.dev/secret=true"), "{message}");

    // Labelled: seen, used.
    ns.apply(&secret_yaml("key", "sk-old"));
    ns.wait_condition("modelbackend", "up", "Accepted", "True", "Accepted")
        .await;
    eventually("the route to serve", WAIT, || async {
        gw.chat("m").await.0 == 200
    })
    .await;
    let last_key = || async {
        mock.requests().await.last().unwrap()["headers"]["authorization"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(last_key().await, "Bearer sk-old");

    // Rotated: new requests carry the new key.
    ns.apply(&secret_yaml("key", "sk-new"));
    eventually("the new key upstream", WAIT, || async {
        gw.chat("m").await.0 == 200 && last_key().await == "Bearer sk-new"
    })
    .await;
}

#[tokio::test]
async fn one_replica_writes_status_and_both_route() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("lease");
    let mock = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("up", &mock.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["m"], &[("up", 1)]));
    let first = KubeGateway::start(cluster, &[&ns.name], "replica-one");
    let second = KubeGateway::start(cluster, &[&ns.name], "replica-two");
    first.wait_ready().await;
    second.wait_ready().await;
    assert_eq!(first.chat("m").await.0, 200);
    assert_eq!(second.chat("m").await.0, 200);
    ns.wait_condition("airoute", "chat", "Accepted", "True", "Accepted")
        .await;

    let leader_of = |lease: &serde_json::Value| {
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let holder = leader_of(&ns.get("lease", "switchyard-status").unwrap());
    let (leader, follower) = if holder == first.identity {
        (&first, &second)
    } else {
        assert_eq!(holder, second.identity);
        (&second, &first)
    };
    assert_eq!(leader.metric("switchyard_status_leader").await, Some(1.0));
    assert_eq!(follower.metric("switchyard_status_leader").await, Some(0.0));
    let writes = r#"switchyard_status_writes_total{result="success"}"#;
    assert!(leader.metric(writes).await.unwrap_or(0.0) >= 2.0);
    assert_eq!(follower.metric(writes).await.unwrap_or(0.0), 0.0);
    let events = ns.events();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e.3 == leader.identity),
        "Events from the follower: {events:?}"
    );

    // A change is routed by both; its status is still written by the leader alone.
    ns.apply(&route_yaml("chat", &["m", "m2"], &[("up", 1)]));
    eventually("both replicas to route the new model", WAIT, || async {
        first.chat("m2").await.0 == 200 && second.chat("m2").await.0 == 200
    })
    .await;
    eventually("observedGeneration 2", WAIT, || async {
        ns.get("airoute", "chat").unwrap()["status"]["observedGeneration"] == 2
    })
    .await;
    assert_eq!(follower.metric(writes).await.unwrap_or(0.0), 0.0);

    // The leader goes away (handing the Lease back): the other takes over and writes.
    let (mut leader, follower) = if holder == first.identity {
        (first, second)
    } else {
        (second, first)
    };
    leader.proc.terminate();
    leader.proc.wait_exit(Duration::from_secs(10));
    eventually("the other replica to take the Lease", WAIT, || async {
        follower.metric("switchyard_status_leader").await == Some(1.0)
    })
    .await;
    assert_eq!(
        leader_of(&ns.get("lease", "switchyard-status").unwrap()),
        follower.identity
    );
    ns.apply(&route_yaml("chat", &["m", "m2"], &[("ghost", 1)]));
    ns.wait_condition(
        "airoute",
        "chat",
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    )
    .await;
    assert!(follower.metric(writes).await.unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn keeps_serving_while_the_api_server_is_away() {
    let _api = exclusive().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("outage");
    let mock = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("up", &mock.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["m"], &[("up", 1)]));
    let gw = KubeGateway::start(cluster, &[&ns.name], "solo");
    gw.wait_ready().await;
    assert_eq!(gw.chat("m").await.0, 200);

    cluster.stop_apiserver();
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        let (status, body) = gw.chat("m").await;
        assert_eq!(status, 200, "while the API server is down: {body}");
        let ready = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.start_apiserver();
    // Changed as soon as the API server is back, before the gateway's watches (backing off)
    // have reconnected.
    ns.apply(&route_yaml("chat", &["m", "after-outage"], &[("up", 1)]));
    assert_eq!(gw.chat("m").await.0, 200);
    eventually(
        "the change made during the outage to be served",
        Duration::from_secs(45),
        || async { gw.chat("after-outage").await.0 == 200 },
    )
    .await;
    assert_eq!(gw.chat("m").await.0, 200);
    let metrics = gw.metrics().await;
    let reconnects: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_watch_reconnects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(reconnects >= 1.0, "{metrics}");
    eventually("status written again", WAIT, || async {
        ns.get("airoute", "chat").unwrap()["status"]["observedGeneration"] == 2
    })
    .await;
}

#[tokio::test]
async fn cross_namespace_refs_need_the_backends_consent() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let owner = cluster.namespace("owner");
    let user = cluster.namespace("user");
    let mock = Mock::start("", &[]);
    owner.apply(&secret_yaml("key", "sk-test"));
    owner.apply(&backend_yaml("shared", &mock.endpoint(), "key"));
    user.apply(&format!(
        "apiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: borrow}}\nspec:\n  match: {{models: [m]}}\n  backends: [{{backendRef: {{name: shared, namespace: {}}}, model: mock-model}}]\n",
        owner.name
    ));
    let gw = KubeGateway::start(cluster, &[&owner.name, &user.name], "solo");
    gw.wait_ready().await;
    user.wait_condition(
        "airoute",
        "borrow",
        "ResolvedRefs",
        "False",
        "RefNotPermitted",
    )
    .await;
    assert_eq!(gw.chat("m").await.0, 404);

    owner.apply(&format!(
        "{}  allowedRouteNamespaces: [{}]\n",
        backend_yaml("shared", &mock.endpoint(), "key"),
        user.name
    ));
    user.wait_condition("airoute", "borrow", "Accepted", "True", "Accepted")
        .await;
    eventually("the granted route to serve", WAIT, || async {
        gw.chat("m").await.0 == 200
    })
    .await;
}

/// The gateway runs as `switchyard-gateway` everywhere above with only the grants of
/// `deploy/rbac/gateway-rbac.yaml`; here, that those grants are all it has.
#[tokio::test]
async fn the_gateway_identity_has_exactly_its_grants() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("rbac");
    let can = |verb: &str, resource: &str, sub: Option<&str>, namespace: &str| {
        let mut args = vec![
            "auth",
            "can-i",
            verb,
            resource,
            "--as",
            GATEWAY_USER,
            "-n",
            namespace,
        ];
        if let Some(s) = sub {
            args.extend(["--subresource", s]);
        }
        let out = cluster.kubectl_output(&args, None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let n = ns.name.as_str();
    let kinds = [
        "modelbackends.switchyard.dev",
        "airoutes.switchyard.dev",
        "aiconsumers.switchyard.dev",
    ];
    for kind in kinds {
        for verb in ["get", "list", "watch"] {
            assert!(can(verb, kind, None, n), "{verb} {kind}");
        }
        assert!(can("patch", kind, Some("status"), n), "patch {kind}/status");
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(!can(verb, kind, None, n), "{verb} {kind} must be denied");
        }
        assert!(
            !can("update", kind, Some("status"), n),
            "update {kind}/status"
        );
        // Nothing outside the namespaces it was bound in.
        assert!(
            !can("list", kind, None, "default"),
            "list {kind} in default"
        );
    }
    for verb in ["get", "list", "watch"] {
        assert!(can(verb, "secrets", None, n), "{verb} secrets");
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can(verb, "secrets", None, n),
            "{verb} secrets must be denied"
        );
    }
    for verb in ["create", "get", "update"] {
        assert!(
            can(verb, "leases.coordination.k8s.io", None, n),
            "{verb} leases"
        );
    }
    for verb in ["list", "watch", "patch", "delete"] {
        assert!(
            !can(verb, "leases.coordination.k8s.io", None, n),
            "{verb} leases must be denied"
        );
    }
    for verb in ["create", "patch"] {
        assert!(can(verb, "events.events.k8s.io", None, n), "{verb} events");
    }
    // TokenReviews (ServiceAccount callers): create only, and nothing else of that API group.
    assert!(can("create", "tokenreviews.authentication.k8s.io", None, n));
    assert!(!can(
        "create",
        "subjectaccessreviews.authorization.k8s.io",
        None,
        n
    ));
    for verb in ["get", "list", "delete"] {
        assert!(
            !can(verb, "events.events.k8s.io", None, n),
            "{verb} events must be denied"
        );
    }
    for (verb, resource) in [
        ("get", "configmaps"),
        ("list", "pods"),
        ("list", "namespaces"),
        ("create", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ] {
        assert!(
            !can(verb, resource, None, n),
            "{verb} {resource} must be denied"
        );
    }
}

/// The only keyed AIConsumer losing its Secret must not open the gateway: once consumers are
/// configured, a broken one leaves every request without a valid key refused, even on a
/// gateway started with `--require-auth=false` (as the harness does).
#[tokio::test]
async fn a_consumer_losing_its_secret_keeps_the_gateway_closed() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("closed");
    let up = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("a", &up.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["gpt-4o"], &[("a", 1)]));
    ns.apply(&secret_yaml("team-key", "sk-team-closed"));
    ns.apply(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: team}
spec:
  keySecretRef: {name: team-key, key: apiKey}
"#,
    );
    let gw = KubeGateway::start(cluster, &[&ns.name], "closed");
    gw.wait_ready().await;
    eventually("the consumer's key to be accepted", WAIT, || async {
        gw.chat_as("gpt-4o", Some("sk-team-closed")).await.0 == 200
    })
    .await;
    let (status, body) = gw.chat("gpt-4o").await;
    assert_eq!(status, 401, "{body}");

    ns.delete("secret", "team-key");
    eventually(
        "the consumer without its Secret to be refused",
        WAIT,
        || async { gw.chat_as("gpt-4o", Some("sk-team-closed")).await.0 == 401 },
    )
    .await;
    ns.wait_condition(
        "aiconsumer",
        "team",
        "ResolvedRefs",
        "False",
        "SecretNotFound",
    )
    .await;
    for key in [None, Some("sk-team-closed"), Some("anything")] {
        let (status, body) = gw.chat_as("gpt-4o", key).await;
        assert_eq!(status, 401, "{key:?}: {body}");
    }
    let (status, body) = gw.chat("gpt-4o").await;
    assert_eq!(body["error"]["code"], "missing_api_key", "{status} {body}");
    // The consumer deleted as well: no consumers are configured any more, and the harness's
    // `--require-auth=false` applies again.
    ns.delete("aiconsumer", "team");
    eventually(
        "the gateway without consumers to serve openly",
        WAIT,
        || async { gw.chat("gpt-4o").await.0 == 200 },
    )
    .await;
}

/// A pod's projected ServiceAccount token as the caller's credential, checked through the
/// real API server's TokenReview; and the consumer's spend written to its status.
#[tokio::test]
async fn service_account_tokens_authenticate_and_spend_reaches_status() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("sa");
    let up = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("a", &up.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["gpt-4o"], &[("a", 1)]));
    ns.apply(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: batch}
spec:
  serviceAccounts: [{name: worker}]
  budget: {usd: "100", period: day}
"#,
    );
    let token = ns.service_account_token("worker", "switchyard");
    let wrong_audience = ns.service_account_token("worker", "vault");
    let stranger = ns.service_account_token("stranger", "switchyard");

    let gw = KubeGateway::start_with(
        cluster,
        &[&ns.name],
        "sa",
        &["--spend-status-interval", "1s"],
    );
    gw.wait_ready().await;
    eventually("the ServiceAccount token to be accepted", WAIT, || async {
        gw.chat_as("gpt-4o", Some(&token)).await.0 == 200
    })
    .await;
    for _ in 0..3 {
        let (status, body) = gw.chat_as("gpt-4o", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
    }
    // The upstream sees the backend's key, never the caller's token.
    let got = up.requests().await;
    assert!(got
        .iter()
        .all(|r| r["headers"]["authorization"] == "Bearer sk-test"));

    let (status, body) = gw.chat("gpt-4o").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (status, body) = gw.chat_as("gpt-4o", Some(&wrong_audience)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, body) = gw.chat_as("gpt-4o", Some(&stranger)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "service_account_not_allowed");
    let who = format!("system:serviceaccount:{}:stranger", ns.name);
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&who),
        "{body}"
    );
    // A forged signature is refused by the API server. (Not the last character: in base64url
    // it also carries padding bits a decoder may ignore.)
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, body) = gw.chat_as("gpt-4o", Some(&forged)).await;
    assert_eq!(status, 401, "{body}");

    let metrics = gw.metrics().await;
    let consumer = format!("consumer=\"{}/batch\"", ns.name);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_requests_total") && l.contains(&consumer)),
        "{metrics}"
    );

    // Spend follows usage into status, written by the Lease holder.
    eventually("status.spendUsd to show the spend", WAIT, || async {
        ns.get("aiconsumer", "batch").unwrap()["status"]["spendUsd"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|usd| usd > 0.0)
    })
    .await;
    let printed = cluster.kubectl(&["get", "aiconsumers", "-n", &ns.name], None);
    assert!(printed.contains("SPEND"), "{printed}");
}

/// Requests the gateway's ledger (`/debug/spend`) holds for `consumer`, over every day.
async fn ledger_requests(gw: &KubeGateway, consumer: &str) -> u64 {
    let view: serde_json::Value = reqwest::get(gw.admin_url("/debug/spend"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["consumer"] == consumer)
        .flat_map(|c| c["days"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d["requests"].as_u64())
        .sum()
}

/// An edit that makes a resource invalid is refused and its last accepted generation keeps
/// serving, as local mode keeps the previous table: routing, the consumer's key and its
/// counters carry on, and status and an Event say why. Fixed, the new generation takes over;
/// deleted, it is gone.
#[tokio::test]
async fn an_invalid_edit_keeps_the_last_good_generation_serving() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("hold");
    let up = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    ns.apply(&backend_yaml("a", &up.endpoint(), "key"));
    ns.apply(&route_yaml("chat", &["gpt-4o"], &[("a", 1)]));
    ns.apply(&secret_yaml("team-key", "sk-team-hold"));
    let consumer = |usd: &str| {
        format!(
            r#"apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team}}
spec:
  keySecretRef: {{name: team-key, key: apiKey}}
  budget: {{usd: "{usd}", period: day}}
"#
        )
    };
    ns.apply(&consumer("100"));
    let gw = KubeGateway::start(cluster, &[&ns.name], "hold");
    gw.wait_ready().await;
    let key = Some("sk-team-hold");
    eventually("the consumer's key to be accepted", WAIT, || async {
        gw.chat_as("gpt-4o", key).await.0 == 200
    })
    .await;
    for _ in 0..2 {
        let (status, body) = gw.chat_as("gpt-4o", key).await;
        assert_eq!(status, 200, "{body}");
    }
    let team = format!("{}/team", ns.name);
    eventually("the ledger to count 3 requests", WAIT, || async {
        ledger_requests(&gw, &team).await == 3
    })
    .await;
    ns.wait_condition("airoute", "chat", "Accepted", "True", "Accepted")
        .await;
    ns.wait_condition("aiconsumer", "team", "Accepted", "True", "Accepted")
        .await;
    ns.wait_condition("modelbackend", "a", "Accepted", "True", "Accepted")
        .await;

    // Edits the CRD schema lets through but the compiler refuses: a timeout that is no
    // duration (in a route that also adds a model), a budget and a price that are no amounts.
    let fixed_route = route_yaml("chat", &["gpt-4o", "gpt-5"], &[("a", 1)]);
    ns.apply(&format!("{fixed_route}  timeout: soon\n"));
    ns.apply(&consumer("plenty"));
    ns.apply(&backend_yaml("a", &up.endpoint(), "key").replace("\"1.00\"", "\"cheap\""));
    let refused = [
        ("airoute", "chat", "InvalidDuration"),
        ("aiconsumer", "team", "InvalidLimit"),
        ("modelbackend", "a", "InvalidPricing"),
    ];
    for (kind, name, reason) in refused {
        ns.wait_condition(kind, name, "Accepted", "False", reason)
            .await;
        let (_, _, message) = ns.condition(kind, name, "Accepted").unwrap();
        assert!(
            message.starts_with("generation 1 keeps serving; generation 2 was refused: "),
            "{kind} {name}: {message}"
        );
        let obj = ns.get(kind, name).unwrap();
        assert_eq!(obj["metadata"]["generation"], 2, "{obj}");
        assert_eq!(
            obj["status"]["observedGeneration"], 2,
            "the refused generation was observed: {obj}"
        );
    }
    // The backend's generation 1 serves.
    ns.wait_condition("modelbackend", "a", "Ready", "True", "Ready")
        .await;

    // Generation 1 of each still serves: the route without gpt-5, the backend, the
    // consumer's key, and its counters were not reset.
    let (status, body) = gw.chat_as("gpt-4o", key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.requests().await.len(), 4);
    let (status, body) = gw.chat_as("gpt-5", key).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gw.chat("gpt-4o").await;
    assert_eq!(status, 401, "{body}");
    eventually("the ledger to count on from 3 to 4", WAIT, || async {
        ledger_requests(&gw, &team).await == 4
    })
    .await;
    for kind in ["ModelBackend", "AIRoute", "AIConsumer"] {
        let series = format!("switchyard_config_held_resources{{kind=\"{kind}\"}}");
        assert_eq!(gw.metric(&series).await, Some(1.0), "{series}");
        let series = format!("switchyard_config_rejected_resources{{kind=\"{kind}\"}}");
        assert_eq!(gw.metric(&series).await, Some(0.0), "{series}");
    }
    eventually(
        "a Warning Event saying which generation serves",
        WAIT,
        || async {
            ns.event_notes("chat").iter().any(|(reason, type_, note)| {
                reason == "InvalidDuration"
                    && type_ == "Warning"
                    && note.starts_with("generation 1 keeps serving; generation 2 was refused: ")
                    && note.contains("spec.timeout")
            })
        },
    )
    .await;

    // Fixed: the new generations take over.
    ns.apply(&fixed_route);
    ns.apply(&consumer("50"));
    ns.apply(&backend_yaml("a", &up.endpoint(), "key"));
    for (kind, name, _) in refused {
        ns.wait_condition(kind, name, "Accepted", "True", "Accepted")
            .await;
        eventually("observedGeneration 3", WAIT, || async {
            ns.get(kind, name).unwrap()["status"]["observedGeneration"] == 3
        })
        .await;
    }
    eventually("the fixed route to serve gpt-5", WAIT, || async {
        gw.chat_as("gpt-5", key).await.0 == 200
    })
    .await;
    eventually("the ledger to count on past 4", WAIT, || async {
        ledger_requests(&gw, &team).await >= 5
    })
    .await;
    assert_eq!(
        gw.metric(r#"switchyard_config_held_resources{kind="AIRoute"}"#)
            .await,
        Some(0.0)
    );

    // Refused again, then deleted: deleting still removes it.
    ns.apply(&format!("{fixed_route}  timeout: soon\n"));
    ns.wait_condition("airoute", "chat", "Accepted", "False", "InvalidDuration")
        .await;
    assert_eq!(gw.chat_as("gpt-5", key).await.0, 200);
    ns.delete("airoute", "chat");
    eventually("the deleted route to 404", WAIT, || async {
        gw.chat_as("gpt-4o", key).await.0 == 404
    })
    .await;
}

/// A shared AIBudget against the real API server: two AIConsumers draw on it, the gateway
/// refuses once a request's reservation no longer fits, and the Lease holder writes spend and
/// remaining to both levels' status, with an Event as spend crosses a threshold.
#[tokio::test]
async fn shared_budget_status_and_threshold_events() {
    let _api = shared().await;
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.namespace("budget");
    let up = Mock::start("", &[]);
    ns.apply(&secret_yaml("key", "sk-test"));
    // Input free, output $1 per million tokens; a request without max_tokens reserves the
    // route's 10-token default: 10 micro-USD, a quarter of the team's 40.
    ns.apply(&format!(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: a}}
spec:
  provider: openai-compatible
  endpoint: {}
  auth: {{secretRef: {{name: key, key: apiKey}}}}
  models: [{{name: mock-model, pricing: {{inputPerMillion: "0", outputPerMillion: "1.00"}}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  match: {{models: [gpt-4o]}}
  backends: [{{backendRef: {{name: a}}, model: mock-model}}]
  defaultMaxOutputTokens: 10
---
apiVersion: switchyard.dev/v1alpha1
kind: AIBudget
metadata: {{name: team}}
spec: {{usd: "0.000040", period: month}}
---
apiVersion: v1
kind: Secret
metadata:
  name: callers
  labels: {{switchyard.dev/secret: "true"}}
stringData: {{kx: vk-team-x, ky: vk-team-y}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-x}}
spec:
  keySecretRef: {{name: callers, key: kx}}
  budgetRef: {{name: team}}
  budget: {{usd: "1", period: day}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-y}}
spec:
  keySecretRef: {{name: callers, key: ky}}
  budgetRef: {{name: team}}
"#,
        up.endpoint()
    ));
    let gw = KubeGateway::start_with(
        cluster,
        &[&ns.name],
        "budget",
        &[
            "--spend-status-interval",
            "500ms",
            "--budget-metrics-interval",
            "200ms",
        ],
    );
    gw.wait_ready().await;
    ns.wait_condition("aiconsumer", "team-y", "Accepted", "True", "Accepted")
        .await;
    // Both callers spend from the team's budget until a reservation no longer fits.
    let mut refused = None;
    for i in 0..40 {
        let key = if i % 2 == 0 { "vk-team-x" } else { "vk-team-y" };
        let (status, body) = gw.chat_as("gpt-4o", Some(key)).await;
        if status == 429 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let body = refused.expect("the shared budget never refused");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    let team = format!("{}/team", ns.name);
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&team),
        "{body}"
    );
    // At the refusal, spend + 10 > 40: past 50 %, so status and an Event say so.
    eventually(
        "AIBudget status to show spend and remaining",
        WAIT,
        || async {
            let st = &ns.get("aibudget", "team").unwrap()["status"];
            let spend = st["spendUsd"].as_str().and_then(|s| s.parse::<f64>().ok());
            let left = st["remainingUsd"]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok());
            matches!((spend, left), (Some(s), Some(l)) if s > 0.00002 && l < 0.00002)
                && st["thresholdPercent"].as_u64().is_some_and(|t| t >= 50)
                && st["consumers"].as_array().is_some_and(|c| c.len() == 2)
        },
    )
    .await;
    eventually("a budget Event on the AIBudget", WAIT, || async {
        ns.events()
            .iter()
            .any(|e| e.2 == "team" && (e.0 == "BudgetThreshold" || e.0 == "BudgetExhausted"))
    })
    .await;
    // The consumer with its own budget shows both figures too.
    eventually(
        "AIConsumer team-x status to show remaining",
        WAIT,
        || async {
            let st = &ns.get("aiconsumer", "team-x").unwrap()["status"];
            st["spendUsd"].as_str().is_some() && st["remainingUsd"].as_str().is_some()
        },
    )
    .await;
    let printed = cluster.kubectl(&["get", "aibudgets", "-n", &ns.name], None);
    assert!(printed.contains("REMAINING"), "{printed}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "switchyard_budget_remaining_usd{{budget=\"{team}\",kind=\"shared\"}}"
        )),
        "{metrics}"
    );
}
