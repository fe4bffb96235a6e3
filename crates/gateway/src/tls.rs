//! TLS on the API listener: rustls, certificate and key from PEM files, reloaded when the
//! files change (a renewed certificate mounted from a Secret takes effect without a restart).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};
use tokio_rustls::TlsAcceptor;

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("certificate and key do not form a usable pair: {0}")]
    Config(#[from] rustls::Error),
}

/// The current TLS configuration, swapped whole on reload.
#[derive(Clone)]
pub struct TlsReloader {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<ServerConfig>>,
}

impl TlsReloader {
    /// Loads the certificate chain and key once; fails if they are unusable.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let config = load(&cert, &key)?;
        Ok(TlsReloader {
            cert,
            key,
            current: Arc::new(ArcSwap::from_pointee(config)),
        })
    }

    /// An acceptor for one connection, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Polls the files' modification times and reloads on change, until `shutdown`. A broken
    /// renewal is logged and the previous certificate keeps serving.
    pub async fn watch(self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut seen = (mtime(&self.cert), mtime(&self.key));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = &mut shutdown => return,
            }
            let now = (mtime(&self.cert), mtime(&self.key));
            if now == seen {
                continue;
            }
            seen = now;
            let (cert, key) = (self.cert.clone(), self.key.clone());
            // File reads and parsing stay off the runtime's workers.
            match tokio::task::spawn_blocking(move || load(&cert, &key)).await {
                Ok(Ok(config)) => {
                    self.current.store(Arc::new(config));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS certificate change rejected; still serving the previous one")
                }
                Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
            }
        }
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let pem = |path: &Path, detail: String| TlsError::Pem {
        path: path.to_path_buf(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
