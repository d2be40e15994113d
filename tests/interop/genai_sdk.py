"""Drives a running Switchyard's `/genai` ingress with the official Google GenAI Python SDK.

Text, streams, function declarations over two turns (the calls and their responses), JSON output
and errors, against the OpenAI-format and Anthropic-format mocks behind the gateway.
"""
from google import genai
from google.genai import errors, types

from fixtures import BASE, TEXT, WEATHER_SCHEMA

client = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=BASE + "/genai"))
TOOLS = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Current weather for a city", parameters_json_schema=WEATHER_SCHEMA)])]
NO_AUTO = types.AutomaticFunctionCallingConfig(disable=True)


def check_model(model: str) -> None:
    r = client.models.generate_content(
        model=model, contents="Hello", config=types.GenerateContentConfig(system_instruction="Be kind", max_output_tokens=100))
    assert r.text == TEXT, r
    assert r.usage_metadata.prompt_token_count == 19, r.usage_metadata
    assert r.usage_metadata.candidates_token_count == 10, r.usage_metadata
    assert r.candidates[0].finish_reason == types.FinishReason.STOP, r

    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents="Hello"))
    assert text == TEXT, text

    ask = [types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris and London?")])]
    cfg = types.GenerateContentConfig(tools=TOOLS, automatic_function_calling=NO_AUTO)
    r = client.models.generate_content(model=model, contents=ask, config=cfg)
    calls = r.function_calls
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], r
    # The second turn sends the model's turn back as it came, with the function responses.
    history = ask + [r.candidates[0].content, types.Content(role="user", parts=[
        types.Part.from_function_response(name=c.name, response={"temperature_c": 18}) for c in calls])]
    r2 = client.models.generate_content(model=model, contents=history, config=cfg)
    assert r2.candidates, r2

    streamed = []
    for chunk in client.models.generate_content_stream(model=model, contents=ask, config=cfg):
        streamed += [(c.name, c.args) for c in (chunk.function_calls or [])]
    assert streamed == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})], streamed


for model in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash", "bedrock/anthropic.claude-3-haiku-20240307-v1:0", "fast"):
    check_model(model)

try:
    client.models.generate_content(model="nope", contents="hi")
    raise AssertionError("unknown model must fail")
except errors.ClientError as e:
    assert e.code == 404, e
    assert "unknown model" in str(e), e

try:
    client.models.generate_content(
        model="openai/gpt-4o-mini", contents="hi", config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())]))
    raise AssertionError("google search must be refused")
except errors.ClientError as e:
    assert e.code == 400 and "googleSearch" in str(e), e

print("genai sdk interop: ok")
