"""Drives a running Switchyard with the official Anthropic Python SDK (the /anthropic ingress)."""

import anthropic
from fixtures import ASK, BASE, TEXT, ANTHROPIC_TOOLS as TOOLS

client = anthropic.Anthropic(base_url=BASE + "/anthropic", api_key="sk-client-unused", max_retries=0)

for model in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "bedrock/anthropic.claude-3-haiku-20240307-v1:0"):
    raw = client.messages.with_raw_response.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "Hello"}])
    assert raw.headers["x-switchyard-provider"] == model.split("/")[0]
    m = raw.parse()
    assert m.content[0].type == "text" and m.content[0].text == TEXT, m
    assert m.stop_reason == "end_turn", m
    assert m.usage.output_tokens == 10, m.usage

    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT, text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 10, final.usage

    m = client.messages.create(model=model, max_tokens=200, messages=ASK, tools=TOOLS)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use", m
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], uses

    # Continue with tool results.
    follow = ASK + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "18C"} for u in uses]},
    ]
    m2 = client.messages.create(model=model, max_tokens=200, messages=follow, tools=TOOLS)
    assert m2.content

    with client.messages.stream(model=model, max_tokens=200, messages=ASK, tools=TOOLS) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], final
    assert final.stop_reason == "tool_use"

try:
    client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("unknown model must fail")
except anthropic.NotFoundError as e:
    assert "unknown model" in str(e), e

print("anthropic sdk interop: ok")
