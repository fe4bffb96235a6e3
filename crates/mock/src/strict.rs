//! Request conformance: refuses what an origin server such as nginx refuses, so a gateway that
//! sends a proxy-only request target or forwards hop-by-hop headers fails its tests here
//! instead of passing against a lenient stand-in and failing against the real provider.
//!
//! Runs on every request, benchmarks included: one pass over the header names and no
//! allocation.

use http::header::{CONNECTION, HOST, TE};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};

/// Why a request is answered with 400; [`Violation::reason`] is the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// HTTP/1.x without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// HTTP/1.x with more than one `Host` (RFC 9112 §3.2).
    DuplicateHost,
    /// A `Host` (or `:authority`) that is empty or not `host[:port]`.
    InvalidHost,
    /// HTTP/1.x target in absolute form (`POST http://h/p`) or authority form: proxy forms.
    ProxyForm,
    /// HTTP/2 without `:authority`.
    MissingAuthority,
    /// HTTP/2 `Host` that is not the `:authority` (RFC 9113 §8.3.1).
    HostMismatch,
    /// A hop-by-hop header a proxy must not forward (RFC 9110 §7.6.1, RFC 2616 §13.5.1).
    KeepAlive,
    /// A hop-by-hop header a proxy must not forward (RFC 9110 §7.6.1, RFC 2616 §13.5.1).
    ProxyConnection,
    /// A hop-by-hop header a proxy must not forward (RFC 9110 §7.6.1, RFC 2616 §13.5.1).
    ProxyAuthorization,
    /// A hop-by-hop header a proxy must not forward (RFC 9110 §7.6.1, RFC 2616 §13.5.1).
    Upgrade,
    /// A hop-by-hop header a proxy must not forward (RFC 9110 §7.6.1, RFC 2616 §13.5.1).
    Trailer,
    /// `TE` with anything but `trailers`.
    Te,
    /// HTTP/1.x `Connection` naming an option other than `close` / `keep-alive`: the sender
    /// forwarded its own hop-by-hop list.
    ConnectionOption,
    /// `Connection` in HTTP/2, where it is malformed (RFC 9113 §8.2.2).
    ConnectionInH2,
    /// `Transfer-Encoding` in HTTP/2 (RFC 9113 §8.2.2).
    TransferEncodingInH2,
}

// === impl Violation ===

impl Violation {
    /// A short reason, sent as the plain-text body of the 400.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingHost => "missing Host header",
            Self::DuplicateHost => "duplicate Host header",
            Self::InvalidHost => "invalid Host header or :authority",
            Self::ProxyForm => "absolute-form request target (only proxies accept it)",
            Self::MissingAuthority => "HTTP/2 request without :authority",
            Self::HostMismatch => "Host header differs from :authority",
            Self::KeepAlive => "hop-by-hop header Keep-Alive",
            Self::ProxyConnection => "hop-by-hop header Proxy-Connection",
            Self::ProxyAuthorization => "hop-by-hop header Proxy-Authorization",
            Self::Upgrade => "hop-by-hop header Upgrade",
            Self::Trailer => "hop-by-hop header Trailer",
            Self::Te => "TE header other than trailers",
            Self::ConnectionOption => {
                "Connection header names a hop-by-hop header (only close and keep-alive are accepted)"
            }
            Self::ConnectionInH2 => "Connection header in an HTTP/2 request",
            Self::TransferEncodingInH2 => "Transfer-Encoding header in an HTTP/2 request",
        }
    }
}

/// Checks the request line (or pseudo-headers) and the headers; `Err` means answer 400.
pub fn check<B>(req: &Request<B>) -> Result<(), Violation> {
    let h2 = matches!(req.version(), Version::HTTP_2 | Version::HTTP_3);
    if h2 {
        check_h2_target(req.uri(), req.headers())?;
    } else {
        check_h1_target(req.uri(), req.headers())?;
    }
    check_hop_by_hop(req.headers(), h2)
}

/// hyper leaves an origin-form target (`/path?q`) without scheme and authority; an absolute-
/// or authority-form target keeps them.
fn check_h1_target(uri: &Uri, headers: &HeaderMap) -> Result<(), Violation> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Violation::ProxyForm);
    }
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => Err(Violation::MissingHost),
        (Some(_), Some(_)) => Err(Violation::DuplicateHost),
        (Some(host), None) if !is_host(host.as_bytes()) => Err(Violation::InvalidHost),
        (Some(_), None) => Ok(()),
    }
}

/// hyper builds the URI of an HTTP/2 request from `:scheme`, `:authority` and `:path`.
fn check_h2_target(uri: &Uri, headers: &HeaderMap) -> Result<(), Violation> {
    let Some(authority) = uri.authority() else {
        return Err(Violation::MissingAuthority);
    };
    // `Authority` parsing accepts userinfo (`user@host`), which RFC 9113 §8.3.1 forbids.
    if !is_host(authority.as_str().as_bytes()) {
        return Err(Violation::InvalidHost);
    }
    let same = |host: &HeaderValue| {
        host.as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    };
    if headers.get_all(HOST).iter().all(same) {
        Ok(())
    } else {
        Err(Violation::HostMismatch)
    }
}

fn check_hop_by_hop(headers: &HeaderMap, h2: bool) -> Result<(), Violation> {
    for name in headers.keys() {
        let violation = match name.as_str() {
            "keep-alive" => Violation::KeepAlive,
            "proxy-connection" => Violation::ProxyConnection,
            "proxy-authorization" => Violation::ProxyAuthorization,
            "upgrade" => Violation::Upgrade,
            "trailer" => Violation::Trailer,
            "te" if !all_tokens(headers.get_all(TE).iter(), |t| {
                t.eq_ignore_ascii_case(b"trailers")
            }) =>
            {
                Violation::Te
            }
            "connection" if h2 => Violation::ConnectionInH2,
            "connection"
                if !all_tokens(headers.get_all(CONNECTION).iter(), |t| {
                    t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
                }) =>
            {
                Violation::ConnectionOption
            }
            "transfer-encoding" if h2 => Violation::TransferEncodingInH2,
            _ => continue,
        };
        return Err(violation);
    }
    Ok(())
}

/// Whether every element of the comma-separated lists in `values` passes `ok`; empty list
/// elements are skipped, as RFC 9110 §5.6.1 allows.
fn all_tokens<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
    ok: impl Fn(&[u8]) -> bool,
) -> bool {
    values.into_iter().all(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|token| token.is_empty() || ok(token))
    })
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): characters of a reg-name, an IP literal or a port;
/// no userinfo, path or whitespace.
fn is_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        request(Version::HTTP_11, target, headers)
    }

    fn h2(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        request(Version::HTTP_2, target, headers)
    }

    fn request(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().version(version).uri(target);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap()
    }

    const HOST: (&str, &str) = ("host", "127.0.0.1:8000");

    #[test]
    fn accepts_what_an_origin_server_accepts() {
        let ok = [
            h1("/v1/chat/completions?x=1", &[HOST]),
            h1("/", &[("host", "mock")]),
            h1("/", &[("host", "[::1]:8000")]),
            h1("*", &[HOST]),
            h1("/", &[HOST, ("connection", "keep-alive")]),
            h1("/", &[HOST, ("connection", "Close")]),
            h1("/", &[HOST, ("connection", "close, keep-alive,")]),
            h1("/", &[HOST, ("transfer-encoding", "chunked")]),
            h1("/", &[HOST, ("te", "trailers")]),
            request(Version::HTTP_10, "/", &[HOST, ("connection", "close")]),
            h2("https://127.0.0.1:8000/v1/models", &[]),
            h2("https://127.0.0.1:8000/v1/models", &[HOST]),
            h2("https://Mock:8000/", &[("host", "mock:8000")]),
            h2("https://127.0.0.1:8000/", &[("te", "trailers")]),
        ];
        for req in ok {
            assert_eq!(check(&req), Ok(()), "{req:?}");
        }
    }

    #[test]
    fn refuses_proxy_forms_and_bad_hosts() {
        use Violation::*;
        let cases = [
            (h1("http://127.0.0.1:8000/v1/models", &[HOST]), ProxyForm),
            (h1("http://127.0.0.1:8000/v1/models", &[]), ProxyForm),
            (h1("127.0.0.1:8000", &[HOST]), ProxyForm),
            (h1("/", &[]), MissingHost),
            (request(Version::HTTP_10, "/", &[]), MissingHost),
            (h1("/", &[HOST, HOST]), DuplicateHost),
            (h1("/", &[("host", "")]), InvalidHost),
            (h1("/", &[("host", "a b")]), InvalidHost),
            (h1("/", &[("host", "user@mock")]), InvalidHost),
            (h1("/", &[("host", "mock/x")]), InvalidHost),
            (h2("/v1/models", &[HOST]), MissingAuthority),
            (h2("https://user@mock/", &[]), InvalidHost),
            (
                h2("https://127.0.0.1:8000/", &[("host", "other")]),
                HostMismatch,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check(&req), Err(want), "{req:?}");
        }
    }

    #[test]
    fn refuses_hop_by_hop_headers() {
        use Violation::*;
        let cases = [
            ("keep-alive", "timeout=5", KeepAlive),
            ("proxy-connection", "keep-alive", ProxyConnection),
            ("proxy-authorization", "Basic eDp5", ProxyAuthorization),
            ("upgrade", "h2c", Upgrade),
            ("trailer", "x-checksum", Trailer),
            ("te", "gzip", Te),
            ("te", "trailers, deflate", Te),
            ("connection", "x-foo", ConnectionOption),
            ("connection", "keep-alive, te", ConnectionOption),
        ];
        for (name, value, want) in cases {
            let req = h1("/", &[HOST, (name, value)]);
            assert_eq!(check(&req), Err(want), "{name}: {value}");
            assert!(!want.reason().is_empty());
        }

        let authority = "https://127.0.0.1:8000/";
        let cases = [
            ("connection", "keep-alive", ConnectionInH2),
            ("transfer-encoding", "chunked", TransferEncodingInH2),
            ("keep-alive", "timeout=5", KeepAlive),
            ("te", "gzip", Te),
        ];
        for (name, value, want) in cases {
            let req = h2(authority, &[(name, value)]);
            assert_eq!(check(&req), Err(want), "h2 {name}: {value}");
        }
    }

    #[test]
    fn repeated_header_values_are_all_checked() {
        let mut req = h1("/", &[HOST, ("connection", "keep-alive")]);
        req.headers_mut()
            .append(CONNECTION, HeaderValue::from_static("x-foo"));
        assert_eq!(check(&req), Err(Violation::ConnectionOption));
    }
}
