//! `POST /v1/responses` (and Azure's `/openai/v1/responses`) in OpenAI's Responses wire format:
//! the same text as the chat endpoints (`x-mock-chunks` pieces, cut by `max_output_tokens`),
//! or a function call when function tools are offered and the input does not end with a
//! call's output; plain or streamed as the API streams (`response.created`, the item's
//! deltas, `response.completed` with usage). Unknown fields are accepted, as OpenAI does.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::faults::Knobs;
use crate::openai::{self, ApiError};

/// The whole answer: the response object, or its stream's SSE frames.
pub enum Answer {
    Json(Bytes),
    Frames(VecDeque<Bytes>),
}

/// The responses this server stored (`store` not false), per API key, as OpenAI keeps them
/// per project: a `previous_response_id` is found only under the key that made it, so a
/// continuation sent with another key or to another server is refused as the API refuses
/// it (400 `previous_response_not_found`). Bounded: the oldest are forgotten first.
#[derive(Debug, Default)]
pub struct Stored {
    inner: Mutex<StoredInner>,
}

#[derive(Debug, Default)]
struct StoredInner {
    ids: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

/// Responses kept before the oldest is forgotten.
const MAX_STORED: usize = 100_000;

impl Stored {
    fn contains(&self, key: &str, id: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ids.contains(&(key.to_string(), id.to_string()))
    }

    fn insert(&self, key: &str, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (key.to_string(), id.to_string());
        if inner.ids.insert(entry.clone()) {
            inner.order.push_back(entry);
        }
        while inner.order.len() > MAX_STORED {
            if let Some(old) = inner.order.pop_front() {
                inner.ids.remove(&old);
            }
        }
    }
}

/// Plans the answer to a Responses request; `stored` is the server's store and the key the
/// request came with.
pub fn respond(
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
    (stored, key): (&Stored, &str),
) -> Result<Answer, ApiError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(ApiError::missing_model)?;
    if let Some(previous) = body.get("previous_response_id").filter(|v| !v.is_null()) {
        let Some(previous) = previous.as_str() else {
            return Err(ApiError::invalid_type("previous_response_id", "a string"));
        };
        if !stored.contains(key, previous) {
            return Err(ApiError::previous_response_not_found(previous));
        }
    }
    let input = body.get("input").cloned().unwrap_or(Value::Null);
    let prompt_tokens = openai::estimate_tokens(input.to_string().chars().count());
    let answered = input
        .as_array()
        .and_then(|a| a.last())
        .is_some_and(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"));
    // Function tools, those grouped in a `namespace` named `{namespace}__{name}` (as the
    // gateway names them for chat backends, so `x-mock-tool-call` picks either way).
    let mut functions = Vec::new();
    let mut namespaced = Vec::new();
    for t in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => functions.push(t.clone()),
            Some("namespace") => {
                let ns = t.get("name").and_then(Value::as_str).unwrap_or_default();
                for f in t
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    let flat = format!("{ns}__{name}");
                    let mut f = f.clone();
                    f["name"] = flat.clone().into();
                    functions.push(f);
                    namespaced.push((flat, ns.to_string(), name.to_string()));
                }
            }
            _ => {}
        }
    }
    let call = (!answered)
        .then(|| {
            crate::tools::choose(
                Some(&Value::Array(functions)),
                "parameters",
                tool_header,
                knobs.tool_args.as_ref(),
            )
        })
        .flatten();
    let id = format!("resp_mock{:016x}", fastrand::u64(..));
    if body.get("store").and_then(Value::as_bool) != Some(false) {
        stored.insert(key, &id);
    }
    let (pieces, status): (Vec<String>, &str) = match &call {
        Some(c) => (c.pieces.clone(), "completed"),
        None => {
            let max = body.get("max_output_tokens").and_then(Value::as_u64);
            let n = match max {
                Some(m) if m < u64::from(knobs.chunks) => u32::try_from(m).unwrap_or(0),
                _ => knobs.chunks,
            };
            let status = if n < knobs.chunks {
                "incomplete"
            } else {
                "completed"
            };
            (
                (0..n).map(|i| openai::piece(i).to_string()).collect(),
                status,
            )
        }
    };
    let output_tokens = match &call {
        Some(c) => c.pieces.len() as u64,
        None => pieces.len() as u64,
    };
    let item_id = format!("{}_{}", if call.is_some() { "fc" } else { "msg" }, &id[5..]);
    let whole = pieces.concat();
    let item = |done: bool| match &call {
        Some(c) => {
            let mut item = json!({
                "id": item_id, "type": "function_call",
                "status": if done { "completed" } else { "in_progress" },
                "call_id": c.id, "name": c.name,
                "arguments": if done { whole.as_str() } else { "" },
            });
            if let Some((_, ns, name)) = namespaced.iter().find(|(flat, ..)| *flat == c.name) {
                item["namespace"] = ns.as_str().into();
                item["name"] = name.as_str().into();
            }
            item
        }
        None => json!({
            "id": item_id, "type": "message", "role": "assistant",
            "status": if done { "completed" } else { "in_progress" },
            "content": if done {
                json!([{"type": "output_text", "text": whole, "annotations": [], "logprobs": []}])
            } else {
                json!([])
            },
        }),
    };
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        let mut r = json!({
            "id": id, "object": "response", "created_at": openai::unix_now(),
            "status": status, "background": false, "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "model": model, "output": output, "usage": usage,
        });
        // The request's settings are echoed, as the API does, with its defaults.
        let defaults = json!({
            "metadata": {}, "parallel_tool_calls": true, "store": true,
            "reasoning": {"effort": null, "summary": null},
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "truncation": "disabled",
        });
        for k in [
            "instructions",
            "max_output_tokens",
            "metadata",
            "parallel_tool_calls",
            "previous_response_id",
            "reasoning",
            "store",
            "temperature",
            "text",
            "tool_choice",
            "tools",
            "top_p",
            "truncation",
            "user",
        ] {
            r[k] = body
                .get(k)
                .filter(|v| !v.is_null())
                .or_else(|| defaults.get(k))
                .cloned()
                .unwrap_or(Value::Null);
        }
        r
    };
    let usage = json!({
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + output_tokens,
    });
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let r = response(status, vec![item(true)], usage);
        return serde_json::to_vec(&r)
            .map(|v| Answer::Json(Bytes::from(v)))
            .map_err(|_| ApiError::internal());
    }
    let mut events = vec![
        json!({"type": "response.created", "response": response("in_progress", vec![], Value::Null)}),
        json!({"type": "response.in_progress", "response": response("in_progress", vec![], Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": item(false)}),
    ];
    match &call {
        Some(_) => {
            for p in &pieces {
                events.push(json!({"type": "response.function_call_arguments.delta",
                    "item_id": item_id, "output_index": 0, "delta": p}));
            }
            events.push(json!({"type": "response.function_call_arguments.done",
                "item_id": item_id, "output_index": 0, "arguments": whole}));
        }
        None => {
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
            events.push(
                json!({"type": "response.content_part.added", "item_id": item_id,
                "output_index": 0, "content_index": 0, "part": part("")}),
            );
            for p in &pieces {
                events.push(
                    json!({"type": "response.output_text.delta", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
                );
            }
            events.push(
                json!({"type": "response.output_text.done", "item_id": item_id,
                "output_index": 0, "content_index": 0, "text": whole, "logprobs": []}),
            );
            events.push(
                json!({"type": "response.content_part.done", "item_id": item_id,
                "output_index": 0, "content_index": 0, "part": part(&whole)}),
            );
        }
    }
    events
        .push(json!({"type": "response.output_item.done", "output_index": 0, "item": item(true)}));
    let last = if status == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.push(json!({"type": last, "response": response(status, vec![item(true)], usage)}));
    Ok(Answer::Frames(
        events
            .into_iter()
            .enumerate()
            .map(|(n, mut e)| {
                e["sequence_number"] = n.into();
                let kind = e["type"].as_str().unwrap_or_default().to_string();
                Bytes::from(format!("event: {kind}\ndata: {e}\n\n"))
            })
            .collect(),
    ))
}
