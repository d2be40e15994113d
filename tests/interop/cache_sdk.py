"""Cache hits as the official SDKs see them: a replayed stream must look like a live one.

SWITCHYARD_URL points at a gateway with the semantic cache on; behind it, `openai/*` and
`anthropic/*` are mocks replaying tests/fixtures.
"""
import json
import time

import anthropic
from openai import OpenAI
from fixtures import BASE, TEXT, OPENAI_TOOLS as TOOLS


def until_hit(call, want):
    """Repeats `call` until the cache header says `want` (entries are written after answering)."""
    for _ in range(100):
        raw = call()
        if raw.headers.get("x-switchyard-cache") == want:
            return raw
        time.sleep(0.05)
    raise AssertionError(f"never got {want}: {raw.headers}")


def openai_side() -> None:
    client = OpenAI(base_url=f"{BASE}/v1", api_key="unused")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=msgs)
    assert raw.headers["x-switchyard-cache"] == "miss", raw.headers
    assert raw.parse().choices[0].message.content == TEXT

    # Stored as JSON, replayed as a stream.
    raw = until_hit(lambda: client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=msgs, stream=True, stream_options={"include_usage": True}), "hit-exact")
    text, usage, finish, chunks, roles = "", None, None, 0, []
    for chunk in raw.parse():
        chunks += 1
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == TEXT, text
    assert roles == ["assistant"], roles
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 10, usage
    assert chunks >= 4, chunks

    # A paraphrase: semantic hit, non-streamed.
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Which city is the capital of France?"}])
    assert raw.headers["x-switchyard-cache"] == "hit-semantic", raw.headers
    assert float(raw.headers["x-switchyard-cache-similarity"]) >= 0.82
    assert raw.parse().choices[0].message.content == TEXT

    # Tool calls survive storage and replay.
    ask = [{"role": "user", "content": "Weather in Paris and London?"}]
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=ask, tools=TOOLS)
    assert raw.headers["x-switchyard-cache"] == "miss"
    raw = until_hit(lambda: client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=ask, tools=TOOLS, stream=True), "hit-exact")
    calls, finish = {}, None
    for chunk in raw.parse():
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                slot = calls.setdefault(d.index, {"name": "", "args": ""})
                if d.function and d.function.name:
                    slot["name"] += d.function.name
                if d.function and d.function.arguments:
                    slot["args"] += d.function.arguments
    assert finish == "tool_calls", finish
    got = [(calls[i]["name"], json.loads(calls[i]["args"])) for i in sorted(calls)]
    assert got == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], got


def anthropic_side() -> None:
    client = anthropic.Anthropic(base_url=f"{BASE}/anthropic", api_key="unused")
    kwargs = dict(model="anthropic/claude-sonnet-4-5", max_tokens=200,
                  messages=[{"role": "user", "content": "Tell me about the cache."}])
    raw = client.messages.with_raw_response.create(**kwargs)
    assert raw.headers["x-switchyard-cache"] == "miss", raw.headers
    for _ in range(100):
        with client.messages.stream(**kwargs) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
            hit = stream.response.headers.get("x-switchyard-cache")
        if hit == "hit-exact":
            break
        time.sleep(0.05)
    assert hit == "hit-exact", hit
    assert text == TEXT, text
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


openai_side()
anthropic_side()
print("interop: ok")
