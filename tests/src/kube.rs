//! Cluster-mode harness: the real API server that `tests/k8s/envtest.sh start` runs, `kubectl`
//! as the cluster admin, one fresh namespace per test, and `switchyard serve --kube` running
//! as the unprivileged `switchyard-gateway` user with exactly the grants of
//! `deploy/rbac/gateway-rbac.yaml`.
//!
//! Without the envtest cluster the tests fail and say how to start it, unless
//! `SWITCHYARD_SKIP_KUBE=1` is set, in which case they pass with a note.

use std::{
    collections::HashMap,
    future::Future,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{bin, Proc};

/// The envtest cluster, set up once per test binary (CRDs installed).
pub struct Cluster {
    env: HashMap<String, String>,
    root: PathBuf,
}

/// A namespace created for one test, deleted (without waiting) on drop.
pub struct Namespace {
    /// Its name.
    pub name: String,
    cluster: &'static Cluster,
}

/// A running `switchyard serve --kube`.
pub struct KubeGateway {
    /// The process.
    pub proc: Proc,
    /// API address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// The identity it campaigns for the status Lease with.
    pub identity: String,
}

/// The test that stops the API server takes this exclusively; every other test shares it.
static API_SERVER: RwLock<()> = RwLock::const_new(());
static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// The CRDs the tests install (the generated ones, as `kubectl apply` would).
const CRDS: &[&str] = &[
    "crds/aibudgets.switchyard.dev.yaml",
    "crds/aiconsumers.switchyard.dev.yaml",
    "crds/airoutes.switchyard.dev.yaml",
    "crds/modelbackends.switchyard.dev.yaml",
];
/// The gateway's grants.
pub const RBAC: &str = "deploy/rbac/gateway-rbac.yaml";
/// The unprivileged user the gateway runs as (a static token of the envtest API server).
pub const GATEWAY_USER: &str = "switchyard-gateway";

/// Polls `check` every 50 ms until it holds, failing with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === impl Cluster ===

impl Cluster {
    /// The running envtest cluster, with the CRDs installed. `None` when
    /// `SWITCHYARD_SKIP_KUBE=1` and there is no cluster; panics with instructions otherwise.
    /// Call it holding [`shared`] or [`exclusive`], so the API server is up.
    pub fn get() -> Option<&'static Cluster> {
        if let Some(c) = CLUSTER.get() {
            return Some(c);
        }
        let dir = std::env::var("ENVTEST_DIR").unwrap_or_else(|_| "/tmp/switchyard-envtest".into());
        let file = Path::new(&dir).join("env");
        let skip = std::env::var("SWITCHYARD_SKIP_KUBE").is_ok_and(|v| v == "1");
        let Ok(text) = std::fs::read_to_string(&file) else {
            if skip {
                eprintln!(
                    "note: SWITCHYARD_SKIP_KUBE=1 and no envtest cluster ({} missing): cluster-mode test skipped",
                    file.display()
                );
                return None;
            }
            panic!(
                "the cluster-mode tests need the envtest API server, and {} does not exist: \
                 run `tests/k8s/envtest.sh start` first (or set SWITCHYARD_SKIP_KUBE=1 to skip them)",
                file.display()
            );
        };
        let env = parse_env(&text);
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        // Installed once, inside the init: two concurrent `kubectl apply` of a new CRD both
        // try to create it and one fails with AlreadyExists (seen in `make test`).
        Some(CLUSTER.get_or_init(|| {
            let cluster = Cluster { env, root };
            cluster.install();
            cluster
        }))
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the envtest env file"))
    }

    /// Path of the kubeconfig of the unprivileged gateway user.
    pub fn gateway_kubeconfig(&self) -> &str {
        self.var("KUBECONFIG_GATEWAY")
    }

    /// A file of the repository.
    pub fn repo_file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn install(&self) {
        let ready = self.kubectl_output(&["get", "--raw", "/readyz"], None);
        assert!(
            ready.status.success(),
            "the envtest API server at {} does not answer (is it running? `tests/k8s/envtest.sh status`): {}",
            self.var("KUBE_APISERVER_URL"),
            String::from_utf8_lossy(&ready.stderr)
        );
        for crd in CRDS {
            let path = self.repo_file(crd);
            // kubectl 1.20's client-side schema check does not know `x-kubernetes-validations`
            // (CEL rules, Kubernetes ≥ 1.25); the API server itself accepts the CRDs and
            // drops the rules, which the Rust-side validation enforces anyway.
            self.kubectl(
                &["apply", "--validate=false", "-f", path.to_str().unwrap()],
                None,
            );
        }
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/airoutes.switchyard.dev",
                "crd/modelbackends.switchyard.dev",
                "crd/aiconsumers.switchyard.dev",
            ],
            None,
        );
    }

    /// Runs kubectl as the admin; returns whatever happened.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(self.var("KUBECTL"));
        cmd.arg("--kubeconfig")
            .arg(self.var("KUBECONFIG_ADMIN"))
            .arg("--request-timeout=10s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().expect("kubectl")
    }

    /// Runs kubectl as the admin and returns its stdout; panics on failure.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh namespace in which the gateway user has the grants of the RBAC file: the
    /// ClusterRole bound in this namespace only, and the Lease Role.
    pub fn namespace(&'static self, prefix: &str) -> Namespace {
        let name = format!(
            "sy-{prefix}-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &name], None);
        // The RBAC file and the TokenReview binding hold cluster-scoped objects: applied by
        // two tests at once on a fresh cluster, both try to create them and one fails with
        // AlreadyExists (seen in CI). One test at a time applies them.
        static CLUSTER_SCOPED: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = CLUSTER_SCOPED.lock().unwrap_or_else(|p| p.into_inner());
        let rbac = self.repo_file(RBAC);
        self.kubectl(&["apply", "-n", &name, "-f", rbac.to_str().unwrap()], None);
        let bindings = format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: switchyard-gateway}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: switchyard-gateway}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {GATEWAY_USER}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: switchyard-gateway-lease}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: switchyard-gateway-lease}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {GATEWAY_USER}}}]
"#
        );
        self.kubectl(&["apply", "-n", &name, "-f", "-"], Some(&bindings));
        // TokenReviews are cluster-scoped: that grant needs a ClusterRoleBinding.
        let review = format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: switchyard-gateway-tokenreview-test}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: switchyard-gateway-tokenreview}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {GATEWAY_USER}}}]
"#
        );
        self.kubectl(&["apply", "-f", "-"], Some(&review));
        drop(serial);
        Namespace {
            name,
            cluster: self,
        }
    }

    /// Stops the API server (etcd keeps running).
    pub fn stop_apiserver(&self) {
        self.envtest("stop-apiserver");
    }

    /// Starts the API server again on the same port.
    pub fn start_apiserver(&self) {
        self.envtest("start-apiserver");
    }

    fn envtest(&self, what: &str) {
        let out = Command::new(self.repo_file("tests/k8s/envtest.sh"))
            .arg(what)
            .output()
            .expect("envtest.sh");
        assert!(
            out.status.success(),
            "envtest.sh {what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.replace("\\ ", " "))
        })
        .collect()
}

/// Shares the API server with other tests (it stays up for the test's duration). Hold the
/// guard for the whole test.
#[must_use = "the API server is only held while the guard lives"]
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    API_SERVER.read().await
}

/// Takes the API server for this test alone (to stop and start it).
#[must_use = "the API server is only held while the guard lives"]
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    API_SERVER.write().await
}

// === impl Namespace ===

impl Namespace {
    /// `kubectl apply -n NS -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.cluster
            .kubectl(&["apply", "-n", &self.name, "-f", "-"], Some(yaml));
    }

    /// Deletes one object.
    pub fn delete(&self, kind: &str, name: &str) {
        self.cluster.kubectl(
            &["delete", "-n", &self.name, kind, name, "--wait=false"],
            None,
        );
    }

    /// The object as JSON, or `None` if it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self
            .cluster
            .kubectl_output(&["get", "-n", &self.name, kind, name, "-o", "json"], None);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Creates ServiceAccount `name` here (if missing) and returns a token for it minted by
    /// the API server (TokenRequest) for `audience`.
    pub fn service_account_token(&self, name: &str, audience: &str) -> String {
        let _ = self
            .cluster
            .kubectl_output(&["create", "serviceaccount", name, "-n", &self.name], None);
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": 3600},
        });
        let path = std::env::temp_dir().join(format!(
            "sy-tokenrequest-{}-{name}-{audience}.json",
            self.name
        ));
        std::fs::write(&path, request.to_string()).unwrap();
        let url = format!(
            "/api/v1/namespaces/{}/serviceaccounts/{name}/token",
            self.name
        );
        let out = self.cluster.kubectl(
            &["create", "--raw", &url, "-f", path.to_str().unwrap()],
            None,
        );
        let _ = std::fs::remove_file(&path);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["status"]["token"].as_str().unwrap().to_string()
    }

    /// A condition of an object's status: `(status, reason, message)`.
    pub fn condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
    ) -> Option<(String, String, String)> {
        let obj = self.get(kind, name)?;
        obj["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("status"), s("reason"), s("message"))
            })
    }

    /// Waits until condition `type_` of the object has `status` and `reason`.
    pub async fn wait_condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) {
        let what = format!("{kind} {}/{name} {type_}={status} ({reason})", self.name);
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.condition(kind, name, type_);
            if let Some((s, r, _)) = &got {
                if s == status && r == reason {
                    return;
                }
            }
            last = got.or(last);
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Events about objects in this namespace: `(reason, type, regarding name, reporting instance)`.
    pub fn events(&self) -> Vec<(String, String, String, String)> {
        let out = self.cluster.kubectl(
            &[
                "get",
                "events.v1.events.k8s.io",
                "-n",
                &self.name,
                "-o",
                "json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    s(&e["reason"]),
                    s(&e["type"]),
                    s(&e["regarding"]["name"]),
                    s(&e["reportingInstance"]),
                )
            })
            .collect()
    }

    /// Events about object `name` in this namespace: `(reason, type, note)`.
    pub fn event_notes(&self, name: &str) -> Vec<(String, String, String)> {
        let out = self.cluster.kubectl(
            &[
                "get",
                "events.v1.events.k8s.io",
                "-n",
                &self.name,
                "-o",
                "json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| (s(&e["reason"]), s(&e["type"]), s(&e["note"])))
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl_output(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

// === impl KubeGateway ===

impl KubeGateway {
    /// Starts `switchyard serve --kube` on `namespaces` (the Lease in the first) as the
    /// unprivileged user, and waits until it listens (not until it is ready).
    pub fn start(cluster: &Cluster, namespaces: &[&str], identity: &str) -> Self {
        Self::start_with(cluster, namespaces, identity, &[])
    }

    /// [`KubeGateway::start`] with more `switchyard serve` flags.
    pub fn start_with(
        cluster: &Cluster,
        namespaces: &[&str],
        identity: &str,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(bin("switchyard"));
        cmd.args([
            "serve",
            "--kube",
            "--kubeconfig",
            cluster.gateway_kubeconfig(),
        ]);
        for ns in namespaces {
            cmd.args(["--namespace", ns]);
        }
        cmd.args([
            "--lease-namespace",
            namespaces[0],
            "--identity",
            identity,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            // Open unless a case adds consumers (or `--require-auth` in `extra`: last wins).
            "--require-auth=false",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE");
        let proc = Proc::spawn(cmd);
        let (addr, admin) = proc.wait_line(Duration::from_secs(20), |l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let f = &v["fields"];
            (f["message"] == "switchyard serving").then(|| {
                (
                    f["listen"].as_str().unwrap().parse().unwrap(),
                    f["admin"].as_str().unwrap().parse().unwrap(),
                )
            })
        });
        KubeGateway {
            proc,
            addr,
            admin,
            identity: identity.to_string(),
        }
    }

    /// `http://ADDR` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN` + path.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Waits (bounded) for `/readyz` to answer 200: every watch has listed.
    pub async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready; log:\n{}",
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the sample whose name and labels are exactly `series`, e.g.
    /// `switchyard_status_leader` or `switchyard_status_writes_total{result="success"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Sends a small non-streaming chat request for `model`; returns the status and body.
    pub async fn chat(&self, model: &str) -> (u16, Value) {
        self.chat_as(model, None).await
    }

    /// [`KubeGateway::chat`] with `Authorization: Bearer KEY`.
    pub async fn chat_as(&self, model: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(self.url("/v1/chat/completions"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req
            .json(&serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A Secret holding an upstream key, labelled so the gateway sees it.
pub fn secret_yaml(name: &str, key: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}
  labels: {{switchyard.dev/secret: "true"}}
stringData: {{apiKey: "{key}"}}
"#
    )
}

/// A ModelBackend for a mock upstream, serving `mock-model`, keyed by Secret `secret`.
pub fn backend_yaml(name: &str, endpoint: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: {secret}, key: apiKey}}}}
  models: [{{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "2.00"}}}}]
"#
    )
}

/// An AIRoute from `models` to weighted backends, rewriting to `mock-model`.
pub fn route_yaml(name: &str, models: &[&str], backends: &[(&str, u32)]) -> String {
    let models = models
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let backends = backends
        .iter()
        .map(|(b, w)| format!("{{backendRef: {{name: {b}}}, model: mock-model, weight: {w}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{models}]}}
  backends: [{backends}]
"#
    )
}
