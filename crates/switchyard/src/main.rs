//! The `switchyard` binary: wires the control plane, the data plane and the admin port.

use std::{
    io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard_controller::{load_path, FileSource};
use switchyard_gateway::{Admin, ClientConfig, Gateway, GatewayConfig, UpstreamClient};
use switchyard_router::TableHandle;
use switchyard_telemetry::Metrics;
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
    Serve(ServeArgs),
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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A YAML file or a folder of YAML files with ModelBackend, AIRoute, AIConsumer and
    /// Secret documents; watched and hot-reloaded.
    #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    /// Address of the API listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SWITCHYARD_LISTEN")]
    listen: SocketAddr,
    /// Address of the admin listener (/metrics, /healthz, /readyz, /debug/routes).
    #[arg(long, default_value = "0.0.0.0:9090", env = "SWITCHYARD_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
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
    /// Upstream connect timeout for backends that set none.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard_api::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Validate { config } => validate(&config),
        Command::Crds { out_dir } => crds(&out_dir),
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new())?);
    let table = Arc::new(TableHandle::new());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Watch before the first load, so no change slips between the two. The first load must
    // succeed: there is no previous table to fall back on.
    let source = Arc::new(
        FileSource::new(args.config.clone(), table.clone(), metrics.clone())
            .with_debounce(args.reload_debounce),
    );
    let watcher = source
        .clone()
        .watch(stopped())
        .with_context(|| format!("watching {}", args.config.display()))?;
    source
        .reload()
        .with_context(|| format!("loading {}", args.config.display()))?;

    let client = UpstreamClient::new(&ClientConfig {
        connect_timeout: args.connect_timeout,
        ..ClientConfig::default()
    })?;
    let gateway = Gateway::new(
        table.clone(),
        client,
        metrics.clone(),
        GatewayConfig {
            max_body_bytes: args.max_body_bytes,
            ..GatewayConfig::default()
        },
    );
    let api = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tracing::info!(
        listen = %api.local_addr()?,
        admin = %admin.local_addr()?,
        config = %args.config.display(),
        "switchyard serving"
    );

    let watcher = tokio::spawn(watcher);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_stopped = async move {
        let _ = admin_stop_rx.await;
    };
    let admin_task = tokio::spawn(switchyard_gateway::serve_admin(
        admin,
        Admin::new(table.clone(), metrics.clone(), draining.clone()),
        admin_stopped,
    ));
    let api_task = tokio::spawn(switchyard_gateway::serve_gateway(
        api,
        gateway,
        stopped(),
        args.drain_timeout,
    ));

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
    Ok(ExitCode::SUCCESS)
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
