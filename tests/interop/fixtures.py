"""What the interop scripts share: the gateway URL, the recorded answer, the weather tool."""
import os

BASE = os.environ["SWITCHYARD_URL"]
TEXT = "Hello! How can I help you today?"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOLS = [{
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}]
ASK = [{"role": "user", "content": "Weather in Paris and London?"}]
