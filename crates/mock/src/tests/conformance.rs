//! What an origin server refuses, sent as raw HTTP/1.1 bytes (hyper's client would not send
//! most of these): each gets a 400 naming the reason, and none is recorded.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{start, Server};

/// Status code and body of the reply to `head` (a request without body, CRLFs included).
async fn raw(server: &Server, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the whole (Content-Length framed) reply is in: the accepted requests keep
    // the connection open, so EOF only comes after a 400.
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                let status = head[9..12].parse().unwrap();
                return (status, body.to_owned());
            }
        }
        assert!(n > 0, "connection closed before a full reply: {text:?}");
    }
}

#[tokio::test]
async fn refuses_what_an_origin_server_refuses() {
    let server = start(None).await;
    let host = server.addr.to_string();
    let cases = [
        (
            format!("GET http://{host}/v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "absolute-form request target (only proxies accept it)",
        ),
        (
            "GET /v1/models HTTP/1.1\r\n\r\n".to_owned(),
            "missing Host header",
        ),
        (
            format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\n\r\n"),
            "duplicate Host header",
        ),
        (
            format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, x-foo\r\nx-foo: 1\r\n\r\n"),
            "Connection header names a hop-by-hop header (only close and keep-alive are accepted)",
        ),
        (
            format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nKeep-Alive: timeout=5\r\n\r\n"),
            "hop-by-hop header Keep-Alive",
        ),
        (
            format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nTE: gzip\r\n\r\n"),
            "TE header other than trailers",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic eDp5\r\n\r\n"),
            "hop-by-hop header Proxy-Authorization",
        ),
    ];
    for (head, reason) in &cases {
        assert_eq!(
            raw(&server, head).await,
            (400, (*reason).to_owned()),
            "{head}"
        );
    }
    assert_eq!(
        server.get("/mock/stats").await.json(),
        json!({"requests": 0}),
        "refused requests are not recorded"
    );

    for head in [
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nTE: trailers\r\n\r\n"),
        format!("GET /healthz HTTP/1.0\r\nHost: {host}\r\n\r\n"),
    ] {
        assert_eq!(raw(&server, &head).await.0, 200, "{head}");
    }
}
