"""The gateway seen through the official OpenAI Python SDK.

The SDK talks to the gateway; the gateway talks to `switchyard-mock`. Each test checks what the
SDK gets back and, through the mock's request log, what the gateway actually sent upstream.
"""

from __future__ import annotations

import base64
import re
import struct
import time

import openai
import pytest

from conftest import (
    collect_chat_stream,
    CALLER_KEY,
    RATE_LIMIT_RETRY_AFTER,
    ROUTE_MODELS,
    UPSTREAM_KEY,
)

MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Say something, please."},
]


def only_request(upstream, path: str) -> dict:
    recs = upstream.requests(path)
    assert len(recs) == 1, f"expected exactly one upstream request to {path}, got {recs!r}"
    return recs[0]


def assert_upstream_auth(rec: dict) -> None:
    headers = rec["headers"]
    assert headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
    leaked = {k: v for k, v in headers.items() if CALLER_KEY in v}
    assert not leaked, f"the caller's key reached the upstream: {leaked}"


def finish_reasons(chunks) -> list:
    return [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason is not None]


# === 1. non-streaming chat ===


def test_chat_completion(client, upstream):
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert resp.object == "chat.completion"
    assert resp.model == "mock-model", "the response should name the upstream (rewritten) model"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content, "empty content"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    rec = only_request(upstream, "/v1/chat/completions")
    assert rec["method"] == "POST"
    assert rec["body"]["model"] == "mock-model"
    assert rec["body"]["messages"] == MESSAGES
    assert "stream_options" not in rec["body"]
    assert_upstream_auth(rec)
    # The SDK's own headers stay at the gateway: it does not forward client headers.
    sdk_headers = [k for k in rec["headers"] if k.startswith("x-stainless")]
    assert not sdk_headers, f"client headers reached the upstream: {sdk_headers}"
    assert rec["headers"].get("user-agent", "").startswith("switchyard/")


def test_caller_request_id_is_echoed(client, upstream):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "req-e2e-42"}
    )
    assert raw.headers.get("x-request-id") == "req-e2e-42"
    assert raw.parse().choices[0].message.content
    assert only_request(upstream, "/v1/chat/completions")["headers"]["x-request-id"] == "req-e2e-42"


# === 2. streaming chat ===


def test_chat_stream_without_usage(client, upstream):
    expected = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    upstream.clear()

    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text, chunks = collect_chat_stream(stream)

    assert len(chunks) > 1
    assert text == expected.choices[0].message.content
    assert finish_reasons(chunks) == ["stop"]
    assert all(c.model == "mock-model" for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    carrying = [c for c in chunks if c.usage is not None]
    assert not carrying, f"the client did not ask for usage but got it: {carrying}"
    assert all(c.choices for c in chunks), "a chunk without choices reached the client"

    rec = only_request(upstream, "/v1/chat/completions")
    assert rec["body"]["stream"] is True
    assert rec["body"]["model"] == "mock-model"
    assert rec["body"]["stream_options"]["include_usage"] is True, (
        "the gateway should ask the upstream for usage on every stream"
    )
    assert rec["headers"].get("accept") == "text/event-stream"
    assert_upstream_auth(rec)


def test_chat_stream_with_usage(client, upstream):
    expected = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    upstream.clear()

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect_chat_stream(stream)

    assert text == expected.choices[0].message.content
    assert finish_reasons(chunks) == ["stop"]
    last = chunks[-1]
    assert last.choices == [], "the usage chunk must have no choices"
    assert last.usage is not None
    assert last.usage.prompt_tokens == expected.usage.prompt_tokens
    assert last.usage.completion_tokens == expected.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])

    rec = only_request(upstream, "/v1/chat/completions")
    assert rec["body"]["stream_options"] == {"include_usage": True}
    assert rec["body"]["model"] == "mock-model"


# === 3. legacy completions ===


def test_completion(client, upstream):
    resp = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=64
    )
    assert resp.object == "text_completion"
    assert resp.model == "mock-instruct"
    assert resp.choices[0].text
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0

    rec = only_request(upstream, "/v1/completions")
    assert rec["body"]["model"] == "mock-instruct"
    assert rec["body"]["prompt"] == "Once upon a time"
    assert rec["body"]["max_tokens"] == 64
    assert_upstream_auth(rec)


def test_completion_stream(client, upstream):
    expected = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time")
    upstream.clear()

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once upon a time", stream=True
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected.choices[0].text
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    assert all(c.model == "mock-instruct" for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)

    rec = only_request(upstream, "/v1/completions")
    assert rec["body"]["stream"] is True
    assert rec["body"]["stream_options"]["include_usage"] is True

    upstream.clear()
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Once upon a time",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.choices[0].text
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert only_request(upstream, "/v1/completions")["body"]["stream_options"] == {
        "include_usage": True
    }


# === 4. embeddings ===

INPUTS = ["the quick brown fox", "jumps over", "the lazy dog"]


def test_embeddings_default_base64(client, upstream):
    resp = client.embeddings.create(model="text-embedding-3-small", input=INPUTS)

    assert resp.model == "mock-embed"
    assert len(resp.data) == len(INPUTS)
    assert [d.index for d in resp.data] == list(range(len(INPUTS)))
    for d in resp.data:
        assert isinstance(d.embedding, list)
        assert len(d.embedding) == 16  # the mock's default --embedding-dims
        assert all(isinstance(x, float) for x in d.embedding)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens >= resp.usage.prompt_tokens

    rec = only_request(upstream, "/v1/embeddings")
    assert rec["body"]["model"] == "mock-embed"
    assert rec["body"]["input"] == INPUTS
    assert rec["body"]["encoding_format"] == "base64", "the SDK asks for base64 by default"
    assert_upstream_auth(rec)


def test_embeddings_float_and_dimensions(client, upstream):
    as_b64 = client.embeddings.create(model="text-embedding-3-small", input=INPUTS)
    upstream.clear()

    resp = client.embeddings.create(
        model="text-embedding-3-small", input=INPUTS, encoding_format="float"
    )
    assert len(resp.data) == len(INPUTS)
    assert resp.usage.prompt_tokens > 0
    for f, b in zip(resp.data, as_b64.data):
        assert len(f.embedding) == 16
        assert f.embedding == pytest.approx(b.embedding, rel=1e-5, abs=1e-6)
    assert only_request(upstream, "/v1/embeddings")["body"]["encoding_format"] == "float"

    # Raw base64 through the SDK, decoded by hand, and a `dimensions` request.
    upstream.clear()
    raw = client.embeddings.create(
        model="text-embedding-3-small", input="one", encoding_format="base64", dimensions=8
    )
    vec = raw.data[0].embedding
    if isinstance(vec, str):  # the SDK returns the string when the caller asked for base64
        vec = list(struct.unpack(f"<{len(base64.b64decode(vec)) // 4}f", base64.b64decode(vec)))
    assert len(vec) == 8
    assert only_request(upstream, "/v1/embeddings")["body"]["dimensions"] == 8


# === 5. models ===


def test_models_list(client, upstream):
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == sorted(ROUTE_MODELS), "only exact route model names, each once"
    assert not [i for i in ids if "*" in i or "?" in i]
    assert upstream.requests() == [], "/v1/models is answered by the gateway itself"


# === 6. unknown model ===


def test_unknown_model(client, upstream):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    err = ei.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert "no-such-model" in err.message
    assert err.response.headers.get("content-type", "").startswith("application/json")
    assert upstream.requests() == []

    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="no-such-embedder", input="x")
    assert ei.value.code == "model_not_found"


# === 7. upstream 429 ===


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_rate_limit(gateway, upstream, stream):
    c = openai.OpenAI(base_url=gateway.base_url, api_key=CALLER_KEY, max_retries=0, timeout=10.0)
    try:
        with pytest.raises(openai.RateLimitError) as ei:
            r = c.chat.completions.create(
                model="rate-limited-model", messages=MESSAGES, stream=stream
            )
            if stream:
                list(r)
    finally:
        c.close()
    err = ei.value
    assert err.status_code == 429
    retry_after = err.response.headers.get("retry-after")
    assert retry_after is not None and 1 <= int(retry_after) <= int(RATE_LIMIT_RETRY_AFTER)
    assert isinstance(err.body, dict) and err.message

    # At most one upstream attempt (the route has no retry policy), carrying the knobs the
    # backend's `headers.set` adds. After the upstream's 429 the backend's only key rests for
    # its Retry-After, so a later request is answered 429 by the gateway without calling it.
    recs = upstream.requests("/v1/chat/completions")
    assert len(recs) <= 1, recs
    if recs:
        rec = recs[0]
        assert rec["headers"].get("x-mock-status") == "429"
        assert rec["body"]["model"] == "mock-model"
        assert_upstream_auth(rec)
        assert retry_after == RATE_LIMIT_RETRY_AFTER
    else:
        assert err.code == "upstream_keys_exhausted", err.body


# === 8. metrics ===

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m["name"] == name:
            out.append((dict(_LABEL.findall(m["labels"] or "")), float(m["value"])))
    return out


def total(text: str, name: str, **want: str) -> float:
    return sum(v for labels, v in samples(text, name) if all(labels.get(k) == w for k, w in want.items()))


def test_metrics(client, gateway, upstream):
    before = gateway.metrics()

    chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    emb = client.embeddings.create(model="text-embedding-3-small", input=INPUTS)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="rate-limited-model", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # A stream is recorded when the gateway drops its body, a moment after the client has
    # read the last byte: poll briefly.
    deadline = time.monotonic() + 3.0
    while True:
        after = gateway.metrics()
        if delta("switchyard_requests_total", route="default/chat", status="200") >= 2:
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)

    assert delta("switchyard_requests_total", route="default/chat", status="200") == 2, after
    assert delta(
        "switchyard_requests_total",
        route="default/embeddings",
        model="text-embedding-3-small",
        backend="default/mock",
        provider="openai-compatible",
        status="200",
    ) == 1, after
    assert delta(
        "switchyard_requests_total", route="default/rate-limited", status="429"
    ) == 1, after
    assert delta("switchyard_requests_total", status="404") >= 1, after

    # Tokens: the non-streamed reply's usage, plus the same again from the stream's usage
    # chunk (which the gateway read even though it did not pass it on).
    assert delta(
        "switchyard_tokens_total", route="default/chat", type="input"
    ) == 2 * chat.usage.prompt_tokens, after
    assert delta(
        "switchyard_tokens_total", route="default/chat", type="output"
    ) == 2 * chat.usage.completion_tokens, after
    assert delta(
        "switchyard_tokens_total", route="default/embeddings", type="input"
    ) == emb.usage.prompt_tokens, after

    routes = {labels.get("route") for labels, _ in samples(after, "switchyard_requests_total")}
    assert {"default/chat", "default/embeddings", "default/rate-limited"} <= routes
    # The upstream's own 429, or the gateway's while the backend's key rests after it.
    assert delta(
        "switchyard_upstream_errors_total", backend="default/mock-429", kind="status_429"
    ) + delta(
        "switchyard_upstream_errors_total", backend="default/mock-429", kind="keys_exhausted"
    ) == 1, after
    assert delta("switchyard_ratelimited_total", route="default/rate-limited") == 1, after
