"""A sample webhook guardrail for Switchyard (`[[plugins]] kind = "webhook"`), standard library only.

    python3 plugins/webhook-guard/server.py --port 8099 [--deny-word WORD ...]

Request hook: denies a request whose user text contains a denied word (403, naming it); answers
"ping" directly (a short-circuit: no provider is called); otherwise adds a system message with the
house rules (a modified request). Response hook: appends a disclaimer to every answer.
It prints `listening on PORT` once ready.
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOUSE_RULES = "Answer in plain language."
DISCLAIMER = " (checked by webhook-guard)"


def user_text(request):
    out = []
    for m in request.get("messages", []):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return " ".join(out)


def verdict(payload, denied):
    if payload.get("hook") == "request":
        request = payload["request"]
        text = user_text(request).lower()
        for word in denied:
            if word in text:
                return {"action": "deny", "status": 403, "message": f"webhook-guard: `{word}` is not allowed here"}
        if text.strip() == "ping":
            return {"action": "respond", "response": {
                "id": "chatcmpl-webhook-guard", "object": "chat.completion", "created": 0, "model": "webhook-guard",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}}
        request["messages"] = [{"role": "system", "content": HOUSE_RULES}] + request["messages"]
        return {"action": "modify", "request": request}
    if payload.get("hook") == "response":
        response = payload["response"]
        for c in response.get("choices", []):
            msg = c.get("message", {})
            if isinstance(msg.get("content"), str):
                msg["content"] += DISCLAIMER
        return {"action": "modify", "response": response}
    return {"action": "allow"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--deny-word", action="append", default=["forbidden"])
    args = ap.parse_args()
    denied = [w.lower() for w in args.deny_word]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                out = verdict(json.loads(body), denied)
                code = 200
            except (ValueError, KeyError) as e:
                out, code = {"error": str(e)}, 400
            data = json.dumps(out).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
