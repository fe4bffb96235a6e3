//! Local mode: AIRoute / ModelBackend / AIConsumer / Secret manifests read from a file or a
//! folder of YAML files, watched and hot-reloaded.
//!
//! A reload is all or nothing: if any document or resource is invalid, the new table is
//! refused with messages naming the file, the resource and the field, and the previous table
//! keeps serving. (The Kubernetes source is more lenient per resource, since there each
//! resource carries its own status.)

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use switchyard_api::{document::EnvLookup, document::ProcessEnv, Resources};
use switchyard_compile::{compile, Compiled, Severity};
use switchyard_router::TableHandle;
use switchyard_telemetry::Metrics;
use tokio::sync::mpsc;

/// Why a configuration could not be loaded. Each message names file, resource and field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .messages.join("\n"))]
pub struct LoadError {
    /// One line per problem.
    pub messages: Vec<String>,
}

/// A loaded, compiled configuration with its non-fatal warnings.
pub struct Loaded {
    /// The compiled table and diagnostics.
    pub compiled: Compiled,
    /// Warnings, formatted with their file.
    pub warnings: Vec<String>,
    /// The files that were read.
    pub files: Vec<PathBuf>,
}

/// The YAML files under `path`: the file itself, or the `.yaml`/`.yml` files of a folder
/// (not recursive, like `kubectl apply -f DIR`), sorted, hidden files skipped.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |e: std::io::Error| LoadError {
        messages: vec![format!("{}: {e}", path.display())],
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if is_manifest_name(name) && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and compiles the manifests under `path`, as table generation `generation`.
pub fn load_path(path: &Path, generation: u64, env: &dyn EnvLookup) -> Result<Loaded, LoadError> {
    let files = yaml_files(path)?;
    let mut resources = Resources::default();
    let mut messages = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => messages.extend(
                resources
                    .parse_yaml(&shown, &text, env)
                    .into_iter()
                    .map(|e| e.to_string()),
            ),
            Err(e) => messages.push(format!("{shown}: {e}")),
        }
    }
    let compiled = compile(&resources, generation);
    let mut warnings = Vec::new();
    for d in &compiled.diagnostics {
        let file = resources
            .origin(d.kind, &d.namespace, &d.name)
            .map(|o| format!("{o}: "))
            .unwrap_or_default();
        let line = format!("{file}{d}");
        match d.severity {
            Severity::Error => messages.push(line),
            Severity::Warning => warnings.push(line),
        }
    }
    if !messages.is_empty() {
        return Err(LoadError { messages });
    }
    Ok(Loaded {
        compiled,
        warnings,
        files,
    })
}

/// Watches a config path and swaps a new table in on every valid change.
pub struct FileSource {
    path: PathBuf,
    table: Arc<TableHandle>,
    metrics: Arc<Metrics>,
    generation: AtomicU64,
    debounce: Duration,
}

impl FileSource {
    /// A source for `path` feeding `table`.
    pub fn new(path: PathBuf, table: Arc<TableHandle>, metrics: Arc<Metrics>) -> Self {
        FileSource {
            path,
            table,
            metrics,
            generation: AtomicU64::new(0),
            debounce: Duration::from_millis(100),
        }
    }

    /// Sets how long a burst of file changes must settle before reloading (default 100 ms).
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Loads the configuration once and swaps it in. On error the current table is kept.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        match load_path(&self.path, generation, &ProcessEnv) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                let routes = loaded.compiled.table.route_count();
                crate::publish(&self.table, loaded.compiled.table, &self.metrics);
                self.generation.store(generation, Ordering::Relaxed);
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.config_generation.set(generation as i64);
                tracing::info!(
                    generation,
                    routes,
                    files = loaded.files.len(),
                    "routing table loaded"
                );
                Ok(generation)
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                Err(e)
            }
        }
    }

    /// Starts watching the path. The watch is registered before this returns, so a change
    /// made right after (even before the first `reload`) is not missed; the returned future
    /// reloads after each burst of changes until `shutdown`.
    pub fn watch(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, notify::Error> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // Watch the folder (or the file's folder): editors replace files by rename and
        // Kubernetes swaps mounted ConfigMaps through a symlink, which a watch on the file
        // itself would miss.
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        let only = (!self.path.is_dir())
            .then(|| self.path.file_name().map(ToOwned::to_owned))
            .flatten();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    let relevant = ev.paths.iter().any(|p| concerns_config(p, only.as_deref()));
                    if relevant && !matches!(ev.kind, notify::EventKind::Access(_)) {
                        // A full channel already means "reload pending".
                        let _ = tx.try_send(());
                    }
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { break },
                    () = &mut shutdown => break,
                }
                // Debounce: let an editor's burst of writes settle before reading.
                tokio::time::sleep(self.debounce).await;
                while rx.try_recv().is_ok() {}
                if let Err(e) = self.reload() {
                    tracing::error!(
                        "configuration change rejected; still serving generation {}:\n{e}",
                        self.generation.load(Ordering::Relaxed)
                    );
                }
            }
            drop(watcher);
        })
    }
}

/// Whether a change to `changed`, in the watched folder, can change the configuration: the
/// watched file itself (`only`), or any YAML file when a whole folder is watched, or the
/// `..data` entries through which Kubernetes swaps a mounted ConfigMap or Secret. Anything
/// else in the folder (a log file written beside the config, an editor's swap file) is not
/// a reason to reload: a log in the same folder made every reload's own log line trigger the
/// next one, ten reloads a second.
fn concerns_config(changed: &Path, only: Option<&std::ffi::OsStr>) -> bool {
    let Some(name) = changed.file_name() else {
        return true;
    };
    if name.as_encoded_bytes().starts_with(b"..") {
        return true;
    }
    match only {
        Some(file) => name == file,
        None => is_manifest_name(&name.to_string_lossy()),
    }
}

/// Whether a folder's file named `name` is read as manifests: `.yaml`/`.yml`, not hidden
/// (editors' swap and backup files are).
fn is_manifest_name(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const BACKEND: &str = "apiVersion: switchyard.dev/v1alpha1\nkind: ModelBackend\nmetadata: {name: mock}\nspec:\n  provider: openai-compatible\n  endpoint: http://127.0.0.1:1/v1\n  models: [{name: m}]\n";

    fn route(name: &str, model: &str, backend: &str) -> String {
        format!("apiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  match: {{models: [{model}]}}\n  backends: [{{backendRef: {{name: {backend}}}}}]\n")
    }

    #[test]
    fn loads_a_folder_and_names_file_resource_field_on_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("backend.yaml"), BACKEND).unwrap();
        std::fs::write(dir.path().join("route.yml"), route("r", "m", "mock")).unwrap();
        std::fs::write(dir.path().join(".route.yaml.swp"), "garbage: [").unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml").unwrap();
        let env = HashMap::<String, String>::new();
        let loaded = load_path(dir.path(), 1, &env).unwrap();
        assert_eq!(loaded.files.len(), 2);
        assert_eq!(loaded.compiled.table.route_count(), 1);

        std::fs::write(dir.path().join("route.yml"), route("r", "m", "missing")).unwrap();
        let err = load_path(dir.path(), 2, &env).err().unwrap();
        assert_eq!(err.messages.len(), 1);
        let msg = &err.messages[0];
        assert!(msg.contains("route.yml (document 1)"), "{msg}");
        assert!(msg.contains("AIRoute default/r"), "{msg}");
        assert!(msg.contains("spec.backends[0].backendRef.name"), "{msg}");
        assert!(msg.contains("BackendNotFound"), "{msg}");
    }

    #[tokio::test]
    async fn invalid_reload_keeps_previous_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.yaml");
        std::fs::write(&file, format!("{BACKEND}---\n{}", route("r", "m", "mock"))).unwrap();
        let table = Arc::new(TableHandle::new());
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let source = Arc::new(FileSource::new(
            file.clone(),
            table.clone(),
            metrics.clone(),
        ));
        assert_eq!(source.reload().unwrap(), 1);
        let mut gen = table.subscribe();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            source
                .clone()
                .watch(async move {
                    let _ = stop_rx.await;
                })
                .unwrap(),
        );

        // A broken edit is refused and generation 1 keeps serving.
        std::fs::write(&file, format!("{BACKEND}---\n{}", route("r", "m", "nope"))).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(table.load().generation(), 1);
        assert!(metrics.config_reloads.with_label_values(&["error"]).get() >= 1);

        // A good edit is swapped in.
        std::fs::write(
            &file,
            format!(
                "{BACKEND}---\n{}---\n{}",
                route("r", "m", "mock"),
                route("r2", "m2", "mock")
            ),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), gen.wait_for(|g| *g >= 2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(table.load().route_count(), 2);
        let _ = stop_tx.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn writes_to_other_files_beside_the_config_do_not_reload() {
        for watch_folder in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("all.yaml");
            std::fs::write(&file, format!("{BACKEND}---\n{}", route("r", "m", "mock"))).unwrap();
            let table = Arc::new(TableHandle::new());
            let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
            let path = if watch_folder {
                dir.path().to_path_buf()
            } else {
                file.clone()
            };
            let source = Arc::new(
                FileSource::new(path, table.clone(), metrics)
                    .with_debounce(Duration::from_millis(20)),
            );
            assert_eq!(source.reload().unwrap(), 1);
            let mut gen = table.subscribe();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(
                source
                    .clone()
                    .watch(async move {
                        let _ = stop_rx.await;
                    })
                    .unwrap(),
            );
            let log = dir.path().join("gateway.log");
            for i in 0..20 {
                std::fs::write(&log, format!("line {i}\n")).unwrap();
                std::fs::write(dir.path().join(".all.yaml.swp"), "x").unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(table.load().generation(), 1, "folder watch: {watch_folder}");

            // The config itself still reloads.
            std::fs::write(
                &file,
                format!(
                    "{BACKEND}---\n{}---\n{}",
                    route("r", "m", "mock"),
                    route("r2", "m2", "mock")
                ),
            )
            .unwrap();
            tokio::time::timeout(Duration::from_secs(5), gen.wait_for(|g| *g >= 2))
                .await
                .unwrap()
                .unwrap();
            let _ = stop_tx.send(());
            task.await.unwrap();
        }
    }
}
