//! How a backend's connections leave the gateway: the `Host` it is addressed by, the CAs its
//! certificate is verified against, the server name presented, and the forward proxy.
//!
//! Compiled with the table, so a bad CA bundle or proxy is a resource error (a status
//! condition, a refused file) before any request meets it, and a changed Secret takes effect
//! with the next table.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use http::{uri::Scheme, HeaderValue, Uri};
use rustls::{
    client::ClientConfig,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    RootCertStore,
};

/// ALPN protocols offered to TLS upstreams: h2 first, HTTP/1.1 for servers without it.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A backend's connection settings.
#[derive(Debug, Default)]
pub struct Egress {
    /// Tells connections made with different settings apart (connection pools key on it):
    /// 0 for the gateway's defaults, else a hash of the CA bundle, server name and proxy.
    pub id: u64,
    /// The TLS configuration trusting the backend's own CA bundle; `None` uses the gateway's
    /// trust store.
    pub tls: Option<Arc<ClientConfig>>,
    /// The server name presented and verified, when not the endpoint's host.
    pub server_name: Option<ServerName<'static>>,
    /// The backend's own forward proxy, which wins over the environment's.
    pub proxy: Option<Proxy>,
}

/// A forward proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `http://host:port`.
    pub uri: Uri,
    /// `Proxy-Authorization`, marked sensitive.
    pub auth: Option<HeaderValue>,
}

impl Egress {
    /// Settings from a backend's CA bundle (PEM), server name and proxy (`url`,
    /// `user:password`). Errors name what is wrong, for the resource's status.
    pub fn new(
        ca_pem: Option<&[u8]>,
        sni: Option<&str>,
        proxy: Option<(&str, Option<&[u8]>)>,
    ) -> Result<Self, EgressError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let tls = match ca_pem {
            Some(pem) => {
                pem.hash(&mut hasher);
                Some(
                    client_config(ca_bundle(pem)?)
                        .map_err(|e| EgressError::CaBundle(e.to_string()))?,
                )
            }
            None => None,
        };
        let server_name = match sni {
            Some(name) => {
                name.hash(&mut hasher);
                Some(ServerName::try_from(name.to_string()).map_err(|_| {
                    EgressError::ServerName(format!("{name:?} is not a server name"))
                })?)
            }
            None => None,
        };
        let proxy = match proxy {
            Some((url, auth)) => {
                url.hash(&mut hasher);
                auth.hash(&mut hasher);
                Some(Proxy {
                    uri: proxy_uri(url)?,
                    auth: auth.map(basic_auth).transpose()?,
                })
            }
            None => None,
        };
        let id = if tls.is_none() && server_name.is_none() && proxy.is_none() {
            0
        } else {
            // Never 0, which is the defaults'.
            hasher.finish().max(1)
        };
        Ok(Egress {
            id,
            tls,
            server_name,
            proxy,
        })
    }
}

/// Why a backend's connection settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The CA bundle.
    #[error("{0}")]
    CaBundle(String),
    /// The server name.
    #[error("{0}")]
    ServerName(String),
    /// The proxy URL.
    #[error("{0}")]
    Proxy(String),
    /// The proxy's credentials.
    #[error("{0}")]
    ProxyCredentials(String),
}

/// The client TLS configuration of upstream connections trusting `roots`: ring, TLS 1.2 and
/// 1.3, ALPN h2 then HTTP/1.1.
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The certificates of a PEM bundle as trust anchors. A bundle with no certificate, or one
/// that does not parse, is refused: trusting nothing would fail every request later and
/// more obscurely.
pub fn ca_bundle(pem: &[u8]) -> Result<RootCertStore, EgressError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert
            .map_err(|e| EgressError::CaBundle(format!("certificate {i} of the CA bundle: {e}")))?;
        roots.add(cert).map_err(|e| {
            EgressError::CaBundle(format!(
                "certificate {i} of the CA bundle is not a usable CA: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(EgressError::CaBundle(
            "the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(roots)
}

fn proxy_uri(url: &str) -> Result<Uri, EgressError> {
    let bad = |why: String| EgressError::Proxy(format!("{url:?}: {why}"));
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme() != Some(&Scheme::HTTP) || uri.host().is_none() {
        return Err(bad("the proxy must be http://host:port".into()));
    }
    Ok(uri)
}

fn basic_auth(credentials: &[u8]) -> Result<HeaderValue, EgressError> {
    use base64::Engine as _;
    let credentials = credentials.trim_ascii();
    if !credentials.contains(&b':') {
        return Err(EgressError::ProxyCredentials(
            "the proxy credentials must be user:password".into(),
        ));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
        EgressError::ProxyCredentials("the proxy credentials are not header-safe text".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The `Host` of requests to `uri`: its authority, without the port when it is the scheme's
/// default (RFC 9110 §7.2; some origins compare Host with their server name exactly).
pub fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => 0,
    };
    let value = match authority.port_u16() {
        Some(p) if p == default_port => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_drops_only_the_default_port() {
        let h = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(h("https://api.openai.com/v1"), "api.openai.com");
        assert_eq!(h("https://api.openai.com:443/v1"), "api.openai.com");
        assert_eq!(h("http://127.0.0.1:80/v1"), "127.0.0.1");
        assert_eq!(h("http://127.0.0.1:8443/v1"), "127.0.0.1:8443");
        assert_eq!(h("https://[::1]:8443/v1"), "[::1]:8443");
        assert_eq!(h("https://localhost:80/"), "localhost:80");
    }

    #[test]
    fn defaults_have_id_zero_and_any_setting_another() {
        assert_eq!(Egress::new(None, None, None).unwrap().id, 0);
        let a = Egress::new(None, Some("edge.example"), None).unwrap();
        let b = Egress::new(None, Some("other.example"), None).unwrap();
        assert_ne!(a.id, 0);
        assert_ne!(a.id, b.id);
        let p = Egress::new(None, None, Some(("http://127.0.0.1:3128", None))).unwrap();
        assert_ne!(p.id, 0);
        assert_ne!(p.id, a.id);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let e = Egress::new(Some(b"not a pem"), None, None).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = Egress::new(None, Some("bad name!"), None).unwrap_err();
        assert!(e.to_string().contains("not a server name"), "{e}");
        let e = Egress::new(None, None, Some(("https://proxy:3128", None))).unwrap_err();
        assert!(e.to_string().contains("http://host:port"), "{e}");
        let e = Egress::new(None, None, Some(("http://proxy:3128", Some(b"nocolon")))).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
    }

    #[test]
    fn proxy_credentials_become_a_sensitive_basic_header() {
        let e = Egress::new(None, None, Some(("http://p:3128", Some(b"user:pass\n")))).unwrap();
        let auth = e.proxy.unwrap().auth.unwrap();
        assert_eq!(auth, "Basic dXNlcjpwYXNz");
        assert!(auth.is_sensitive());
    }
}
