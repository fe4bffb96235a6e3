use super::*;

/// Drains a plan into parsed events; `None` stands for `[DONE]`, `Err(())` for a reset.
fn events(plan: &mut StreamPlan) -> Vec<Result<Option<Value>, ()>> {
    let mut out = Vec::new();
    while let Some(event) = plan.next_event() {
        out.push(match event {
            StreamEvent::Reset => Err(()),
            StreamEvent::Frame(bytes) => {
                let text = std::str::from_utf8(&bytes).unwrap();
                let data = text
                    .strip_prefix("data: ")
                    .and_then(|t| t.strip_suffix("\n\n"))
                    .unwrap_or_else(|| panic!("not an SSE event: {text:?}"));
                Ok(match data {
                    "[DONE]" => None,
                    json => Some(serde_json::from_str(json).unwrap()),
                })
            }
        });
    }
    assert!(plan.is_end());
    out
}

fn frames(events: &[Result<Option<Value>, ()>]) -> Vec<&Value> {
    events
        .iter()
        .filter_map(|e| e.as_ref().ok().and_then(Option::as_ref))
        .collect()
}

#[test]
fn chat_stream_without_usage() {
    let completion = Completion::new(Api::Chat, "gpt-x", 10, 3, None);
    let expected_text = completion.text();
    let id = completion.id.clone();
    let events = events(&mut completion.into_stream(false, None));

    assert_eq!(events.len(), 1 + 3 + 1 + 1, "role, content, finish, [DONE]");
    assert_eq!(events.last(), Some(&Ok(None)));
    let chunks = frames(&events);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["model"], "gpt-x");
        assert_eq!(chunk["system_fingerprint"], SYSTEM_FINGERPRINT);
        assert!(
            chunk.get("usage").is_none(),
            "no usage key without include_usage"
        );
        assert_eq!(chunk["choices"][0]["index"], 0);
        assert!(chunk["choices"][0]["logprobs"].is_null());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        serde_json::json!({"role": "assistant", "content": ""})
    );
    let streamed: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected_text);
    assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[4]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn chat_stream_with_usage_and_length_limit() {
    let completion = Completion::new(Api::Chat, "m", 7, 8, Some(2));
    let events = events(&mut completion.into_stream(true, None));

    assert_eq!(
        events.len(),
        1 + 2 + 1 + 1 + 1,
        "role, content, finish, usage, [DONE]"
    );
    let chunks = frames(&events);
    for chunk in &chunks[..4] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
    }
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    let last = chunks[4];
    assert_eq!(last["choices"], serde_json::json!([]));
    assert_eq!(
        last["usage"],
        serde_json::json!({
            "prompt_tokens": 7,
            "completion_tokens": 2,
            "total_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        })
    );
}

#[test]
fn text_stream_matches_buffered_text() {
    let completion = Completion::new(Api::Text, "instruct", 1, 20, None);
    let body: Value = serde_json::from_slice(&completion.to_json().unwrap()).unwrap();
    let events = events(&mut completion.into_stream(true, None));

    let chunks = frames(&events);
    assert_eq!(chunks.len(), 20 + 1 + 1);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(body["choices"][0]["text"].as_str().unwrap(), streamed);
    assert_eq!(chunks[20]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[21]["usage"]["completion_tokens"], 20);
    assert_eq!(events.last(), Some(&Ok(None)));
}

#[test]
fn reset_cuts_before_done() {
    let plan = |reset| Completion::new(Api::Chat, "m", 1, 4, None).into_stream(true, reset);

    let cut = events(&mut plan(Some(2)));
    assert_eq!(cut.len(), 1 + 2 + 1, "role, two content chunks, reset");
    assert_eq!(cut.last(), Some(&Err(())));

    // Beyond the reply's length it still cuts, just before the finish chunk.
    let late = events(&mut plan(Some(100)));
    assert_eq!(late.len(), 1 + 4 + 1);
    assert_eq!(late.last(), Some(&Err(())));
}

#[test]
fn chat_completion_body() {
    let completion = Completion::new(Api::Chat, "gpt-x", 5, 3, Some(3));
    let body: Value = serde_json::from_slice(&completion.to_json().unwrap()).unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == "chatcmpl-".len() + ID_LEN);
    assert!(id["chatcmpl-".len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-x");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &body["choices"][0];
    assert_eq!(
        choice["finish_reason"], "stop",
        "max_tokens == chunks is not a cut"
    );
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Mock reply from");
    assert_eq!(body["usage"]["total_tokens"], 8);
}

#[test]
fn embedding_base64_round_trip() {
    let input = EmbeddingInput::Text("hello");
    let vector = input.vector(16);
    assert_eq!(
        vector,
        EmbeddingInput::Text("hello").vector(16),
        "deterministic"
    );
    assert_ne!(vector, EmbeddingInput::Text("hellp").vector(16));
    let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encode_base64(&vector))
        .unwrap();
    let floats: Vec<f32> = decoded
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(floats, vector);
}

#[test]
fn embeddings_body() {
    let tokens = [serde_json::json!(1), serde_json::json!(2)];
    let inputs = [
        EmbeddingInput::Text("abcdefgh"),
        EmbeddingInput::Tokens(&tokens),
    ];
    let body: Value =
        serde_json::from_slice(&embeddings_json("emb", &inputs, 4, EncodingFormat::Float).unwrap())
            .unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb");
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(
        body["usage"],
        serde_json::json!({"prompt_tokens": 4, "total_tokens": 4})
    );

    let body: Value = serde_json::from_slice(
        &embeddings_json("emb", &inputs, 4, EncodingFormat::Base64).unwrap(),
    )
    .unwrap();
    assert_eq!(
        body["data"][0]["embedding"],
        encode_base64(&inputs[0].vector(4))
    );
}

#[test]
fn error_envelope() {
    let body: Value = serde_json::from_slice(&ApiError::invalid_api_key().to_bytes()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }})
    );
    let limited = ApiError::injected(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (limited.kind, limited.code),
        ("rate_limit_error", Some("rate_limit_exceeded"))
    );
    assert_eq!(
        ApiError::injected(StatusCode::BAD_GATEWAY).kind,
        "server_error"
    );
    assert_eq!(
        ApiError::injected(StatusCode::BAD_REQUEST).kind,
        "invalid_request_error"
    );
}
