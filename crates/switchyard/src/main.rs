//! The `switchyard` binary: wires the control plane, the data plane and the admin port.

#[cfg(not(target_env = "msvc"))]
mod alloc;

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::{Path, PathBuf},
    pin::Pin,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard_controller::{
    load_path, ControllerMetrics, FileSource, KubeOptions, KubeSource, LeaseConfig, Namespaces,
    SharedSpendFuture, SpendFuture, SpendSource, TokenReviews,
};
use switchyard_gateway::{
    server::{ListenerConfig, ListenerMetrics},
    Admin, BusyPoll, ClientConfig, FailureMode, Gateway, GatewayConfig, Limits, Review,
    ReviewError, ReviewFuture, TlsReloader, TokenReviewer, TrustStore, UpstreamClient,
};
use switchyard_router::TableHandle;
use switchyard_telemetry::{AccessLog, Metrics};
use tokio::{net::TcpListener, sync::watch};

/// Switchyard: one OpenAI-compatible endpoint in front of every model provider.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Check manifests and exit non-zero with one line per problem.
    Validate {
        /// A YAML file or a folder of YAML files.
        #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.switchyard.dev.yaml` files into these folders instead of printing.
        #[arg(long)]
        out_dir: Vec<PathBuf>,
    },
    /// Print the built-in price catalog: the list prices used for a ModelBackend model whose
    /// `pricing` is left out (USD per million tokens), with each entry's source and date.
    Prices {
        /// Print the catalog as JSON (the file compiled into the binary) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Local mode: a YAML file or a folder of YAML files with ModelBackend, AIRoute,
    /// AIConsumer and Secret documents; watched and hot-reloaded. Exactly one of `--config`
    /// and `--kube` is required.
    #[arg(
        long,
        short = 'c',
        env = "SWITCHYARD_CONFIG",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    config: Option<PathBuf>,
    /// Cluster mode: watch ModelBackend, AIRoute, AIConsumer and their Secrets through the
    /// Kubernetes API (in-cluster service account, `KUBECONFIG`, or `--kubeconfig`), and write
    /// their status.
    #[arg(long)]
    kube: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Address of the API listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SWITCHYARD_LISTEN")]
    listen: SocketAddr,
    /// Address of the admin listener (/metrics, /healthz, /readyz, /debug/routes,
    /// /debug/spend). Loopback by default: give `0.0.0.0:9090` for probes and scraping from
    /// other hosts (the Helm chart does), and set `--admin-token` then.
    #[arg(
        long,
        default_value = "127.0.0.1:9090",
        env = "SWITCHYARD_ADMIN_LISTEN"
    )]
    admin_listen: SocketAddr,
    /// When set, `/debug/*` on the admin port requires `Authorization: Bearer <token>`;
    /// `/metrics`, `/healthz` and `/readyz` stay open.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    #[command(flatten)]
    listener: ListenerArgs,
    /// How long open requests (streams included) may finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// After SIGTERM, how long to keep accepting (with `/readyz` false) before closing the
    /// listener, so load balancers stop routing here first.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// How long a burst of config file changes must settle before the table is reloaded.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    reload_debounce: Duration,
    /// After each request, keep every runtime worker polling for I/O this long instead of
    /// sleeping (0s: off). Cuts the tens of microseconds a kernel wake-up costs on virtual
    /// machines from the added latency, at the price of that much CPU per request; an idle
    /// gateway still sleeps. Like HAProxy's `busy-polling`.
    #[arg(long, default_value = "0s", value_parser = parse_duration, env = "SWITCHYARD_BUSY_POLL")]
    busy_poll: Duration,
    /// Upstream connect timeout for backends that set none.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// The CAs upstream certificates are verified against, for backends without a
    /// `spec.tls.caSecretRef`: `webpki` (the Mozilla roots compiled in) or `system`
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the system bundle: where a TLS-inspecting
    /// egress proxy's private CA is installed).
    #[arg(long, default_value = "webpki", env = "SWITCHYARD_UPSTREAM_ROOTS")]
    upstream_roots: TrustStore,
    /// Offer HTTP/2 to TLS upstreams by ALPN (`--upstream-http2=false`: HTTP/1.1 only, which
    /// costs less CPU per request, at one connection per request in flight).
    #[arg(
        long,
        env = "SWITCHYARD_UPSTREAM_HTTP2",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        overrides_with = "upstream_http2"
    )]
    upstream_http2: bool,
    /// Serve the API over TLS with this PEM certificate chain (with `--tls-key`); both files
    /// are watched and reloaded when they change.
    #[arg(long, requires = "tls_key", env = "SWITCHYARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for `--tls-cert`.
    #[arg(long, requires = "tls_cert", env = "SWITCHYARD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Refuse requests without a valid virtual key (or ServiceAccount token) even when no
    /// AIConsumer exists yet. On by default; `--require-auth=false` lets a gateway without
    /// consumers serve anyone who reaches it (a warning is logged). Once any AIConsumer
    /// exists, a key is required either way.
    #[arg(
        long,
        env = "SWITCHYARD_REQUIRE_AUTH",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        overrides_with = "require_auth"
    )]
    require_auth: bool,
    /// Redis URL (`redis://host:6379/0`) for rate-limit, budget and ledger counters shared
    /// by every replica; without it they are kept per replica.
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    redis_url: Option<String>,
    /// When Redis is unreachable: `open` admits requests unchecked, `closed` refuses them
    /// with 503.
    #[arg(long, value_enum, default_value_t = RedisFailureMode::Open)]
    redis_failure_mode: RedisFailureMode,
    /// How long a budget reservation holds in Redis when its request never settles (the
    /// replica holding it crashed): longer than any request may run.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    budget_reservation_ttl: Duration,
    /// How often `switchyard_budget_remaining_usd` is refreshed from the budget counters.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    budget_metrics_interval: Duration,
    /// Turn off the access log (one JSON line per request on stdout).
    #[arg(long)]
    no_access_log: bool,
    /// Access log lines held in memory while stdout does not keep up, in bytes; beyond it new
    /// lines are dropped and counted in switchyard_access_log_dropped_total.
    #[arg(long, default_value_t = AccessLog::MAX_PENDING_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(4096..))]
    access_log_buffer_bytes: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    log_format: LogFormat,
}

/// Limits and timeouts of the API listener: every wait on a client is bounded, and so is
/// what clients can hold at once.
#[derive(clap::Args)]
struct ListenerArgs {
    /// Connections open at once. A connection beyond it is accepted and closed at once (its
    /// client can retry another replica), counted in `switchyard_connections_refused_total`.
    #[arg(long, default_value = "10000")]
    max_connections: NonZeroUsize,
    /// Requests in flight at once (a stream until its last byte). A request beyond it is
    /// answered `503` with `Retry-After: 1` in the caller's format, before any other work.
    #[arg(long, default_value = "4096")]
    max_in_flight: NonZeroUsize,
    /// How long an HTTP/1.1 request head may take, from the connection's accept (TLS
    /// handshake included) or from the next request's first byte; the connection is then
    /// closed. Also bounds the TLS handshake and the h2c preface (at most 10 s).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    header_read_timeout: Duration,
    /// How long a request body may take to arrive, from its head: then `408`.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    body_read_timeout: Duration,
    /// How long a whole request, head and body, may take to arrive: then `408`.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    request_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open (HTTP/1.1 keep-alive;
    /// h2 then gets GOAWAY). Longer than the idle timeouts of the usual clients and load
    /// balancers in front (60-90 s), so they close first.
    #[arg(long, default_value = "120s", value_parser = parse_positive_duration)]
    idle_timeout: Duration,
    /// Largest request head in bytes: HTTP/1.1 request line and headers (`431` beyond), h2
    /// header list.
    #[arg(long, default_value = "65536")]
    max_header_bytes: NonZeroUsize,
    /// h2: streams a client may open at once on one connection.
    #[arg(long, default_value = "100")]
    h2_max_concurrent_streams: NonZeroU32,
    /// h2: send a PING after this long without frames from the client (0s: never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    h2_keepalive_interval: Duration,
    /// h2: close the connection when a PING goes unanswered this long.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    h2_keepalive_timeout: Duration,
}

impl ListenerArgs {
    fn config(&self) -> ListenerConfig {
        ListenerConfig {
            max_connections: self.max_connections.get(),
            max_in_flight: self.max_in_flight.get(),
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            request_read_timeout: self.request_read_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes.get(),
            h2_max_concurrent_streams: self.h2_max_concurrent_streams.get(),
            h2_keepalive_interval: (!self.h2_keepalive_interval.is_zero())
                .then_some(self.h2_keepalive_interval),
            h2_keepalive_timeout: self.h2_keepalive_timeout,
        }
    }
}

/// Settings of cluster mode (`--kube`).
#[derive(clap::Args)]
struct ClusterArgs {
    /// Kubeconfig file to use instead of `KUBECONFIG` / `~/.kube/config` / the in-cluster
    /// service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace to watch; repeat for several. Default: every namespace.
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Label selector for the Secrets to watch (only these can hold upstream or consumer
    /// keys); an empty value watches every Secret.
    #[arg(long, default_value = switchyard_controller::cluster::DEFAULT_SECRET_SELECTOR)]
    secret_selector: String,
    /// Namespace of the Lease that elects the one replica writing status. Default: the pod's
    /// namespace, else the only `--namespace`, else the kubeconfig's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events. Default: the pod name, else
    /// hostname-pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Audience ServiceAccount tokens must be minted for to authenticate a caller listed in
    /// an AIConsumer's `spec.serviceAccounts`.
    #[arg(long, default_value = switchyard_controller::DEFAULT_AUDIENCE)]
    token_audience: String,
    /// How often the status-writing replica updates each budgeted AIConsumer's
    /// `status.spendUsd` (only when it changed).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    spend_status_interval: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum RedisFailureMode {
    Open,
    Closed,
}

impl From<RedisFailureMode> for FailureMode {
    fn from(m: RedisFailureMode) -> Self {
        match m {
            RedisFailureMode::Open => FailureMode::Open,
            RedisFailureMode::Closed => FailureMode::Closed,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard_api::parse_duration(s).map_err(|e| e.to_string())
}

/// A duration that must not be zero: a zero timeout would refuse every client.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than 0s".into()),
        d => Ok(d),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Validate { config } => validate(&config),
        Command::Crds { out_dir } => crds(&out_dir),
        Command::Prices { json } => prices(json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr();
    match load_path(config, 1, &switchyard_api::document::ProcessEnv) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                writeln!(err, "{w}")?;
            }
            writeln!(
                std::io::stdout(),
                "{}: {} file(s), {} route(s), {} model name(s): valid",
                config.display(),
                loaded.files.len(),
                loaded.compiled.table.route_count(),
                loaded.compiled.table.models().len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for m in &e.messages {
                writeln!(err, "{m}")?;
            }
            writeln!(err, "{}: {} problem(s)", config.display(), e.messages.len())?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn crds(out_dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let crds = switchyard_api::crds();
    if out_dirs.is_empty() {
        let mut out = std::io::stdout().lock();
        for (i, crd) in crds.iter().enumerate() {
            if i > 0 {
                writeln!(out, "---")?;
            }
            out.write_all(switchyard_api::crd_yaml(crd)?.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for dir in out_dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for crd in &crds {
            let path = dir.join(switchyard_api::crd_file_name(crd));
            std::fs::write(&path, switchyard_api::crd_yaml(crd)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prices(json: bool) -> anyhow::Result<ExitCode> {
    let catalog = switchyard_router::catalog::catalog();
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(switchyard_router::catalog::json().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "# {}", catalog.about)?;
    writeln!(out, "# catalog date: {}; USD per million tokens; '-' = not listed (the provider default applies: see docs/pricing.md)", catalog.date)?;
    writeln!(
        out,
        "{:<13} {:<50} {:>8} {:>9} {:>10} {:>8}  {:<10}  source",
        "provider", "model", "input", "cacheRead", "cacheWrite", "output", "date"
    )?;
    for e in &catalog.models {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut names = e.model.clone();
        for a in &e.aliases {
            names.push_str(", ");
            names.push_str(a);
        }
        writeln!(
            out,
            "{:<13} {:<50} {:>8} {:>9} {:>10} {:>8}  {:<10}  {}",
            e.provider,
            names,
            e.input,
            dash(&e.cache_read),
            dash(&e.cache_write),
            e.output,
            e.date,
            e.source
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Diagnostics go to stderr (text or JSON). The access log — one JSON line per request — is
/// not a tracing layer: it goes to stdout through [`AccessLog`], batched off the request path.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::{fmt, prelude::*, EnvFilter, Layer};
    // kube's client logs every failed connection attempt at ERROR while the API server is
    // away; the controller already says so once per outage (and counts reconnects).
    let env = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    let diagnostics = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(env);
    tracing_subscriber::registry().with(diagnostics).init();
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    // The Kubernetes client's rustls needs a process-wide crypto provider; without one it
    // panics on the first connection. Installing fails only if one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
    let access_log = match args.no_access_log {
        true => None,
        false => Some(Arc::new(AccessLog::with_limits(
            metrics.registry(),
            std::io::stdout(),
            args.access_log_buffer_bytes,
        )?)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(run(args, metrics, access_log.clone()));
    // Requests the drain timeout cut off end (and log their line) as the runtime drops its
    // tasks; then every queued line is written before the process exits.
    drop(runtime);
    if let Some(log) = access_log {
        log.shutdown();
    }
    result
}

async fn run(
    args: ServeArgs,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
) -> anyhow::Result<ExitCode> {
    // OTLP export when the standard OTEL_EXPORTER_OTLP_* variables are set.
    let otel = switchyard_telemetry::Otel::from_env()?.map(Arc::new);
    if otel.is_some() {
        tracing::info!("OpenTelemetry export on");
    }
    let listener_metrics = Arc::new(ListenerMetrics::new(metrics.registry())?);
    let table = Arc::new(TableHandle::new());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let limits = Arc::new(
        match &args.redis_url {
            Some(url) => Limits::redis(url, args.redis_failure_mode.into(), metrics.clone())
                .await
                .context("configuring Redis for shared limits")?,
            None => Limits::local(metrics.clone()),
        }
        .with_reservation_ttl(args.budget_reservation_ttl),
    );
    {
        // Every replica exports what is left of each budget (Redis's figure when shared).
        let (limits, table) = (limits.clone(), table.clone());
        let every = args.budget_metrics_interval.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = table.load_full();
                limits.refresh_budget_gauges(t.consumers()).await;
            }
        });
    }

    let (source, config_shown, reviewer) = match &args.config {
        Some(path) => {
            // Checked here: clap's `requires` counts the `--kube` flag's implicit `false` as
            // given.
            anyhow::ensure!(
                args.cluster.kubeconfig.is_none() && args.cluster.namespaces.is_empty(),
                "--kubeconfig and --namespace apply to --kube only"
            );
            (
                file_source(&args, path, &table, &metrics, stopped())?,
                path.display().to_string(),
                None,
            )
        }
        None => kube_source(&args.cluster, &table, &metrics, &limits, stopped()).await?,
    };

    let client = UpstreamClient::new(&ClientConfig {
        connect_timeout: args.connect_timeout,
        roots: args.upstream_roots,
        http2: args.upstream_http2,
        ..ClientConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("upstream TLS trust store: {e}"))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsReloader::new(cert.clone(), key.clone()).context("loading the TLS certificate")?,
        ),
        _ => None,
    };
    let gateway = Gateway::new(
        table.clone(),
        client,
        metrics.clone(),
        otel.clone(),
        limits.clone(),
        GatewayConfig {
            max_body_bytes: args.max_body_bytes,
            require_auth: args.require_auth,
            busy_poll: (!args.busy_poll.is_zero()).then(|| BusyPoll::start(args.busy_poll)),
            access_log,
            ..GatewayConfig::default()
        },
        reviewer,
    );
    if !args.require_auth {
        tracing::warn!(
            listen = %args.listen,
            "--require-auth=false: until an AIConsumer exists, anyone who can reach the \
             listener is served with the backends' keys"
        );
    }
    let api = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tracing::info!(
        listen = %api.local_addr()?,
        admin = %admin.local_addr()?,
        config = %config_shown,
        "switchyard serving"
    );

    let watcher = tokio::spawn(source);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_stopped = async move {
        let _ = admin_stop_rx.await;
    };
    let admin_task = tokio::spawn(switchyard_gateway::serve_admin(
        admin,
        Admin::new(
            table.clone(),
            metrics.clone(),
            draining.clone(),
            limits.clone(),
        )
        .with_token(args.admin_token.as_deref().filter(|t| !t.is_empty())),
        admin_stopped,
    ));
    let api_task = tokio::spawn(switchyard_gateway::serve_gateway(
        api,
        gateway,
        stopped(),
        args.drain_timeout,
        tls.clone(),
        args.listener.config(),
        listener_metrics,
    ));
    if let Some(tls) = tls {
        tokio::spawn(tls.watch(Duration::from_secs(5), stopped()));
    }

    shutdown_signal().await;
    // Readiness goes false first; after the delay (for endpoints to drop this replica) the
    // listener closes and open requests, streams included, get the drain timeout to finish.
    draining.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(delay = ?args.shutdown_delay, "shutting down: readiness false");
    tokio::time::sleep(args.shutdown_delay).await;
    tracing::info!(timeout = ?args.drain_timeout, "draining open requests");
    let _ = stop_tx.send(true);
    let _ = api_task.await;
    let _ = admin_stop_tx.send(());
    let _ = admin_task.await;
    let _ = watcher.await;
    if let Some(otel) = otel {
        // The exporters flush with blocking HTTP calls: keep them off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Local mode: the first load must succeed, as there is no previous table to fall back on.
fn file_source(
    args: &ServeArgs,
    path: &Path,
    table: &Arc<TableHandle>,
    metrics: &Arc<Metrics>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let source = Arc::new(
        FileSource::new(path.to_path_buf(), table.clone(), metrics.clone())
            .with_debounce(args.reload_debounce),
    );
    // Watch before the first load, so no change slips between the two.
    let watcher = source
        .clone()
        .watch(stopped)
        .with_context(|| format!("watching {}", path.display()))?;
    source
        .reload()
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(Box::pin(watcher))
}

/// Cluster mode: connects, then serves an empty, not-ready table until every watch has
/// listed; from then on the table follows the cluster.
async fn kube_source(
    args: &ClusterArgs,
    table: &Arc<TableHandle>,
    metrics: &Arc<Metrics>,
    limits: &Arc<Limits>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    Pin<Box<dyn Future<Output = ()> + Send>>,
    String,
    Option<Arc<dyn TokenReviewer>>,
)> {
    let (client, default_ns) = switchyard_controller::connect(args.kubeconfig.as_deref())
        .await
        .context("connecting to the Kubernetes API")?;
    let namespaces = Namespaces::from_flags(args.namespaces.iter().cloned());
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| match &namespaces {
            Namespaces::Only(set) if set.len() == 1 => {
                set.iter().next().cloned().unwrap_or_default()
            }
            _ => default_ns,
        });
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "switchyard".into());
        format!("{host}-{}", std::process::id())
    });
    let shown = format!(
        "kubernetes (namespaces: {}; lease {lease_namespace}/switchyard-status as {identity})",
        match &namespaces {
            Namespaces::All => "all".to_string(),
            Namespaces::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(","),
        }
    );
    let options = KubeOptions {
        namespaces,
        secret_selector: Some(args.secret_selector.clone()).filter(|s| !s.is_empty()),
        lease: LeaseConfig::new(lease_namespace, identity),
        debounce: Duration::from_millis(50),
    };
    let controller = ControllerMetrics::new(metrics.registry())?;
    let reviewer = KubeReviewer(TokenReviews::new(
        client.clone(),
        args.token_audience.clone(),
    ));
    let spend = TableSpend {
        table: table.clone(),
        limits: limits.clone(),
    };
    let source = KubeSource::new(client, options, table.clone(), metrics.clone(), controller)
        .with_spend_status(Arc::new(spend), args.spend_status_interval);
    #[cfg(not(target_env = "msvc"))]
    let source = source.after_rebuild(alloc::release_freed);
    Ok((
        Box::pin(source.run(stopped)),
        shown,
        Some(Arc::new(reviewer)),
    ))
}

/// The gateway's ServiceAccount token checks, done by the controller's TokenReview client.
struct KubeReviewer(TokenReviews);

impl TokenReviewer for KubeReviewer {
    fn review(&self, token: String) -> ReviewFuture {
        let reviews = self.0.clone();
        Box::pin(async move {
            match reviews.review(token).await {
                Ok(Ok(user)) => Ok(Review::Authenticated(user)),
                Ok(Err(reason)) => Ok(Review::Refused(reason)),
                Err(e) => Err(ReviewError(e.to_string())),
            }
        })
    }
}

/// The status writer's spend figures, read from the data plane's limit counters.
struct TableSpend {
    table: Arc<TableHandle>,
    limits: Arc<Limits>,
}

impl SpendSource for TableSpend {
    fn spend<'a>(&'a self, consumer: &'a str) -> SpendFuture<'a> {
        Box::pin(async move {
            let table = self.table.load_full();
            let c = table.consumers().get(consumer)?;
            self.limits.period_spend(c).await
        })
    }

    fn shared_spend<'a>(&'a self, budget: &'a str) -> SharedSpendFuture<'a> {
        Box::pin(async move {
            let table = self.table.load_full();
            let b = table.consumers().budget(budget)?;
            let spent = self.limits.shared_spend(b).await?;
            Some((spent, b.consumers.iter().map(|c| c.to_string()).collect()))
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["switchyard", "serve", "--config", "x.yaml"]
            .iter()
            .chain(args)
            .copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => *a,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn secure_defaults_and_explicit_opt_outs() {
        let d = serve_args(&[]);
        assert!(d.require_auth, "auth is required unless turned off");
        assert_eq!(d.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(d.admin_token, None);
        for (args, want) in [
            (&["--require-auth"][..], true),
            (&["--require-auth=true"], true),
            (&["--require-auth=false"], false),
            (&["--require-auth=false", "--require-auth"], true),
            (&["--require-auth", "--require-auth=false"], false),
        ] {
            assert_eq!(serve_args(args).require_auth, want, "{args:?}");
        }
        // A bare value after a space is not taken as the flag's: no silent opt-out.
        let argv = [
            "switchyard",
            "serve",
            "--config",
            "x",
            "--require-auth",
            "false",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
        let a = serve_args(&["--admin-listen", "0.0.0.0:9090", "--admin-token", "t"]);
        assert_eq!(a.admin_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(a.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn listener_flags_default_to_the_listeners_defaults_and_refuse_zero() {
        assert_eq!(
            format!("{:?}", serve_args(&[]).listener.config()),
            format!("{:?}", ListenerConfig::default())
        );
        let off = serve_args(&["--h2-keepalive-interval", "0s"])
            .listener
            .config();
        assert_eq!(off.h2_keepalive_interval, None);
        for zero in [
            &["--max-connections", "0"][..],
            &["--max-in-flight", "0"],
            &["--body-read-timeout", "0s"],
            &["--header-read-timeout", "0ms"],
            &["--idle-timeout", "0s"],
            &["--h2-max-concurrent-streams", "0"],
        ] {
            let argv = ["switchyard", "serve", "--config", "x"].iter().chain(zero);
            assert!(Cli::try_parse_from(argv).is_err(), "{zero:?}");
        }
    }
}
