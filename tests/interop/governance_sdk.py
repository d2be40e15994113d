"""Governance as the official SDKs see it: 401 is an authentication error, a spent budget is a 402
that neither SDK retries, and a rate limit is a 429 with Retry-After and OpenAI's x-ratelimit
headers. Keys are made through the admin API (on loopback, no admin token in this test)."""
import json
import os
import time
import urllib.request

import anthropic
import openai

BASE = os.environ["SWITCHYARD_URL"]
MSG = [{"role": "user", "content": "Hello"}]


def admin(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def key(id, **fields):
    return admin("POST", "/api/keys", {"id": id, **fields})["secret"]


def logged(key_id):
    return len(admin("GET", f"/api/logs?key={key_id}&limit=500")["data"])


ok = key("ok")
broke = key("broke", budgets=[{"max_usd": 0.0}])
limited = key("limited", rate_limits={"requests_per_minute": 2})

# 401: the SDKs' authentication error.
try:
    openai.OpenAI(base_url=BASE + "/v1", api_key="sk-sy-unknown").chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    raise SystemExit("an unknown key was served")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e

# A good key works through both SDKs and both ingresses.
r = openai.OpenAI(base_url=BASE + "/v1", api_key=ok).chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
assert r.choices[0].message.content
m = anthropic.Anthropic(base_url=BASE + "/anthropic", api_key=ok).messages.create(model="openai/gpt-4o-mini", max_tokens=50, messages=MSG)
assert m.content[0].text

# 402: not retried by either SDK, even with retries allowed.
client = openai.OpenAI(base_url=BASE + "/v1", api_key=broke, max_retries=3)
try:
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    raise SystemExit("a spent budget was served")
except openai.APIStatusError as e:
    assert e.status_code == 402 and e.code == "budget_exceeded", e
claude = anthropic.Anthropic(base_url=BASE + "/anthropic", api_key=broke, max_retries=3)
try:
    claude.messages.create(model="openai/gpt-4o-mini", max_tokens=50, messages=MSG)
    raise SystemExit("a spent budget was served")
except anthropic.APIStatusError as e:
    assert e.status_code == 402, e
n = logged("broke")
assert n == 2, f"the SDKs retried a 402: {n} requests logged for 2 calls"

# 429 with the headers the SDKs back off on.
# Limits count calendar minutes: the three calls below must fall in one.
if time.time() % 60 > 48:
    time.sleep(60.05 - time.time() % 60)
client = openai.OpenAI(base_url=BASE + "/v1", api_key=limited, max_retries=0)
raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=MSG)
assert raw.headers["x-ratelimit-limit-requests"] == "2", raw.headers
assert raw.headers["x-ratelimit-remaining-requests"] == "1", raw.headers
client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
try:
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    raise SystemExit("a rate limit was not enforced")
except openai.RateLimitError as e:
    assert e.code == "rate_limit_exceeded", e
    retry = int(e.response.headers["retry-after"])
    assert 1 <= retry <= 60, retry
    assert e.response.headers["x-ratelimit-remaining-requests"] == "0"

print("interop: ok")
