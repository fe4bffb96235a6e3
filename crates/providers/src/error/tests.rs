use super::*;

#[test]
fn renders_openai_shape() {
    let e = OpenAiError {
        message: "The model `x` does not exist",
        source: ErrorSource::Caller,
        code: "model_not_found",
        param: Some("model"),
    };
    let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    assert!(e.to_sse_event().starts_with(b"data: {\"error\""));
}

#[test]
fn parses_upstream_errors() {
    let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    assert_eq!(
        parse_openai_error(body),
        Some((
            "Rate limit reached".into(),
            Some("rate_limit_exceeded".into())
        ))
    );
    assert_eq!(parse_openai_error(b"<html>"), None);
}

/// nginx's own page for `return 400;` (1.18–1.26), byte for byte.
const NGINX_400: &str = "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
const NGINX_403: &str = "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Status, content type, `x-amzn-ErrorType`, body → who wrote it, its class and its code.
type Case = (
    u16,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    ErrorOrigin,
    UpstreamClass,
    Option<&'static str>,
);

/// Whose error each answer is, by status, body, content type and `x-amzn-ErrorType`:
/// a provider's own error keeps its status's meaning (a 400 is the caller's); a body no
/// provider wrote is never the caller's, and is summarized, never relayed.
#[test]
fn reads_upstream_errors_by_who_wrote_them() {
    use ErrorOrigin::{Intermediary, Provider};
    use UpstreamClass::*;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // The providers' own errors, whatever the content type says.
        (400, Some("application/json"), None,
         r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#,
         Provider, Caller, Some("invalid_value")),
        (400, Some("application/json"), None,
         r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
         Provider, Caller, Some("invalid_request_error")),
        (529, Some("application/json"), None,
         r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
         Provider, Overloaded, Some("overloaded_error")),
        (400, Some("application/json; charset=UTF-8"), None,
         r#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#,
         Provider, Caller, Some("INVALID_ARGUMENT")),
        (400, Some("application/json"), None,
         r#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#,
         Provider, KeyRejected, Some("API_KEY_INVALID")),
        (400, None, Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
         r#"{"message":"Malformed input request"}"#,
         Provider, Caller, Some("ValidationException")),
        (401, Some("application/json"), None, r#"{"error":"Unauthorized"}"#,
         Provider, KeyRejected, None),
        // An invalid key, in each provider's words, is the key's problem; a key that may not
        // do this (a model, a scope) is the request's, whatever the status.
        (401, Some("application/json"), None,
         r#"{"error":{"message":"Incorrect API key provided: sk-abc***","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
         Provider, KeyRejected, Some("invalid_api_key")),
        (401, Some("application/json"), None,
         r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
         Provider, KeyRejected, Some("authentication_error")),
        (401, Some("application/json"), None,
         r#"{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: model.request.","type":"invalid_request_error","param":null,"code":null}}"#,
         Provider, Caller, Some("invalid_request_error")),
        (403, Some("application/json"), None,
         r#"{"error":{"message":"Project `proj_1` does not have access to model `gpt-5`","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
         Provider, Caller, Some("model_not_found")),
        (403, Some("application/json"), None,
         r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
         Provider, Caller, Some("permission_error")),
        (403, None, Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
         r#"{"message":"You don't have access to the model with the specified model ID."}"#,
         Provider, Caller, Some("AccessDeniedException")),
        (403, None, Some("UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/"),
         r#"{"message":"The security token included in the request is invalid."}"#,
         Provider, KeyRejected, Some("UnrecognizedClientException")),
        (403, Some("application/json"), None,
         r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED","details":[{"reason":"API_KEY_SERVICE_BLOCKED"}]}}"#,
         Provider, KeyRejected, Some("API_KEY_SERVICE_BLOCKED")),
        (403, Some("application/json"), None, r#"{"error":{"message":"Forbidden"}}"#,
         Provider, Caller, None),
        (422, Some("application/json"), None,
         r#"{"error":"Input validation error: `top_p` must be > 0.0","error_type":"validation"}"#,
         Provider, Caller, Some("validation")),
        (400, Some("text/html"), None,
         r#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#,
         Provider, Caller, Some("invalid_request_error")),
        // Anything else came from between the gateway and the provider.
        (400, Some("text/html"), None, NGINX_400, Intermediary, Upstream, None),
        (403, Some("text/html"), None, NGINX_403, Intermediary, Upstream, None),
        (404, Some("application/json"), None, r#"{"detail":"Not Found"}"#,
         Intermediary, Upstream, None),
        (407, Some("text/html"), None, "<html><head><title>407 Proxy Authentication Required</title></head></html>",
         Intermediary, Upstream, None),
        (301, Some("text/html"), None, "<html><head><title>301 Moved Permanently</title></head></html>",
         Intermediary, Upstream, None),
        (400, Some("text/plain; charset=utf-8"), None, "request without Host", Intermediary, Upstream, None),
        (400, None, None, "", Intermediary, Upstream, None),
        (401, Some("text/html"), None, "<html><title>401 Authorization Required</title></html>",
         Intermediary, KeyRejected, None),
        (429, Some("text/plain"), None, "Too Many Requests", Intermediary, RateLimited, None),
        (502, Some("text/html"), None, "<html><title>502 Bad Gateway</title></html>",
         Intermediary, Upstream, None),
        (503, Some("text/html"), None, "<html><title>503 Service Temporarily Unavailable</title></html>",
         Intermediary, Overloaded, None),
    ];
    for &(status, content_type, aws, body, origin, class, code) in cases {
        let e = read_upstream_error(status, body.as_bytes(), content_type, aws, "openai");
        let case = format!("{status} {content_type:?} {body}");
        assert_eq!(e.origin, origin, "{case}");
        assert_eq!(e.class, class, "{case}");
        assert_eq!(e.code.as_deref(), code, "{case}");
        if origin == Intermediary {
            assert!(e.message.starts_with("with "), "{case}: {}", e.message);
            assert!(
                e.message.len() < 200 && !e.message.contains('<'),
                "{case}: {}",
                e.message
            );
        }
    }
}

#[test]
fn summarizes_a_body_no_provider_wrote() {
    let summary = |status, content_type, body: &str| {
        read_upstream_error(status, body.as_bytes(), content_type, None, "anthropic").message
    };
    assert_eq!(
        summary(400, Some("text/html"), NGINX_400),
        format!(
            "with a body that is not anthropic's error format (text/html, {} bytes): \"400 Bad Request\"",
            NGINX_400.len()
        )
    );
    assert_eq!(
        summary(
            403,
            Some("text/html; charset=utf-8"),
            "<HTML><HEAD><TITLE> Access\n denied </TITLE>"
        ),
        "with a body that is not anthropic's error format (text/html, 43 bytes): \"Access denied\""
    );
    // No title: the text without tags; no content type: the body still tells HTML apart.
    assert_eq!(
        summary(400, None, "<html><body><h1>Request\r\n  blocked</h1><p>id 42</p></body></html>"),
        "with a body that is not anthropic's error format (no content type, 65 bytes): \"Request blocked id 42\""
    );
    assert_eq!(
        summary(400, Some("text/plain"), "  bad \t request \n"),
        "with a body that is not anthropic's error format (text/plain, 17 bytes): \"bad request\""
    );
    assert_eq!(
        summary(400, Some("text/html"), ""),
        "with an empty body (text/html) instead of anthropic's error format"
    );
    assert_eq!(
        summary(400, Some("text/html"), "<html><body></body></html>"),
        "with a body that is not anthropic's error format (text/html, 26 bytes)"
    );
    // A long body is cut at 100 characters, on a character boundary.
    let long = "é".repeat(300);
    let s = summary(400, Some("text/plain"), &long);
    let quoted = s.split_once(": \"").unwrap().1;
    assert_eq!(quoted, format!("{}…\"", "é".repeat(100)));
    let words = "word ".repeat(100);
    let s = summary(400, Some("text/plain"), &words);
    assert!(s.ends_with("…\""), "{s}");
    assert_eq!(s.split_once(": \"").unwrap().1.chars().count(), 102, "{s}");
    // Bytes that are not UTF-8 do no harm.
    let e = read_upstream_error(
        400,
        b"\xff\xfe bad",
        Some("application/octet-stream"),
        None,
        "gemini",
    );
    assert!(
        e.message
            .ends_with("(application/octet-stream, 6 bytes): \"\u{fffd}\u{fffd} bad\""),
        "{}",
        e.message
    );
}
