//! `--tls-cert`/`--tls-key`: a certificate made by the `openssl` CLI for a throwaway CA, and
//! rustls clients that trust only that CA, so ALPN and the protocol it picks are checked
//! end to end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{start_on, Reply, Server};

/// A CA and a leaf for `localhost` / 127.0.0.1 signed by it, in a temporary directory.
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Runs `openssl` in `dir` with whitespace-separated `args`.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (it must be installed): {e}"));
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        p,
        &format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=switchyard-mock-test-ca \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    openssl(
        p,
        &format!("req -new {ec} -keyout key.pem -out leaf.csr -subj /CN=localhost"),
    );
    std::fs::write(
        p.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        p,
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
         -extfile leaf.ext -out cert.pem",
    );
    Certs {
        ca: p.join("ca.pem"),
        cert: p.join("cert.pem"),
        key: p.join("key.pem"),
        _dir: dir,
    }
}

async fn start_tls(certs: &Certs) -> Server {
    let acceptor = crate::tls::acceptor(&certs.cert, &certs.key).unwrap();
    start_on(None, Some(acceptor)).await
}

/// A TLS connection trusting only the test CA, offering `alpn`.
async fn connect(server: &Server, certs: &Certs, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn h2_over_tls_by_alpn() {
    let certs = make_certs();
    let server = start_tls(&certs).await;
    let authority = format!("localhost:{}", server.addr.port());

    let stream = connect(&server, &certs, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let get = |path: &str| {
        Request::get(format!("https://{authority}{path}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let response = sender.send_request(get("/v1/models")).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let models = Reply::read(response).await;
    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(models.json()["data"][0]["id"], "mock-model");

    let recorded: Value = Reply::read(sender.send_request(get("/mock/requests")).await.unwrap())
        .await
        .json();
    assert_eq!(recorded[0]["path"], "/v1/models");
    assert_eq!(recorded[0]["version"], "HTTP/2");
    assert_eq!(recorded[0]["authority"], authority.as_str());
    assert_eq!(recorded[0]["tls"], true);

    // A Host header must agree with :authority.
    let mut mismatched = get("/v1/models");
    mismatched
        .headers_mut()
        .insert("host", "elsewhere:443".parse().unwrap());
    let refused = Reply::read(sender.send_request(mismatched).await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body, b"Host header differs from :authority");
}

#[tokio::test]
async fn http1_over_tls_by_alpn_or_without_it() {
    let certs = make_certs();
    let server = start_tls(&certs).await;
    let authority = format!("localhost:{}", server.addr.port());

    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = connect(&server, &certs, alpn).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), alpn.first().copied());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/v1/models")
            .header("host", authority.as_str())
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(Reply::read(response).await.status, StatusCode::OK);
    }

    // Without ALPN `h2` the server speaks HTTP/1.1 only: an HTTP/2 preface gets no HTTP/2.
    let stream = connect(&server, &certs, &[]).await;
    let h2 = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://{authority}/v1/models"))
            .body(Full::<Bytes>::default())
            .unwrap();
        sender.send_request(req).await
    };
    assert!(h2.await.is_err());
}
