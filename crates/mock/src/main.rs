//! A fast fake LLM provider speaking OpenAI's (and Azure OpenAI's), Anthropic's, Gemini's and
//! Bedrock's (Converse, SigV4-verified) wire formats, with fault knobs:
//! the upstream of Switchyard's demo, tests and benchmarks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, Config};
use crate::faults::{Knobs, MAX_CHUNKS};

mod anthropic;
mod app;
mod bedrock;
mod body;
mod cache;
mod faults;
mod gemini;
mod openai;
mod record;
mod responses;
mod strict;
mod tls;
mod tools;

#[cfg(test)]
mod tests;

/// How long in-flight responses may take to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that connects and never finishes the TLS handshake holds a task no longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Fake OpenAI-compatible provider speaking the real wire format.
#[derive(Debug, Parser)]
#[command(name = "switchyard-mock", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed at startup).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// Require `Authorization: Bearer KEY` (or `api-key: KEY`) on /v1 requests; repeat (or
    /// separate with commas) to accept several keys.
    #[arg(
        long,
        env = "MOCK_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_key: Vec<String>,

    /// A key that is accepted but always answered with 429 (Retry-After: 30), to exercise a
    /// gateway's key pool; repeatable.
    #[arg(long)]
    rate_limited_key: Vec<String>,

    /// A model no key may use: answered 403 `model_not_found` (in each dialect's shape), as a
    /// provider answers a key without access to it; repeatable.
    #[arg(long)]
    forbidden_model: Vec<String>,

    /// Delay before response headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,

    /// Content chunks per reply.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_CHUNKS)))]
    chunks: u32,

    /// Delay between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,

    /// How long the simulated prompt cache keeps a prefix after its last use, in seconds
    /// (see `cache.rs`).
    #[arg(long, default_value_t = 300)]
    cache_ttl_secs: u64,

    /// Default embedding vector length.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    embedding_dims: u32,

    /// Model ids listed by /v1/models.
    #[arg(long, value_delimiter = ',', default_value = "mock-model")]
    models: Vec<String>,

    /// AWS access key id Bedrock requests (`/model/…`) must be SigV4-signed with; needs
    /// --aws-secret-access-key. Without it Bedrock requests are checked like the others.
    #[arg(
        long,
        env = "MOCK_AWS_ACCESS_KEY_ID",
        requires = "aws_secret_access_key"
    )]
    aws_access_key_id: Option<String>,

    /// The secret access key matching --aws-access-key-id.
    #[arg(
        long,
        env = "MOCK_AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "aws_access_key_id"
    )]
    aws_secret_access_key: Option<String>,

    /// Serve TLS with this certificate chain (PEM, leaf first); needs --tls-key. ALPN offers
    /// h2 and http/1.1; a client that negotiates no ALPN gets HTTP/1.1.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The connection builders: by ALPN over TLS, by sniffing the preface on plain TCP (h2c with
/// prior knowledge, or HTTP/1.x).
struct Protocols {
    sniff: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();

    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app = Arc::new(App::new(cli.into_config()));
    if tls.is_some() {
        eprintln!("switchyard-mock serving TLS (ALPN h2, http/1.1)");
    }
    // Printed only once bound: scripts wait for this line or for the port, and parse the
    // address after "listening on http://" — so the line keeps `http://` even under TLS (the
    // line above says so).
    eprintln!("switchyard-mock listening on http://{addr}");

    serve(listener, app, tls, shutdown_signal()).await;
    Ok(())
}

/// Accepts connections (TLS ones when `tls` is set) until `shutdown` completes, then drains
/// in-flight ones.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let protocols = Arc::new(Protocols::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Usually fd exhaustion; back off instead of spinning on the error.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY");
        }
        let app = app.clone();
        match &tls {
            None => {
                let service = service_fn(move |req| app.clone().handle(req, false));
                let conn = protocols
                    .sniff
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move { log_end(conn.await) });
            }
            // The handshake runs in the connection's task so a slow client cannot stall
            // accepting; the connection joins the drain once it is established.
            Some(acceptor) => {
                let accept = handshake(acceptor, stream);
                let (protocols, watcher) = (protocols.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let Some(stream) = accept.await else { return };
                    let builder = protocols.by_alpn(stream.get_ref().1.alpn_protocol());
                    let service = service_fn(move |req| app.clone().handle(req, true));
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    log_end(watcher.watch(conn).await);
                });
            }
        }
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("drain timed out; dropping remaining connections");
        }
    }
}

/// The TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`]; `None` (logged) when it fails.
fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> impl Future<Output = Option<tokio_rustls::server::TlsStream<TcpStream>>> {
    let accept = acceptor.accept(stream);
    async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                tracing::debug!(%err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// Client disconnects and deliberate resets land here; not worth more than debug.
fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(err) = result {
        tracing::debug!(err = %err, "connection ended with error");
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Warnings only by default: per-request logs would show up in benchmarks.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

// === impl Protocols ===

impl Protocols {
    fn new() -> Self {
        let sniff = auto::Builder::new(TokioExecutor::new());
        Self {
            http1: sniff.clone().http1_only(),
            http2: sniff.clone().http2_only(),
            sniff,
        }
    }

    /// HTTP/2 over TLS only when ALPN chose `h2` (RFC 9113 §3.2); without ALPN, HTTP/1.1, as
    /// nginx does.
    fn by_alpn(&self, alpn: Option<&[u8]>) -> &auto::Builder<TokioExecutor> {
        match alpn {
            Some(crate::tls::H2) => &self.http2,
            _ => &self.http1,
        }
    }
}

// === impl Cli ===

impl Cli {
    fn into_config(self) -> Config {
        let mut models: Vec<String> = self
            .models
            .into_iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if models.is_empty() {
            models.push("mock-model".to_owned());
        }
        Config {
            api_keys: self.api_key,
            rate_limited_keys: self.rate_limited_key,
            forbidden_models: self.forbidden_model,
            defaults: Knobs::defaults(self.latency_ms, self.chunks, self.chunk_delay_ms),
            embedding_dims: self.embedding_dims,
            cache_ttl: std::time::Duration::from_secs(self.cache_ttl_secs),
            models,
            aws: self.aws_access_key_id.zip(self.aws_secret_access_key).map(
                |(access_key_id, secret_access_key)| crate::bedrock::AwsCredentials {
                    access_key_id,
                    secret_access_key,
                },
            ),
        }
    }
}
