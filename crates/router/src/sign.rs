//! Per-request signing of upstream calls, for providers whose credentials are not a header
//! to copy but a signature over each request (AWS SigV4 for Bedrock: it covers the method,
//! path, signed headers, body hash and a timestamp, so it is made just before sending).
//! Built when the table is compiled; the data plane only calls [`RequestSigner::sign`].

use std::{fmt, time::SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{sign, SignableBody, SignableRequest, SigningSettings},
    sign::v4,
};
use aws_smithy_runtime_api::client::identity::Identity;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// How a backend's requests are signed.
pub enum RequestSigner {
    /// AWS Signature Version 4.
    Sigv4(Sigv4),
}

/// SigV4 settings and credentials of one backend.
pub struct Sigv4 {
    region: String,
    service: &'static str,
    identity: Identity,
}

// The credentials stay out of every Debug output (logs, `/debug/routes`, panics).
impl fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestSigner::Sigv4(s) => f
                .debug_struct("Sigv4")
                .field("region", &s.region)
                .field("service", &s.service)
                .field("credentials", &"<redacted>")
                .finish(),
        }
    }
}

impl RequestSigner {
    /// SigV4 for `service` in `region`.
    pub fn sigv4(
        region: &str,
        service: &'static str,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> Self {
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token.map(str::to_string),
            None,
            "switchyard-secret",
        );
        RequestSigner::Sigv4(Sigv4 {
            region: region.to_string(),
            service,
            identity: creds.into(),
        })
    }

    /// Signs a finished request: adds `host` (so the one sent is the one signed),
    /// `x-amz-date`, `x-amz-security-token` when there is a session token, and
    /// `authorization`. Only `host` and `content-type` are signed among the other headers, so
    /// that headers added or rewritten on the way (trace context, a proxy's) cannot break the
    /// signature. `uri` must be percent-encoded exactly as it is sent.
    pub fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let RequestSigner::Sigv4(s) = self;
        // The signature covers the Host that is sent: the caller's when it set one.
        if !headers.contains_key(header::HOST) {
            let authority = uri.authority().ok_or("the upstream URI has no host")?;
            let host = HeaderValue::try_from(authority.as_str()).map_err(|e| e.to_string())?;
            headers.insert(header::HOST, host);
        }
        let signed: Vec<(&str, &str)> = ["host", "content-type"]
            .into_iter()
            .filter_map(|n| Some((n, headers.get(n)?.to_str().ok()?)))
            .collect();
        let params = v4::SigningParams::builder()
            .identity(&s.identity)
            .region(&s.region)
            .name(s.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let request = SignableRequest::new(
            method.as_str(),
            uri.to_string(),
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let (new_headers, _query) = instructions.into_parts();
        for h in new_headers {
            let name = HeaderName::try_from(h.name()).map_err(|e| e.to_string())?;
            let mut value = HeaderValue::try_from(h.value()).map_err(|e| e.to_string())?;
            value.set_sensitive(h.sensitive() || name == header::AUTHORIZATION);
            headers.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_credentials_send_their_token_and_nothing_secret_is_printed() {
        let s = RequestSigner::sigv4(
            "eu-west-1",
            "bedrock",
            "ASIAEXAMPLE",
            "secret-access-key-value",
            Some("session-token-value"),
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let uri: Uri = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m%3A0/converse"
            .parse()
            .unwrap();
        s.sign(&Method::POST, &uri, &mut h, b"{}").unwrap();
        assert_eq!(h["x-amz-security-token"], "session-token-value");
        assert!(h["x-amz-security-token"].is_sensitive());
        let auth = h[header::AUTHORIZATION].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        let debug = format!("{s:?} {h:?}");
        assert!(!debug.contains("secret-access-key-value"), "{debug}");
        assert!(!debug.contains("session-token-value"), "{debug}");
    }
}
