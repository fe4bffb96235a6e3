use super::*;

fn decode(body: &str) -> Result<Request<'_>, DecodeError> {
    Request::decode(Operation::ChatCompletions, body.as_bytes())
}

#[test]
fn rewrites_model_and_keeps_other_fields_verbatim() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.5,"x_vendor":{"a":[1,2]}}"#;
    let req = decode(body).unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert!(!req.stream);
    let out = String::from_utf8(req.encode("mock-model")).unwrap();
    assert_eq!(
        out,
        r#"{"model":"mock-model","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.5,"x_vendor":{"a":[1,2]}}"#
    );
}

#[test]
fn streams_always_ask_for_usage() {
    let req = decode(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
    assert!(req.stream && !req.client_wants_usage);
    let v: serde_json::Value = serde_json::from_slice(&req.encode("u")).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);

    let req = decode(
        r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}"#,
    )
    .unwrap();
    assert!(!req.client_wants_usage);
    let v: serde_json::Value = serde_json::from_slice(&req.encode("u")).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["stream_options"]["include_obfuscation"], false);

    let req = decode(
        r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .unwrap();
    assert!(req.client_wants_usage);
}

#[test]
fn escaped_keys_and_models_survive() {
    let req = decode(r#"{"mo\u0064el":"a\u00e9","messages":[]}"#).unwrap();
    assert_eq!(req.model, "aé");
    let v: serde_json::Value = serde_json::from_slice(&req.encode("x\"y")).unwrap();
    assert_eq!(v["model"], "x\"y");
}

#[test]
fn decode_errors_name_the_parameter() {
    assert!(matches!(decode("{"), Err(DecodeError::Json(_))));
    assert!(matches!(decode("[1]"), Err(DecodeError::Json(_))));
    assert_eq!(
        decode(r#"{"messages":[]}"#).err(),
        Some(DecodeError::Missing("model"))
    );
    assert_eq!(
        decode(r#"{"model":"m"}"#).err(),
        Some(DecodeError::Missing("messages"))
    );
    assert_eq!(
        decode(r#"{"model":3,"messages":[]}"#)
            .err()
            .and_then(|e| e.param()),
        Some("model")
    );
    assert_eq!(
        decode(r#"{"model":"m","messages":[],"stream":"yes"}"#)
            .err()
            .and_then(|e| e.param()),
        Some("stream")
    );
    assert_eq!(
        Request::decode(
            Operation::Embeddings,
            br#"{"model":"m","input":"x","stream":true}"#
        )
        .err(),
        Some(DecodeError::StreamUnsupported)
    );
}

#[test]
fn reads_usage_from_responses_and_chunks() {
    let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}}}"#;
    assert_eq!(
        inspect_response(body).usage,
        Some(Usage {
            input_tokens: 12,
            output_tokens: 5,
            cached_input_tokens: 4,
            cache_write_tokens: 0,
        })
    );
    // Cache writes as this gateway and OpenRouter write them; DeepSeek's cache hits.
    let body = br#"{"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":6}}}"#;
    assert_eq!(inspect_response(body).usage.unwrap().cache_write_tokens, 6);
    let body = br#"{"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_cache_hit_tokens":8,"prompt_cache_miss_tokens":4}}"#;
    assert_eq!(inspect_response(body).usage.unwrap().cached_input_tokens, 8);
    let c = inspect_chunk(
        br#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
    );
    assert!(c.has_content && !c.usage_only && c.usage.is_none() && !c.finished);
    let c = inspect_chunk(br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
    assert!(c.finished && !c.has_content);
    let c = inspect_chunk(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#);
    assert!(c.usage_only);
    assert_eq!(c.usage.unwrap().output_tokens, 2);
    let c = inspect_chunk(br#"{"choices":[{"index":0,"text":"hi","finish_reason":null}]}"#);
    assert!(c.has_content);
}

#[test]
fn the_usage_and_finish_scan_never_misses_what_a_parse_finds() {
    let cases: &[&[u8]] = &[
        br#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
        br#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason" : null}]}"#,
        br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        br#"{"choices":[{"index":0,"delta":{},"finish_reason" :
            "length"}]}"#,
        br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        br#"{"choices":[],"usage"	:	{"prompt_tokens":3,"completion_tokens":2}}"#,
        // The names as string values, or escaped inside content, are not keys.
        br#"{"choices":[{"delta":{"content":"usage"},"finish_reason":null}]}"#,
        br#"{"choices":[{"delta":{"content":"say \"usage\": 1, \"finish_reason\":\"x\""}}]}"#,
        br#"{"choices":[{"delta":{"content":"finish_reason"}}],"usage":null}"#,
        br#"{"choices":[{"delta":{"content":"Hi"}}]}"#,
        // A null first and a live one later.
        br#"{"choices":[{"delta":{},"finish_reason":null},{"delta":{},"finish_reason":"stop"}]}"#,
    ];
    for data in cases {
        let parsed = inspect_chunk(data);
        let live = parsed.usage.is_some() || parsed.finish_reason.is_some();
        if live {
            assert!(
                may_carry_usage_or_finish(data),
                "missed {}",
                String::from_utf8_lossy(data)
            );
        }
    }
    assert!(!may_carry_usage_or_finish(cases[0]));
    assert!(!may_carry_usage_or_finish(cases[1]));
    assert!(!may_carry_usage_or_finish(cases[6]));
    assert!(!may_carry_usage_or_finish(cases[7]));
    assert!(!may_carry_usage_or_finish(cases[8]));
    assert!(may_carry_usage_or_finish(cases[10]));
}

#[test]
fn inspect_response_reads_what_a_full_parse_reads() {
    // The reference: the whole document decoded.
    fn parsed(body: &[u8]) -> ResponseInfo {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        ResponseInfo {
            usage: v
                .get("usage")
                .filter(|u| !u.is_null())
                .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
                .map(Usage::from),
            finish_reason: v["choices"].as_array().and_then(|cs| {
                cs.iter()
                    .find_map(|c| c["finish_reason"].as_str().map(str::to_string))
            }),
            well_formed: true,
            response_id: None,
        }
    }
    let fixture = crate::test_util::fixture("openai/response.json");
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&fixture).unwrap())
            .unwrap();
    let cases: Vec<&[u8]> = vec![
        &fixture,
        &pretty,
        br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"say \"usage\":{\"prompt_tokens\":9} and \"finish_reason\":\"x\" {[}]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        br#"{"choices":[{"finish_reason":null,"message":{"usage":{"prompt_tokens":99}}},{"finish_reason":"length"}],"usage":null}"#,
        br#"{"choices":[{"message":{"content":"\\"},"finish_reason":"tool_calls"}],"usa\u0067e":{"prompt_tokens":1,"completion_tokens":2}}"#,
        br#" {"usage" : {"completion_tokens" : 7 , "prompt_tokens":5} , "choices" : [ ] } "#,
        br#"{"object":"chat.completion","choices":[{"index":0,"message":{"content":"\u00e9\ud83d\ude00"},"logprobs":{"content":[{"token":"]","logprob":-0.1,"bytes":[93]}]},"finish_reason":"content_filter"}]}"#,
        br#"{}"#,
        // Counts the walk does not read itself go to serde_json, whose verdict stands.
        br#"{"usage":{"prompt_tokens":1.0,"completion_tokens":2}}"#,
        br#"{"usage":{"prompt_tokens":null,"completion_tokens":2}}"#,
        br#"{"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":null}}"#,
        br#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":null,"audio_tokens":0}}}"#,
        br#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1e2}}}"#,
        br#"{"usage":{"prompt_tokens":12345678901234567890}}"#,
        br#"{"usage":[1,2]}"#,
        // Usage is read in place: whatever path its reading takes, the walk goes on after it.
        br#"{"usage":{"prompt_tokens_details":{"cached_tokens":2},"prompt_tokens":4},"choices":[{"finish_reason":"length"}]}"#,
        br#"{"usage":{"prompt_tokens":1.5},"choices":[{"finish_reason":"stop"}]}"#,
        br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":7},"choices":[{"finish_reason":"stop"}]}"#,
        br#"{"usage":null , "choices":[{"finish_reason":"stop"}]}"#,
        br#"{"usage":"none","choices":[{"finish_reason":"stop"}]}"#,
    ];
    for body in cases {
        assert_eq!(
            inspect_response(body),
            parsed(body),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A repeated count is refused by serde_json (no usage), and so here.
    let repeated = br#"{"usage":{"prompt_tokens":3,"prompt_tokens":4}}"#;
    assert!(serde_json::from_slice::<WireUsage>(&repeated[9..repeated.len() - 1]).is_err());
    assert_eq!(inspect_response(repeated).usage, None);
    // A document that is not an object has nothing to read; nothing panics.
    for body in [&b""[..], b"[]", b"null", b"{\"usage\":", b"<html>"] {
        assert_eq!(inspect_response(body), ResponseInfo::default());
    }
    // A body cut short, or with anything after the object, is not well-formed: whatever was
    // read before the fault is still reported.
    let whole = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[{"finish_reason":"stop","message":{"content":"hello"}}]}"#;
    assert!(inspect_response(whole).well_formed);
    for cut in [whole.len() - 1, whole.len() / 2, 10] {
        let info = inspect_response(&whole[..cut]);
        assert!(!info.well_formed, "{cut}");
    }
    let info = inspect_response(&whole[..whole.len() - 20]);
    assert!(info.usage.is_some() && !info.well_formed);
    let mut trailing = whole.to_vec();
    trailing.extend_from_slice(b" <html>");
    assert!(!inspect_response(&trailing).well_formed);
    let mut inner = whole.to_vec();
    let at = inner.len() - 10;
    inner[at] = b'\x01';
    assert!(!inspect_response(&inner).well_formed);
}

/// The one-pass chat decoder accepts exactly the bodies a `Value` parse accepts, and refuses
/// the others with its words: the pieces it keeps raw are checked as a parse would.
#[test]
fn chat_decode_accepts_what_a_value_parse_accepts() {
    use crate::chat::TranslateError;
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let msg = |content: &str| {
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":{content}}}]}}"#)
    };
    let assistant = |field: &str| {
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","content":"a",{field}}}]}}"#
        )
    };
    let tool = |function: &str| {
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{function}}}]}}"#
        )
    };
    let bodies = [
        msg(r#""lone \ud800 surrogate""#),
        msg(r#""pair \ud83d\ude00 ok""#),
        msg(r#"[{"type":"text","text":"lone \udc00"}]"#),
        msg(r#"[{"type":"text","text":"x","extra":1e400}]"#),
        msg(r#"[{"type":"text","text":"a","text":"b"}]"#),
        msg(r#"[{"type":"text","text":"a","text":null}]"#),
        msg(r#"[{"type":"text","text":5}]"#),
        msg(r#"[{"type":"text","text":[[1e400]]}]"#),
        msg(r#"[5, {"type":"text","text":"x"}]"#),
        msg(r#"{"a":1e400}"#),
        msg("1e400"),
        msg("null"),
        msg(&format!(
            r#"[{{"type":"text","text":"x","z":{}}}]"#,
            deep(122)
        )),
        msg(&format!(
            r#"[{{"type":"text","text":"x","z":{}}}]"#,
            deep(123)
        )),
        msg(&format!(r#"[{{"type":"text","text":{}}}]"#, deep(122))),
        msg(&format!(r#"[{{"type":"text","text":{}}}]"#, deep(123))),
        msg(&format!(r#"[{}]"#, deep(123))),
        msg(&format!(r#"[{}]"#, deep(124))),
        msg(&deep(125)),
        msg(&deep(126)),
        assistant(r#""reasoning_content":"r \ud800""#),
        assistant(r#""reasoning_content":[1e400]"#),
        assistant(&format!(r#""reasoning_content":{}"#, deep(125))),
        assistant(&format!(r#""reasoning_content":{}"#, deep(126))),
        assistant(r#""tool_calls":[{"id":"c","type":1e400,"function":{"name":"f"}}]"#),
        assistant(r#""tool_calls":[{"id":"\ud800","function":{"name":"f"}}]"#),
        assistant(r#""tool_calls":[{"function":{"name":"f","x":[1e400]}}]"#),
        assistant(r#""tool_calls":[{"function":{"name":"f","arguments":"\udc00"}}]"#),
        assistant(&format!(
            r#""tool_calls":[{{"function":{{"name":"f","x":{}}}}}]"#,
            deep(121)
        )),
        assistant(&format!(
            r#""tool_calls":[{{"function":{{"name":"f","x":{}}}}}]"#,
            deep(122)
        )),
        assistant(&format!(r#""tool_calls":[{{"function":{}}}]"#, deep(123))),
        assistant(&format!(r#""tool_calls":[{{"function":{}}}]"#, deep(124))),
        assistant(r#""role":"assistant","tool_call_id":[1e400]"#),
        tool(r#"{"name":"t","description":"\ud800"}"#),
        tool(r#"{"name":"t","description":{"a":1e400}}"#),
        tool(r#"{"name":"t","parameters":{"type":"object","x":1e400}}"#),
        tool(r#"{"name":"t","parameters":{"type":"object","x":"\udc00"}}"#),
        tool(&format!(
            r#"{{"name":"t","parameters":{{"a":{}}}}}"#,
            deep(121)
        )),
        tool(&format!(
            r#"{{"name":"t","parameters":{{"a":{}}}}}"#,
            deep(122)
        )),
        tool(&format!(
            r#"{{"name":"t","parameters":{{"a":{}}}}}"#,
            deep(123)
        )),
        tool(&format!("[{}]", deep(123))),
        tool(&format!("[{}]", deep(124))),
        tool("null"),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1e400}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]} trailing"#.into(),
        r#"[1, 2]"#.into(),
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\u{80}\"}]}".into(),
    ];
    let mut refused = 0;
    for body in &bodies {
        let by_value = serde_json::from_str::<serde_json::Value>(body);
        let decoded = chat::decode_request(body.as_bytes(), "anthropic");
        match (&by_value, &decoded) {
            (Err(e), Err(d)) => {
                refused += 1;
                assert_eq!(
                    d.to_string(),
                    format!("invalid request: the body is not valid JSON: {e}"),
                    "{body}"
                )
            }
            (Ok(_), Err(TranslateError::Invalid { message, .. })) => {
                assert!(!message.contains("not valid JSON"), "{body}: {message}")
            }
            (Ok(_), _) => {}
            (Err(e), Ok(_)) => panic!("{body}: accepted, but a Value parse says {e}"),
        }
    }
    assert!(refused >= 14, "{refused}");
    // Invalid UTF-8 outside any string, and inside one.
    for body in [&b"{\"model\":\"m\",\xff}"[..], b"{\"model\":\"m\xff\"}"] {
        let e = serde_json::from_slice::<serde_json::Value>(body).unwrap_err();
        assert_eq!(
            chat::decode_request(body, "anthropic")
                .unwrap_err()
                .to_string(),
            format!("invalid request: the body is not valid JSON: {e}")
        );
    }
}

/// The per-quote scan `may_carry_usage_or_finish` replaced: the reference it must agree with.
fn per_quote_scan(data: &[u8]) -> bool {
    fn skip_ws(b: &[u8]) -> &[u8] {
        let n = b
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        &b[n..]
    }
    // Every quote is a candidate start; a chunk has a few dozen. (A `memmem` searcher costs
    // more to set up than this whole scan on a 200-byte chunk.)
    memchr::memchr_iter(b'"', data).any(|at| {
        let rest = &data[at + 1..];
        let after = if let Some(r) = rest.strip_prefix(b"usage\"") {
            r
        } else if let Some(r) = rest.strip_prefix(b"finish_reason\"") {
            r
        } else {
            return false;
        };
        match skip_ws(after).split_first() {
            Some((b':', value)) => !skip_ws(value).starts_with(b"null"),
            _ => false,
        }
    })
}

#[test]
fn usage_or_finish_scan_answers_as_the_per_quote_scan() {
    let cases: &[&[u8]] = &[
        br#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        br#"{"choices":[{"index":0,"delta":{},"finish_reason" :
        "length"}]}"#,
        br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        br#"{"choices":[],"usage"	:	{"prompt_tokens":3}}"#,
        br#"{"choices":[{"delta":{"content":"usage"},"finish_reason":null}]}"#,
        br#"{"choices":[{"delta":{"content":"say \"usage\": 1, \"finish_reason\":\"x\""}}]}"#,
        br#"{"choices":[{"delta":{"content":"finish_reason"}}],"usage":null}"#,
        br#"{"choices":[{"delta":{},"finish_reason":null},{"delta":{},"finish_reason":"stop"}]}"#,
        br#""usage"usage":1"#,
        br#""usage":"#,
        br#""usage""#,
        b"",
    ];
    for data in cases {
        assert_eq!(
            may_carry_usage_or_finish(data),
            per_quote_scan(data),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    // Random documents made of the pieces that matter.
    let pieces: &[&[u8]] = &[
        b"\"usage\"",
        b"\"finish_reason\"",
        b"\"",
        b":",
        b" ",
        b"\t",
        b"\n",
        b"null",
        b"nul",
        b"{",
        b"}",
        b",",
        b"1",
        b"\\",
        b"usage",
        b"x",
    ];
    let mut rng = fastrand::Rng::with_seed(21);
    for _ in 0..20_000 {
        let doc: Vec<u8> = (0..rng.usize(0..12))
            .flat_map(|_| pieces[rng.usize(0..pieces.len())].iter().copied())
            .collect();
        assert_eq!(
            may_carry_usage_or_finish(&doc),
            per_quote_scan(&doc),
            "{}",
            String::from_utf8_lossy(&doc)
        );
    }
}

#[test]
fn the_rewrite_sends_the_callers_own_bytes_around_its_edits() {
    use crate::rewrite::Piece;
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"a\\u00e9\"} ],\n \"model\":\"m\" , \"stream\":true,\"stream_options\":{\"include_obfuscation\":false} }\n";
    let req = decode(body).unwrap();
    let r = req.rewrite("u", Some(("max_completion_tokens", 9)));
    let out = String::from_utf8(r.to_vec(body.as_bytes())).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["stream_options"]["include_obfuscation"], false);
    let so = out.find("\"stream_options\":").unwrap();
    assert_eq!(
        &out[..so],
        "{\"max_completion_tokens\":9, \"messages\" : [ {\"role\":\"user\",\"content\":\"a\\u00e9\"} ],\n \"model\":\"u\" , \"stream\":true,"
    );
    assert!(out.ends_with("} }\n"), "{out}");
    // The prompt is a piece of the caller's body, not a copy.
    let messages = body.find('[').unwrap();
    assert!(r
        .pieces()
        .iter()
        .any(|p| matches!(p, Piece::Caller(c) if c.contains(&messages))));

    // A stream without `stream_options` gets it last; every `model` is rewritten.
    let body = "{\"model\":\"a\",\"messages\":[],\"model\":\"b\",\"stream\":true} ";
    let out = decode(body).unwrap().encode("u");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"model\":\"u\",\"messages\":[],\"model\":\"u\",\"stream\":true,\"stream_options\":{\"include_usage\":true}} "
    );
}

#[test]
fn a_body_the_fast_split_leaves_to_serde_is_rewritten_in_place_too() {
    // Nested past the walk's depth: split by serde_json, whose values borrow the body too.
    let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
    let body = format!("{{\"model\":\"m\",\"messages\":{deep}}}");
    let req = decode(&body).unwrap();
    let r = req.rewrite("u", None);
    assert_eq!(r.pieces().len(), 3, "{:?}", r.pieces());
    assert_eq!(
        String::from_utf8(r.to_vec(body.as_bytes())).unwrap(),
        body.replacen("\"m\"", "\"u\"", 1)
    );
}

#[test]
fn a_reserved_cap_replaces_the_callers_null_instead_of_sitting_beside_it() {
    // `"max_tokens": null` is no cap of the caller's, so the budget's cap is sent; beside the
    // null as a second `max_tokens`, upstreams would read the last one, the null.
    let body = r#"{"model":"m","max_tokens":null,"messages":[{"role":"user","content":"hi"}],"max_tokens" : null}"#;
    let req = decode(body).unwrap();
    assert_eq!(req.max_tokens, None);
    let cap = Some(("max_tokens", 64));
    let want = r#"{"model":"u","max_tokens":64,"messages":[{"role":"user","content":"hi"}],"max_tokens" : 64}"#;
    let spliced = String::from_utf8(req.rewrite("u", cap).to_vec(body.as_bytes())).unwrap();
    assert_eq!(spliced, want);
    // The field-by-field fallback says the same: fields split from a copy cannot be placed
    // in the body, so the rewrite is written out whole.
    let copy = body.to_string();
    let fields = split_fields(copy.as_bytes()).unwrap();
    let whole = edit_fields(body.as_bytes(), &fields, "u", cap, req.stream);
    assert!(whole
        .pieces()
        .iter()
        .all(|p| matches!(p, crate::rewrite::Piece::Ours(_))));
    let whole: serde_json::Value = serde_json::from_slice(&whole.to_vec(b"")).unwrap();
    assert_eq!(
        whole,
        serde_json::from_str::<serde_json::Value>(want).unwrap()
    );
    // Another format's passthrough (a Responses request) too; without the field in the
    // body the cap is added first, as before.
    let cap = Some(("max_output_tokens", 64));
    for (body, want) in [
        (
            r#"{"model":"m","input":"hi","max_output_tokens":null}"#,
            r#"{"model":"u","input":"hi","max_output_tokens":64}"#,
        ),
        (
            r#"{"model":"m","input":"hi"}"#,
            r#"{"max_output_tokens":64,"model":"u","input":"hi"}"#,
        ),
    ] {
        let fields = split_fields(body.as_bytes()).unwrap();
        let out = model_only(body.as_bytes(), &fields, "u", cap).to_vec(body.as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn the_field_by_field_fallback_writes_what_the_spliced_rewrite_sends() {
    for (body, cap) in [
        (r#"{"model":"m","messages":[],"stream":true}"#, None),
        (
            r#"{"stream_options":{"x":1},"model":"m","messages":[],"stream":true}"#,
            Some(("max_tokens", 5)),
        ),
        (
            r#"{"model":"m","messages":[],"max_tokens":null}"#,
            Some(("max_tokens", 5)),
        ),
        (
            r#"{"messages":[],"model":"m"}"#,
            Some(("max_completion_tokens", 5)),
        ),
    ] {
        let req = decode(body).unwrap();
        let spliced = req.rewrite("u", cap).to_vec(body.as_bytes());
        // Fields split from a copy cannot be placed in the body: written out whole.
        let copy = body.to_string();
        let fields = split_fields(copy.as_bytes()).unwrap();
        let whole = edit_fields(body.as_bytes(), &fields, "u", cap, req.stream).to_vec(b"");
        let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(json(&whole), json(&spliced), "{body}");
        assert_eq!(
            whole.iter().filter(|&&b| b == b',').count(),
            spliced.iter().filter(|&&b| b == b',').count(),
            "{body}"
        );
    }
}

/// The walk over a body (`wire::parse`'s fast path) decodes exactly what the one-pass serde
/// parse decodes, and refuses with the same error.
#[test]
fn walk_decodes_as_serde_parse() {
    let bodies: Vec<String> = vec![
        include_str!("../../../../bench/bodies/openai-70k-model-last.json").into(),
        r#"{"model":"m","messages":[{"role":"system","content":"be \"brief\" \u00e9"},{"role":"user","content":[{"type":"text","text":"h\ni","extra":[1]},{"type":"image_url","image_url":{"url":"u"}},5,[1,[2]],null]},{"role":"assistant","content":null,"reasoning_content":"r\t","tool_calls":[{"id":"c\u0031","type":"function","function":{"name":"n","arguments":"{\"a\":1}","x":[1]}},{"id":"c2","function":[1]},{"id":5,"function":"s"}]},{"role":"tool","tool_call_id":"c1","content":"ok\ud83d\ude00"},{"ro\u006ce":"user","content":"k","role":"user"}],"tools":[{"type":"function","function":{"name":"n","description":"d\"","parameters":{"type":"object","properties":{"a\n":{"enum":[1e5,-0.5]}}},"strict":true}},{"type":"function","function":[1]},[2],{"type":"function","function":{"name":"m","parameters":null,"description":5}}],"temperature":0.5,"stream":true}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":null}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"x":[1e400]}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi",}]}"#.into(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]} x"#.into(),
        r#"{"model":"m","messages":[{"role":5,"content":"hi"}]}"#.into(),
        r#"{"model":"m","messages":"text"}"#.into(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        // The valid ones are walked, not handed back to serde.
        let walk = crate::anthropic::wire::parse_walk::<crate::openai::wire::Top>(body.as_bytes());
        assert_eq!(walk.is_some(), !(3..7).contains(&i), "{body}");
        let walked = crate::openai::chat::decode_request(body.as_bytes(), "anthropic");
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(true));
        let parsed = crate::openai::chat::decode_request(body.as_bytes(), "anthropic");
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(false));
        assert_eq!(walked, parsed, "{body}");
    }
}

/// The chat request encoder, which writes a `json::Out` tree, writes what the serde-derived
/// encoder it replaced wrote (kept as `chat::reference`), byte for byte, and fails alike.
#[test]
fn request_encoder_writes_as_the_serde_encoder_did() {
    use crate::chat::{self, Json, Part, Role, Str, Thinking, ToolChoice};
    use crate::openai::chat::{encode_request, reference, Dialect};
    use crate::transcode::{decode_request, Format};
    let anthropic_body = r#"{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"be \"brief\"\n"},{"type":"text","text":""},{"type":"text","text":"second \u00e9"}],"messages":[
        {"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]},
        {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig"},{"type":"text","text":""},{"type":"tool_use","id":"t1","name":"read","input":{"path":"/a\"b","n":[1,2.5,null,{"z":true,"a":"\u0001"}]}},{"type":"tool_use","id":"t2","name":"ls","input":{}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"oops"},{"type":"text","text":" more"}],"is_error":true},{"type":"tool_result","tool_use_id":"t2","content":"Error already","is_error":true},{"type":"tool_result","tool_use_id":"t3"},{"type":"text","text":"and?"}]},
        {"role":"system","content":"mid \t system"},
        {"role":"assistant","content":"plain answer"},
        {"role":"user","content":"again"}],
        "tools":[{"name":"read","description":"Reads \"files\"","input_schema":{"type":"object","properties":{"path":{"type":"string"}}}},{"name":"ls","input_schema":{"type":"object"}}],
        "tool_choice":{"type":"tool","name":"read","disable_parallel_tool_use":true},
        "temperature":0.7,"top_p":0.9,"top_k":5,"stop_sequences":["END","\"q\""],"stream":true,"metadata":{"user_id":"u-1"},
        "thinking":{"type":"enabled","budget_tokens":2048}}"#;
    let openai_body = r#"{"model":"gpt","messages":[{"role":"developer","content":"dev"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"b\": 1, \"a\": [1.50, 1e3]}"}},{"id":"c2","type":"function","function":{"name":"g","arguments":"not json"}},{"id":"c3","type":"function","function":{"name":"h","arguments":""}}]},{"role":"tool","tool_call_id":"c1","content":"r1"},{"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"r2"}]},{"role":"system","content":"late"},{"role":"user","content":"go"}],
        "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"},"strict":true}},{"type":"function","function":{"name":"g","strict":false}}],
        "tool_choice":"required","parallel_tool_calls":false,"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{"type":"object"},"strict":true}},
        "stop":"x","user":"me","reasoning_effort":"low","max_completion_tokens":9,"temperature":2,"top_p":1e-3}"#;
    let openai_json_mode = r#"{"model":"o3-mini","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}],"safety_identifier":"s"}"#;
    let sources: Vec<(Format, Vec<u8>)> = vec![
        (
            Format::Anthropic,
            include_bytes!("../../../../bench/bodies/claude-code.json").to_vec(),
        ),
        (
            Format::Responses,
            include_bytes!("../../../../bench/bodies/codex.json").to_vec(),
        ),
        (
            Format::OpenAiChat,
            include_bytes!("../../../../bench/bodies/openai-70k-model-last.json").to_vec(),
        ),
        (
            Format::Anthropic,
            crate::test_util::fixture("anthropic/request.json"),
        ),
        (
            Format::OpenAiChat,
            crate::test_util::fixture("openai/request.json"),
        ),
        (
            Format::Responses,
            crate::test_util::fixture("responses/request.json"),
        ),
        (Format::Anthropic, anthropic_body.as_bytes().to_vec()),
        (Format::OpenAiChat, openai_body.as_bytes().to_vec()),
        (Format::OpenAiChat, openai_json_mode.as_bytes().to_vec()),
    ];
    let mut requests: Vec<chat::Request<'_>> = sources
        .iter()
        .map(|(f, b)| decode_request(*f, "openai", b).unwrap())
        .collect();
    // What no decoder makes: plain texts, a schema as a value, odd numbers, an image in an
    // assistant turn and a tool call in a user turn (both refused), adaptive thinking.
    let mut odd = chat::Request {
        model: "gpt-5".into(),
        system: vec![Part::Text(Str::from("sys \"q\"\n"))],
        messages: vec![chat::Message {
            role: Role::User,
            content: vec![Part::Text(Str::from("ctl \u{1} text"))],
        }],
        tools: vec![chat::Tool {
            name: "n\"".into(),
            description: Some(Str::from("desc\n")),
            parameters: Json::Value(serde_json::json!({"type": "object", "x": [1.5, -0.0]})),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Auto),
        temperature: Some(f64::NAN),
        top_p: Some(f64::INFINITY),
        thinking: Some(Thinking::Adaptive),
        effort: Some("high".into()),
        ..Default::default()
    };
    requests.push(odd.clone());
    odd.temperature = Some(-0.0);
    odd.top_p = Some(1e300);
    odd.thinking = Some(Thinking::Budget(5000));
    odd.effort = None;
    requests.push(odd.clone());
    for (role, part) in [
        (Role::Assistant, Part::Image(chat::Image::Url("u".into()))),
        (
            Role::User,
            Part::ToolCall(chat::ToolCall {
                id: "i".into(),
                name: "n".into(),
                arguments: Default::default(),
            }),
        ),
        (
            Role::User,
            Part::ToolResult {
                id: "i".into(),
                content: vec![Part::Image(chat::Image::Url("u".into()))],
                is_error: false,
            },
        ),
    ] {
        let mut r = odd.clone();
        r.messages.push(chat::Message {
            role,
            content: vec![Part::Text(Str::from("t")), part],
        });
        requests.push(r);
    }
    let mut compared = 0;
    for req in &requests {
        for dialect in [Dialect::OpenAi, Dialect::Compatible] {
            for model in ["upstream-model", "o3-mini", "gpt-5"] {
                let new = encode_request(req, model, dialect);
                let old = reference::encode_request(req, model, dialect);
                match (&new, &old) {
                    (Ok(n), Ok(o)) => assert_eq!(
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(o),
                        "{model} {dialect:?}"
                    ),
                    _ => assert_eq!(new, old),
                }
                compared += usize::from(new.is_ok());
            }
        }
    }
    assert!(compared >= 60, "{compared}");
}
