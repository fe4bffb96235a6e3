//! Requests shaped like real agent clients' (`tests/fixtures/clients/`: Claude Code on the
//! Messages API, Codex CLI on the Responses API), decoded and encoded for every backend format,
//! with one golden file per backend and focused checks of what each client depends on; and the
//! forward-compatibility rule (docs/forward-compatibility.md) in every inbound decoder.

use serde_json::{json, Value};

use crate::{
    anthropic,
    chat::{self, Dropped, Part, Role, Thinking, TranslateError, UnsupportedTools},
    openai::{self, chat::Dialect},
    responses::{self, Echo},
    sse,
    test_util::golden,
    transcode::{self as tc, BackendFormat, Transcoder},
};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/clients");

fn client_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{CLIENTS}/{name}")).unwrap()
}

fn encode(req: &chat::Request, to: BackendFormat, dialect: Dialect, model: &str) -> Value {
    let body = tc::encode_request(req, to, dialect, model)
        .unwrap_or_else(|e| panic!("{to:?}/{dialect:?}: {e}"));
    serde_json::from_slice(&body).unwrap()
}

/// The backends a translated request may go to: (golden name, format, dialect, model).
const BACKENDS: [(&str, BackendFormat, Dialect, &str); 5] = [
    (
        "openai",
        BackendFormat::OpenAiChat,
        Dialect::OpenAi,
        "gpt-5.1",
    ),
    (
        "openai_compatible",
        BackendFormat::OpenAiChat,
        Dialect::Compatible,
        "qwen3-coder",
    ),
    (
        "anthropic",
        BackendFormat::Anthropic,
        Dialect::Compatible,
        "claude-opus-4-6",
    ),
    (
        "gemini",
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini-2.5-pro",
    ),
    (
        "bedrock",
        BackendFormat::Bedrock,
        Dialect::Compatible,
        "anthropic.claude-opus-4-6-v1:0",
    ),
];

/// Whether `key` appears anywhere in `v` as an object key.
fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(key) || m.values().any(|x| has_key(x, key)),
        Value::Array(a) => a.iter().any(|x| has_key(x, key)),
        _ => false,
    }
}

const MID_SYSTEM: &str = "The user switched the permission mode to 'acceptEdits'";

// === Claude Code → every other backend ===

#[test]
fn claude_code_decodes_into_the_chat_model() {
    let body = client_fixture("claude-code-messages.json");
    let req = anthropic::decode_request(&body, "x").unwrap();
    // The system turn stays where the client put it.
    assert_eq!(req.messages[1].role, Role::System);
    assert!(matches!(&req.messages[1].content[..], [Part::Text(t)] if t.starts_with(MID_SYSTEM)));
    assert_eq!(req.system.len(), 2);
    assert_eq!(req.thinking, Some(Thinking::Adaptive));
    assert_eq!(req.effort.as_deref(), Some("high"));
    assert!(req
        .user
        .as_deref()
        .is_some_and(|u| u.starts_with("user_5f1c0a9e")));
    assert_eq!(req.tools.len(), 20);
    let mut dropped = req.dropped.names().to_vec();
    dropped.sort();
    assert_eq!(dropped, ["cache_control", "context_management"]);
}

#[test]
fn claude_code_request_to_every_other_backend() {
    let body = client_fixture("claude-code-messages.json");
    let req = anthropic::decode_request(&body, "x").unwrap();
    for (name, to, dialect, model) in BACKENDS {
        if to == BackendFormat::Anthropic {
            // Anthropic callers reach Anthropic backends by passthrough, never translated.
            continue;
        }
        let v = encode(&req, to, dialect, model);
        golden(&format!("claude_code_request_to_{name}.json"), &v);
        for gone in [
            "cache_control",
            "context_management",
            "output_config",
            "metadata",
        ] {
            assert!(!has_key(&v, gone), "{name}: {gone} in {v}");
        }
        let text = v.to_string();
        assert!(
            text.contains(MID_SYSTEM),
            "{name}: the system turn was lost"
        );
    }

    // OpenAI: the system turn in place, the effort as reasoning_effort, the user id as user.
    let v = encode(&req, BackendFormat::OpenAiChat, Dialect::OpenAi, "gpt-5.1");
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "system",
            "assistant",
            "tool",
            "assistant",
            "tool"
        ]
    );
    assert!(v["messages"][2]["content"]
        .as_str()
        .unwrap()
        .starts_with(MID_SYSTEM));
    assert!(v["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You are Claude Code"));
    assert_eq!(v["reasoning_effort"], "high");
    assert!(v["user"].as_str().unwrap().starts_with("user_5f1c0a9e"));
    assert_eq!(v["tools"].as_array().unwrap().len(), 20);
    assert_eq!(v["max_completion_tokens"], 32000);
    // A model that is not one of OpenAI's reasoning models refuses reasoning_effort: an
    // Anthropic caller's effort, which only tunes deliberation, is left out for it.
    let v = encode(&req, BackendFormat::OpenAiChat, Dialect::OpenAi, "gpt-4o");
    assert!(v.get("reasoning_effort").is_none());

    // OpenAI-compatible servers: one leading system message holding the turn.
    let v = encode(
        &req,
        BackendFormat::OpenAiChat,
        Dialect::Compatible,
        "qwen3-coder",
    );
    let systems: Vec<&Value> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .collect();
    assert_eq!(systems.len(), 1);
    assert_eq!(v["messages"][0]["role"], "system");
    assert!(v["messages"][0]["content"]
        .as_str()
        .unwrap()
        .ends_with(&format!(
            "{MID_SYSTEM}: file edits no longer need approval. Shell commands still do."
        )));
    assert!(v.get("reasoning_effort").is_none());
    let v = encode(
        &req,
        BackendFormat::OpenAiChat,
        Dialect::Compatible,
        "gpt-oss-120b",
    );
    assert_eq!(v["reasoning_effort"], "high");

    // Gemini: folded into systemInstruction, turns alternating, a budget from the effort.
    let v = encode(
        &req,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini-2.5-pro",
    );
    let parts = v["systemInstruction"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts[2]["text"].as_str().unwrap().starts_with(MID_SYSTEM));
    let roles: Vec<&str> = v["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user", "model", "user"]);
    assert_eq!(
        v["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 4096, "includeThoughts": true})
    );

    // Bedrock: folded into system; adaptive thinking as the budget every Claude takes (the
    // last tool-calling turn opens with signed thinking, so Claude accepts it).
    let v = encode(
        &req,
        BackendFormat::Bedrock,
        Dialect::Compatible,
        "anthropic.claude-opus-4-6-v1:0",
    );
    assert_eq!(v["system"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
    );
    assert_eq!(v["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["text"],
        "The user says the escaped-key test fails. I should run the test suite first to see the failure.");
}

#[test]
fn anthropic_thinking_and_effort_per_backend() {
    let decode = |extra: Value| -> chat::Request<'static> {
        let mut body = json!({"model": "m", "max_tokens": 8000,
            "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        anthropic::decode_request(body.to_string().as_bytes(), "x")
            .unwrap()
            .into_owned()
    };
    let openai = |r: &chat::Request| encode(r, BackendFormat::OpenAiChat, Dialect::OpenAi, "o3");
    let gemini = |r: &chat::Request| {
        encode(r, BackendFormat::Gemini, Dialect::Compatible, "g")["generationConfig"]
            ["thinkingConfig"]
            .clone()
    };
    let bedrock = |r: &chat::Request| {
        encode(r, BackendFormat::Bedrock, Dialect::Compatible, "c")["additionalModelRequestFields"]
            ["thinking"]
            .clone()
    };

    // A budget: the nearest effort for OpenAI, the budget itself elsewhere.
    let r = decode(json!({"thinking": {"type": "enabled", "budget_tokens": 3000}}));
    assert_eq!(openai(&r)["reasoning_effort"], "high");
    assert_eq!(gemini(&r)["thinkingBudget"], 3000);
    assert_eq!(bedrock(&r)["budget_tokens"], 3000);
    let r = decode(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}));
    assert_eq!(openai(&r)["reasoning_effort"], "low");

    // Adaptive without an effort: the model's default at OpenAI, dynamic at Gemini.
    let r = decode(json!({"thinking": {"type": "adaptive"}}));
    assert!(openai(&r).get("reasoning_effort").is_none());
    assert_eq!(gemini(&r)["thinkingBudget"], -1);
    assert_eq!(bedrock(&r)["budget_tokens"], 2048);

    // Adaptive with an effort (`max` is OpenAI's `high`).
    let r = decode(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}));
    assert_eq!(openai(&r)["reasoning_effort"], "high");
    assert_eq!(gemini(&r)["thinkingBudget"], 4096);
    let r = decode(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}));
    assert_eq!(openai(&r)["reasoning_effort"], "low");
    assert_eq!(bedrock(&r)["budget_tokens"], 1024);

    // Disabled, or an effort alone: no thinking turned on anywhere; the effort still tunes
    // an OpenAI reasoning model.
    for extra in [
        json!({"thinking": {"type": "disabled"}}),
        json!({"output_config": {"effort": "medium"}}),
    ] {
        let r = decode(extra.clone());
        assert!(gemini(&r).is_null(), "{extra}");
        assert!(bedrock(&r).is_null(), "{extra}");
    }
    let r = decode(json!({"output_config": {"effort": "medium"}}));
    assert_eq!(openai(&r)["reasoning_effort"], "medium");

    // Adaptive thinking where Claude would refuse thinking: no budget made up.
    let r = decode(json!({"thinking": {"type": "adaptive"}, "temperature": 0.2}));
    assert!(bedrock(&r).is_null());

    // Structured outputs are content: carried where the backend has them.
    let r = decode(json!({"output_config": {"format": {"type": "json_schema",
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}));
    assert_eq!(
        openai(&r)["response_format"]["json_schema"]["schema"]["properties"]["a"],
        json!({"type": "string"})
    );
    // Unknown knobs inside output_config are named.
    let r = decode(json!({"output_config": {"effort": "low", "task_budget": 10}}));
    assert_eq!(r.dropped.names(), ["output_config.task_budget"]);
}

// === Codex → every backend ===

fn codex() -> responses::Decoded<'static> {
    responses::decode_request(&client_fixture("codex-responses.json"))
        .unwrap()
        .into_owned()
}

#[test]
fn codex_decodes_into_the_chat_model() {
    let d = codex();
    let req = &d.request;
    let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "exec_command",
            "write_stdin",
            "update_plan",
            "apply_patch",
            "multi_agent_v1__spawn_agent",
            "multi_agent_v1__send_input",
            "multi_agent_v1__wait",
            "multi_agent_v1__close_agent",
            "multi_agent_v1__resume_agent",
            "view_image",
        ]
    );
    // The namespaced call in the input is named like its declaration.
    let calls: Vec<&str> = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            Part::ToolCall(c) => Some(c.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["exec_command", "multi_agent_v1__spawn_agent"]);
    // The leading developer message is the system prompt (after the instructions); the last
    // one stays in place.
    assert_eq!(req.system.len(), 2);
    assert_eq!(req.messages.last().unwrap().role, Role::System);
    assert_eq!(req.reasoning_effort.as_deref(), Some("medium"));
    let mut dropped = req.dropped.names().to_vec();
    dropped.sort();
    assert_eq!(dropped, ["prompt_cache_key"]);
    // The web search is kept for the gateway to judge per target (run, left out or refused).
    let search = req.web_search.as_ref().unwrap();
    assert_eq!(search.dropped_name(), "tools[5](web_search)");
    assert_eq!(search.refused_param(), "tools[5].type");
    // The response echoes the caller's own tools, namespace and web search included.
    let out = responses::encode_response(
        &chat::Response {
            id: "x".into(),
            model: "m".into(),
            content: vec![Part::Text("ok".into())],
            finish_reason: None,
            stop_sequence: None,
            usage: None,
        },
        &d.echo,
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["tools"][4]["type"], "namespace");
    assert_eq!(v["tools"][5]["type"], "web_search");
}

#[test]
fn codex_request_to_every_backend() {
    let d = codex();
    // As the gateway sends it on a route that runs no web search (the default): without it.
    let mut without_search = d.request.clone();
    without_search.web_search = None;
    for (name, to, dialect, model) in BACKENDS {
        let model = if to == BackendFormat::OpenAiChat && dialect == Dialect::OpenAi {
            "gpt-5.1-codex"
        } else {
            model
        };
        let v = encode(&without_search, to, dialect, model);
        golden(&format!("codex_request_to_{name}.json"), &v);
        let text = v.to_string();
        assert!(!text.contains("web_search"), "{name}: {text}");
        assert!(text.contains("multi_agent_v1__spawn_agent"), "{name}");
        assert!(text.contains("<collaboration_mode>"), "{name}");
    }

    let v = encode(
        &d.request,
        BackendFormat::OpenAiChat,
        Dialect::OpenAi,
        "gpt-5.1-codex",
    );
    assert_eq!(v["reasoning_effort"], "medium");
    assert_eq!(v["tools"].as_array().unwrap().len(), 10);
    assert_eq!(
        v["messages"][4]["tool_calls"][0]["function"]["name"],
        "multi_agent_v1__spawn_agent"
    );
    let last = v["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "system");
    assert!(last["content"]
        .as_str()
        .unwrap()
        .starts_with("<collaboration_mode>"));

    // Anthropic: the effort would turn thinking on, but the last tool-calling turn came from
    // another provider with no thinking Claude signed, so Claude would refuse it: none.
    let v = encode(
        &d.request,
        BackendFormat::Anthropic,
        Dialect::Compatible,
        "claude-opus-4-6",
    );
    assert!(v.get("thinking").is_none(), "{v}");
    assert_eq!(v["system"].as_array().unwrap().len(), 3);

    // Gemini names a function response after the call it answers: the flat name.
    let v = encode(&d.request, BackendFormat::Gemini, Dialect::Compatible, "g");
    let responses: Vec<&Value> = v["contents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["parts"].as_array().unwrap())
        .filter_map(|p| p.get("functionResponse"))
        .collect();
    assert_eq!(responses[1]["name"], "multi_agent_v1__spawn_agent");
}

// === namespaced calls back to the caller ===

fn openai_tool_call_response(name: &str) -> Vec<u8> {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"ids\":[\"a\"]}"}},
                {"id": "call_2", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    .to_string()
    .into_bytes()
}

fn anthropic_tool_call_response(name: &str) -> Vec<u8> {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": name, "input": {"ids": ["a"]}},
            {"type": "tool_use", "id": "toolu_2", "name": "exec_command", "input": {"cmd": "ls"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}})
    .to_string()
    .into_bytes()
}

#[test]
fn namespaced_calls_come_back_under_the_callers_names() {
    let d = codex();
    for (from, body) in [
        (
            BackendFormat::OpenAiChat,
            openai_tool_call_response("multi_agent_v1__wait"),
        ),
        (
            BackendFormat::Anthropic,
            anthropic_tool_call_response("multi_agent_v1__wait"),
        ),
    ] {
        let (out, _, _) = tc::response_to_responses(from, &d.echo, &body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let calls = v["output"].as_array().unwrap();
        assert_eq!(calls[0]["type"], "function_call");
        assert_eq!(calls[0]["name"], "wait", "{from:?}");
        assert_eq!(calls[0]["namespace"], "multi_agent_v1");
        assert_eq!(calls[1]["name"], "exec_command");
        assert!(calls[1].get("namespace").is_none());

        // The items sent back in the next request reach the backend under the flat name again.
        let mut next: Value =
            serde_json::from_slice(&client_fixture("codex-responses.json")).unwrap();
        let input = next["input"].as_array_mut().unwrap();
        input.push(calls[0].clone());
        input.push(json!({"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "done"}));
        let again = responses::decode_request(next.to_string().as_bytes())
            .unwrap()
            .into_owned();
        let v = encode(
            &again.request,
            BackendFormat::OpenAiChat,
            Dialect::OpenAi,
            "gpt-5.1",
        );
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(
            msgs[msgs.len() - 2]["tool_calls"][0]["function"]["name"],
            "multi_agent_v1__wait"
        );
    }
}

/// The Responses stream a Codex caller gets from an upstream stream.
fn responses_stream(from: BackendFormat, echo: &Echo, input: &[u8]) -> Vec<Value> {
    let mut t = Transcoder::for_responses(from, echo.clone());
    let mut parser = sse::Parser::new();
    parser.push(input).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = parser.next_event() {
        t.on_event(&ev.data, &mut out);
    }
    t.finish(&mut out);
    let mut p = sse::Parser::new();
    p.push(&out).unwrap();
    let mut events = Vec::new();
    while let Some(e) = p.next_event() {
        events.push(serde_json::from_slice(&e.data).unwrap());
    }
    events
}

#[test]
fn namespaced_calls_come_back_under_the_callers_names_in_streams() {
    let d = codex();
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let openai = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "multi_agent_v1__send_input", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"id\":\"a\",\"message\":\"go\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let anthropic_stream = [
        ("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c", "content": [], "stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 0}}})),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "multi_agent_v1__send_input", "input": {}}})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"id\":\"a\",\"message\":\"go\"}"}})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 5}})),
        ("message_stop", json!({"type": "message_stop"})),
    ]
    .iter()
    .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
    .collect::<String>();
    for (from, input) in [
        (BackendFormat::OpenAiChat, openai),
        (BackendFormat::Anthropic, anthropic_stream),
    ] {
        let events = responses_stream(from, &d.echo, input.as_bytes());
        let items: Vec<&Value> = events
            .iter()
            .filter(|e| {
                matches!(
                    e["type"].as_str(),
                    Some("response.output_item.added" | "response.output_item.done")
                )
            })
            .map(|e| &e["item"])
            .collect();
        assert_eq!(items.len(), 2, "{from:?}: {events:?}");
        for item in items {
            assert_eq!(item["name"], "send_input", "{from:?}");
            assert_eq!(item["namespace"], "multi_agent_v1");
        }
        let done = events.last().unwrap();
        assert_eq!(done["type"], "response.completed");
        assert_eq!(done["response"]["output"][0]["name"], "send_input");
        assert_eq!(done["response"]["output"][0]["namespace"], "multi_agent_v1");
        assert_eq!(
            done["response"]["output"][0]["arguments"],
            "{\"id\":\"a\",\"message\":\"go\"}"
        );
    }
}

// === the forward-compatibility rule, in every decoder ===

#[test]
fn unknown_top_level_fields_are_dropped_and_named() {
    let oai = openai::chat::decode_request(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":7,"prompt_cache_key":"k","some_new_knob":{"a":1},"stream_options":{"include_usage":true},"n":1,"top_k":5}"#,
        "anthropic",
    )
    .unwrap();
    let mut names = oai.dropped.names().to_vec();
    names.sort();
    assert_eq!(names, ["prompt_cache_key", "seed", "some_new_knob"]);
    assert_eq!(oai.top_k, Some(5));

    let ant = anthropic::decode_request(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"service_tier":"auto","speed":"fast","context_management":{"edits":[]}}"#,
        "openai",
    )
    .unwrap();
    let mut names = ant.dropped.names().to_vec();
    names.sort();
    assert_eq!(names, ["context_management", "service_tier", "speed"]);

    let resp = responses::decode_request(
        br#"{"model":"m","input":"hi","store":false,"metadata":{"a":"b"},"include":["reasoning.encrypted_content"],"service_tier":"flex","text":{"verbosity":"low"},"truncation":"auto","new_thing":true}"#,
    )
    .unwrap();
    let mut names = resp.request.dropped.names().to_vec();
    names.sort();
    assert_eq!(
        names,
        ["new_thing", "service_tier", "text.verbosity", "truncation"]
    );
}

#[test]
fn content_the_backend_cannot_carry_is_refused_and_named() {
    let oai = |body: &str| {
        openai::chat::decode_request(body.as_bytes(), "anthropic").map(chat::Request::into_owned)
    };
    for (body, param) in [
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#,
            "n",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"hologram"}]}]}"#,
            "messages[0].content[0].type",
        ),
    ] {
        assert_eq!(oai(body).unwrap_err().param(), param);
    }
    fn ant(body: &str) -> Result<chat::Request<'_>, TranslateError> {
        anthropic::decode_request(body.as_bytes(), "openai")
    }
    for (body, param) in [
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"mcp_servers":[{}]}"#,
            "mcp_servers",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"hologram"}]}]}"#,
            "messages[0].content[0].type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"code_execution_20250825","name":"code_execution"}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"system","content":[{"type":"image","source":{"type":"url","url":"http://x/a.png"}}]}]}"#,
            "messages[1].content[0]",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"tool","content":"hi"}]}"#,
            "messages[0].role",
        ),
    ] {
        assert_eq!(ant(body).unwrap_err().param(), param, "{body}");
    }
    // Client-run Anthropic tools are refused without calling them server tools.
    let e = ant(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"bash_20250124","name":"bash"}]}"#).unwrap_err();
    assert!(!e.to_string().contains("server"), "{e}");
    let resp = |body: Value| {
        responses::decode_request(body.to_string().as_bytes()).map(responses::Decoded::into_owned)
    };
    for (tool, param) in [
        (
            json!({"type": "custom", "name": "apply_patch"}),
            "tools[0].type",
        ),
        (json!({"type": "local_shell"}), "tools[0].type"),
        (
            json!({"type": "namespace", "name": "ns", "tools": [{"type": "custom", "name": "x"}]}),
            "tools[0].tools[0].type",
        ),
        (json!({"type": "hologram"}), "tools[0].type"),
    ] {
        let e = resp(json!({"model": "m", "input": "hi", "tools": [tool]})).unwrap_err();
        assert_eq!(e.param(), param);
        assert!(matches!(e, TranslateError::Refused { .. }));
        // Tools the client runs are never called built-in (nor hosted).
        assert!(!e.to_string().contains("built-in"), "{e}");
        assert!(!e.to_string().contains("OpenAI's servers"), "{e}");
    }
}

#[test]
fn web_search_becomes_the_backends_own_search() {
    // The same search asked for in each caller format.
    let location = chat::UserLocation {
        city: Some("Paris".into()),
        country: Some("FR".into()),
        ..Default::default()
    };
    let responses_req = responses::decode_request(
        json!({"model": "m", "input": "news?", "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}},
            {"type": "web_search", "search_context_size": "low", "external_web_access": false,
             "filters": {"allowed_domains": ["example.org"]},
             "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
    .into_owned()
    .request;
    let search = responses_req.web_search.clone().unwrap();
    assert_eq!(
        (search.param.as_str(), search.kind.as_str()),
        ("tools[1]", "web_search")
    );
    assert_eq!(search.allowed_domains, ["example.org"]);
    assert_eq!(search.user_location, Some(location.clone()));
    assert!(responses_req.dropped.is_empty());
    let anthropic_body = json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "news?"}], "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2, "blocked_domains": ["spam.example"],
             "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}}]})
    .to_string();
    let anthropic_req = anthropic::decode_request(anthropic_body.as_bytes(), "t").unwrap();
    let search = anthropic_req.web_search.clone().unwrap();
    assert_eq!(search.dropped_name(), "tools[0](web_search_20250305)");
    assert_eq!(
        (search.max_uses, search.blocked_domains.as_slice()),
        (Some(2), &["spam.example".to_string()][..])
    );
    assert!(anthropic_req.tools.is_empty());
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "news?"}],
           "web_search_options": {"user_location": {"type": "approximate", "approximate": {"city": "Paris", "country": "FR"}}}})
    .to_string();
    let chat_req = openai::chat::decode_request(body.as_bytes(), "t").unwrap();
    let search = chat_req.web_search.clone().unwrap();
    assert_eq!(search.dropped_name(), "web_search_options");
    assert_eq!(search.refused_param(), "web_search_options");
    assert_eq!(search.user_location, Some(location));

    // Anthropic: its server-side web search tool, after the function tools.
    let v = encode(
        &responses_req,
        BackendFormat::Anthropic,
        Dialect::OpenAi,
        "claude",
    );
    assert_eq!(v["tools"][0]["name"], "f");
    assert_eq!(
        v["tools"][1],
        json!({"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["example.org"],
               "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}})
    );
    let v = encode(
        &anthropic_req,
        BackendFormat::Anthropic,
        Dialect::OpenAi,
        "claude",
    );
    assert_eq!(v["tools"][0]["max_uses"], 2);
    assert_eq!(v["tools"][0]["blocked_domains"], json!(["spam.example"]));
    assert!(v.get("tool_choice").is_none());
    // Gemini: Google Search grounding, beside the function declarations or alone; it has no
    // setting for the options, which the gateway names as dropped.
    let v = encode(
        &responses_req,
        BackendFormat::Gemini,
        Dialect::OpenAi,
        "gem",
    );
    assert_eq!(v["tools"][0]["functionDeclarations"][0]["name"], "f");
    assert_eq!(v["tools"][1], json!({"google_search": {}}));
    let v = encode(&chat_req, BackendFormat::Gemini, Dialect::OpenAi, "gem");
    assert_eq!(v["tools"], json!([{"google_search": {}}]));
    assert_eq!(
        anthropic_req
            .web_search
            .as_ref()
            .unwrap()
            .options_lost_on(BackendFormat::Gemini),
        [
            "web_search.max_uses",
            "web_search.blocked_domains",
            "web_search.user_location"
        ]
    );
    assert!(anthropic_req
        .web_search
        .as_ref()
        .unwrap()
        .options_lost_on(BackendFormat::Anthropic)
        .is_empty());
    // Only those two run one.
    assert!(chat::WebSearch::runs_on(BackendFormat::Anthropic));
    assert!(chat::WebSearch::runs_on(BackendFormat::Gemini));
    assert!(!chat::WebSearch::runs_on(BackendFormat::OpenAiChat));
    assert!(!chat::WebSearch::runs_on(BackendFormat::Bedrock));
}

#[test]
fn hosted_tools_follow_the_routes_policy() {
    let body = client_fixture("codex-responses.json");
    let dropped = responses::decode_request(&body).unwrap();
    assert!(dropped.request.web_search.is_some());
    let e = dropped.reject_unsupported_tools().unwrap_err();
    assert_eq!(e.param(), "tools[5].type");
    let e2 = responses::decode_request_with(&body, UnsupportedTools::Reject).unwrap_err();
    assert_eq!(e, e2);
    assert!(e.to_string().contains("web search") && !e.to_string().contains("built-in"));
    // Without hosted tools there is nothing to refuse.
    let plain = responses::decode_request(br#"{"model":"m","input":"hi"}"#).unwrap();
    assert!(plain.reject_unsupported_tools().is_ok());
}

#[test]
fn system_turns_anywhere_in_openai_and_responses_input() {
    let req = openai::chat::decode_request(
        br#"{"model":"m","messages":[{"role":"system","content":"A"},{"role":"user","content":"u"},{"role":"developer","content":"B"},{"role":"assistant","content":"a"}]}"#,
        "anthropic",
    )
    .unwrap();
    assert_eq!(req.system, [Part::Text("A".into())]);
    assert_eq!(req.messages[1].role, Role::System);
    let v = encode(&req, BackendFormat::Anthropic, Dialect::Compatible, "c");
    assert_eq!(
        v["system"],
        json!([{"type": "text", "text": "A"}, {"type": "text", "text": "B"}])
    );
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    // Around a removed system turn, user turns join up.
    let req = responses::decode_request(
        br#"{"model":"m","input":[{"role":"user","content":"1"},{"role":"developer","content":"D"},{"role":"user","content":"2"}]}"#,
    )
    .unwrap()
    .request;
    let v = encode(&req, BackendFormat::Bedrock, Dialect::Compatible, "c");
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"text": "1"}, {"text": "2"}]}])
    );
    assert_eq!(v["system"], json!([{"text": "D"}]));
    let v = encode(&req, BackendFormat::OpenAiChat, Dialect::OpenAi, "gpt-4.1");
    assert_eq!(v["messages"][1], json!({"role": "system", "content": "D"}));
}

#[test]
fn dropped_names_are_safe_header_values() {
    let mut d = Dropped::default();
    d.push("a,b\r\nc");
    d.push("a,b\r\nc");
    d.push(&"x".repeat(100));
    assert_eq!(d.names()[0], "a?b??c");
    assert_eq!(d.names().len(), 2);
    assert_eq!(d.names()[1].len(), Dropped::MAX_NAME);
    for i in 0..40 {
        d.push(&format!("f{i}"));
    }
    assert_eq!(d.names().len(), Dropped::MAX_NAMES);
    let h = d.header_value();
    assert!(h.ends_with(", ..."));
    assert!(h.bytes().all(|b| (b' '..=b'~').contains(&b)), "{h}");
}
