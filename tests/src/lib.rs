//! End-to-end harness: starts the real `switchyard` and `switchyard-mock` binaries on
//! loopback ports and talks to them over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod kube;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// The folder holding the built binaries: `$SWITCHYARD_BIN_DIR`, else the profile folder
/// this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SWITCHYARD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` first (`make test` does)",
        p.display()
    );
    p
}

/// A child process killed on drop, with its stderr collected line by line.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    rx: Mutex<mpsc::Receiver<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                store.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            lines,
            rx: Mutex::new(rx),
        }
    }

    /// Waits (bounded) for a stderr line satisfying `f`, returning what `f` extracted.
    pub fn wait_line<T>(&self, timeout: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let rx = self.rx.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for a log line; output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Everything written to stderr so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `switchyard-mock`.
pub struct Mock {
    /// The process.
    pub proc: Proc,
    /// Its address.
    pub addr: SocketAddr,
}

impl Mock {
    /// Starts the mock with an upstream key and extra flags.
    pub fn start(api_key: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(bin("switchyard-mock"));
        cmd.args(["--listen", "127.0.0.1:0", "--api-key", api_key])
            .args(extra);
        let proc = Proc::spawn(cmd);
        let addr = proc.wait_line(Duration::from_secs(10), |l| {
            l.split("listening on http://")
                .nth(1)
                .and_then(|a| a.trim().parse().ok())
        });
        Mock { proc, addr }
    }

    /// `http://ADDR/v1`, for a ModelBackend endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The requests the mock has seen.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("http://{}/mock/requests", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Forgets the recorded requests.
    pub async fn clear(&self) {
        reqwest::Client::new()
            .delete(format!("http://{}/mock/requests", self.addr))
            .send()
            .await
            .unwrap();
    }
}

/// A running `switchyard serve`.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// API address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// The config folder (kept alive as long as the gateway).
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `files` into a fresh config folder and starts the gateway on it.
    pub fn start(files: &[(&str, &str)], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut cmd = Command::new(bin("switchyard"));
        cmd.arg("serve")
            .arg("--config")
            .arg(dir.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                // Most cases run without AIConsumers: open explicitly (the binary defaults
                // to closed); `extra` may say `--require-auth` again (the last one wins).
                "--require-auth=false",
            ])
            .args(extra)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd);
        let (addr, admin) = proc.wait_line(Duration::from_secs(20), |l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let f = &v["fields"];
            (f["message"] == "switchyard serving").then(|| {
                (
                    f["listen"].as_str().unwrap().parse().unwrap(),
                    f["admin"].as_str().unwrap().parse().unwrap(),
                )
            })
        });
        Gateway {
            proc,
            addr,
            admin,
            dir,
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

    /// Replaces a config file atomically (write then rename, as editors and ConfigMaps do).
    pub fn write_config(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    /// The current `switchyard_config_generation`, from `/metrics`.
    pub async fn generation(&self) -> i64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("switchyard_config_generation "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
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

    /// The sum of a metric's samples whose labels include every `name="value"` in `labels`
    /// (0 when none is exposed yet).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
                    && labels.iter().all(|want| l.contains(want))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (bounded) until the metric (as [`Gateway::metric`] sums it) satisfies `ok`.
    pub async fn wait_metric(&self, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name, labels).await;
            if ok(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {v}; log:\n{}",
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the gateway's log contains `text`.
    pub async fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.proc.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}; log:\n{}",
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the config generation reaches `at_least`.
    pub async fn wait_generation(&self, at_least: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.generation().await < at_least {
            assert!(
                Instant::now() < deadline,
                "generation {at_least} not reached; log:\n{}",
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A Secret + ModelBackend for a mock upstream.
pub fn backend_yaml(name: &str, endpoint: &str, key: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-key}}
stringData: {{apiKey: "{key}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: {name}-key, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "2.00"}}}}
  - {{name: mock-large}}
  - {{name: mock-embed}}
{extra_spec}"#
    )
}

/// An AIRoute from model patterns to `backend`, rewriting to `model`.
pub fn route_yaml(name: &str, models: &[&str], backend: &str, model: &str) -> String {
    let models = models
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{models}]}}
  backends: [{{backendRef: {{name: {backend}}}, model: {model}}}]
"#
    )
}

/// What a [`RawUpstream`] does on a connection once it has read a request from it.
#[derive(Clone, Debug)]
pub enum RawReply {
    /// Resets the connection (RST, by a zero linger) without a byte of answer.
    Reset,
    /// Closes the connection (FIN) without a byte of answer.
    Close,
    /// Writes these bytes as they are, then closes the connection.
    Bytes(Vec<u8>),
    /// Never answers, keeping the connection open.
    Silent,
}

impl RawReply {
    /// An HTTP/1.1 response with a JSON body and these extra header lines (`name: value`).
    pub fn json(status: &str, headers: &[&str], body: &str) -> Self {
        let mut head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        RawReply::Bytes(format!("{head}\r\n{body}").into_bytes())
    }

    /// A `200` with a chat completion of `model` saying "ok".
    pub fn chat_ok(model: &str) -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        });
        Self::json("200 OK", &[], &body.to_string())
    }
}

/// A bare TCP upstream on loopback for faults no HTTP server commits on purpose: the n-th
/// connection gets the n-th reply of its script (the last one repeats) after its request
/// (head and `content-length` body) has been read. Stops when dropped.
pub struct RawUpstream {
    /// Its address.
    pub addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    /// Starts answering by `script` (not empty), within the current tokio runtime.
    pub async fn start(script: Vec<RawReply>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        assert!(!script.is_empty());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            // Silent connections are held here until the upstream is dropped.
            let mut held = Vec::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = script[n.min(script.len() - 1)].clone();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let complete = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break true;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break false,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                if !complete {
                    continue;
                }
                match reply {
                    RawReply::Reset => {
                        let _ = sock.set_zero_linger();
                        drop(sock);
                    }
                    RawReply::Close => {
                        let _ = sock.shutdown().await;
                    }
                    RawReply::Bytes(b) => {
                        let _ = sock.write_all(&b).await;
                        let _ = sock.shutdown().await;
                    }
                    RawReply::Silent => held.push(sock),
                }
            }
        });
        RawUpstream {
            addr,
            connections,
            task,
        }
    }

    /// `http://ADDR/v1`, for a ModelBackend endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
