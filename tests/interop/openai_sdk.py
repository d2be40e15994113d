"""Drives a running Switchyard with the official OpenAI Python SDK.

SWITCHYARD_URL points at the gateway; behind it, `openai/*` is an OpenAI-format mock and
`anthropic/*` an Anthropic-format mock that replay the recordings in tests/fixtures.
"""
import json

import openai
from openai import OpenAI
from fixtures import ASK, BASE, TEXT, OPENAI_TOOLS as TOOLS


def check_model(client: OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    assert raw.headers["x-switchyard-provider"] == model.split("/")[0], raw.headers
    assert raw.headers["x-request-id"]
    r = raw.parse()
    assert r.choices[0].message.content == TEXT, r
    assert r.usage.prompt_tokens == 19 and r.usage.completion_tokens == 10, r.usage

    text, usage, finish = "", None, None
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == TEXT, text
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 10, usage

    r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "London"}),
    ], calls

    # Send the tool results back: the follow-up must be accepted by the same provider.
    history = ASK + [r.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": "18C"} for c in calls]
    r2 = client.chat.completions.create(model=model, messages=history, tools=TOOLS)
    assert r2.choices[0].message.tool_calls is not None

    acc = {}
    with client.chat.completions.stream(model=model, messages=ASK, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    acc = [(c.function.name, json.loads(c.function.arguments)) for c in final.choices[0].message.tool_calls]
    assert acc == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], acc


for prefix in ("/v1", "/openai/v1", "/openai"):
    client = OpenAI(base_url=BASE + prefix, api_key="sk-client-unused", max_retries=0)
    for model in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "bedrock/anthropic.claude-3-haiku-20240307-v1:0"):
        check_model(client, model)
    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("unknown model must fail")
    except openai.NotFoundError as e:
        assert "unknown model" in str(e), e
    models = [m.id for m in client.models.list()]
    assert "fast" in models, models
    assert client.models.retrieve("fast").id == "fast"
    emb = client.embeddings.create(model="openai/text-embedding-3-small", input="hello")
    assert len(emb.data[0].embedding) == 3

print("openai sdk interop: ok")
