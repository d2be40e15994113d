"""Drives a running Switchyard's Responses API with the official OpenAI Python SDK.

`client.responses.create`, `.stream` (the SDK's own event accumulator, which checks the event
order, item ids and sequence), function tools over two turns with `previous_response_id`,
structured output with `.parse`, `.retrieve` and `.delete`; against the OpenAI-format mock and the
Anthropic-format mock behind the gateway.
"""
import json

import openai
from openai import OpenAI
from pydantic import BaseModel

from fixtures import BASE, TEXT, WEATHER_SCHEMA

TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather for a city",
          "parameters": WEATHER_SCHEMA}]
ASK = "Weather in Paris and London?"


class Weather(BaseModel):
    city: str
    temperature_c: float


def check_model(client: OpenAI, model: str) -> None:
    raw = client.responses.with_raw_response.create(model=model, input="Hello", instructions="Be kind")
    assert raw.headers["x-switchyard-provider"] == model.split("/")[0], raw.headers
    r = raw.parse()
    assert r.status == "completed", r
    assert r.output_text == TEXT, r
    assert r.usage.input_tokens == 19 and r.usage.output_tokens == 10, r.usage

    # The SDK's stream helper rebuilds the response from the events and checks their order.
    deltas = []
    with client.responses.stream(model=model, input="Hello") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT, deltas
    assert final.output_text == TEXT, final
    assert final.usage is not None and final.usage.output_tokens == 10, final.usage

    # Raw events with stream=True, as the Agents SDK reads them.
    kinds = [e.type for e in client.responses.create(model=model, input="Hello", stream=True)]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds

    # Function tools over two turns, the second continuing the first by id.
    first = client.responses.create(model=model, input=ASK, tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "London"}),
    ], first.output
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "18C"} for c in calls],
        tools=TOOLS,
    )
    assert second.previous_response_id == first.id
    assert second.status == "completed"
    # The second turn's input items, as the SDK lists them (newest first by default).
    items = list(client.responses.input_items.list(second.id, order="asc"))
    assert [i.type for i in items] == ["function_call_output", "function_call_output"], items
    assert [i.call_id for i in items] == [c.call_id for c in calls], items
    first_items = list(client.responses.input_items.list(first.id))
    assert first_items[0].type == "message" and first_items[0].content[0].text == ASK, first_items

    # Streamed tool calls, accumulated by the SDK.
    with client.responses.stream(model=model, input=ASK, tools=TOOLS) as stream:
        final = stream.get_final_response()
    streamed = [(o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"]
    assert streamed == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], final.output

    # Stored: retrieve, delete, then it is gone.
    got = client.responses.retrieve(first.id)
    assert got.id == first.id and len(got.output) == len(first.output)
    client.responses.delete(first.id)
    try:
        client.responses.retrieve(first.id)
        raise AssertionError("a deleted response must be gone")
    except openai.NotFoundError:
        pass
    try:
        client.responses.create(model=model, input="Hi", previous_response_id=first.id)
        raise AssertionError("continuing a deleted response must fail")
    except openai.BadRequestError as e:
        assert "not found" in str(e), e


for prefix in ("/v1", "/openai/v1"):
    client = OpenAI(base_url=BASE + prefix, api_key="sk-client-unused", max_retries=0)
    for model in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "bedrock/anthropic.claude-3-haiku-20240307-v1:0"):
        check_model(client, model)

    # Structured output parsed into a model by the SDK, whatever provider answers (Anthropic and
    # Bedrock through the gateway's forced JSON tool, Gemini through its JSON mode).
    for model in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "bedrock/anthropic.claude-3-haiku-20240307-v1:0"):
        parsed = client.responses.parse(model=model, input="Weather in Paris as JSON", text_format=Weather)
        assert parsed.output_parsed == Weather(city="Paris", temperature_c=18), (model, parsed.output_parsed)

    try:
        client.responses.create(model="openai/gpt-4o-mini", input="x", tools=[{"type": "web_search"}])
        raise AssertionError("a hosted tool must be refused")
    except openai.BadRequestError as e:
        assert "web_search" in str(e), e

print("responses sdk interop: ok")
