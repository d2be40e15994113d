// tag-and-route: a Switchyard WebAssembly plugin, in AssemblyScript.
//
// on_request rewrites the requested model by the first rule that matches it (a model glob and,
// optionally, a word the last user message must contain) and remembers what it did in the
// request's state; on_response adds a `switchyard_route` object to the answer saying which rule
// sent it where, so the client can see the routing decision.
//
// The ABI (docs/plugins.md): the host writes JSON into memory it gets from `alloc`, calls a hook
// with (ptr, len), and reads the JSON answer at the (ptr << 32 | len) the hook returns (0: no
// change). The answer must stay valid until the next call into the module; `dealloc` releases
// the input.

import { JSON } from "json-as";

// ---- the ABI's plumbing -------------------------------------------------------------------

export function alloc(len: i32): usize {
  const buf = __new(<usize>len, idof<ArrayBuffer>());
  __pin(buf);
  return buf;
}

export function dealloc(ptr: usize, _len: i32): void {
  __unpin(ptr);
}

function read(ptr: usize, len: i32): string {
  return String.UTF8.decodeUnsafe(ptr, <usize>len);
}

// The last answer, kept reachable until the host has read it.
let last: ArrayBuffer = new ArrayBuffer(0);

function answer(json: string): u64 {
  last = String.UTF8.encode(json);
  return (u64(changetype<usize>(last)) << 32) | u64(last.byteLength);
}

function fail(message: string): u64 {
  const o = new JSON.Obj();
  o.set("error", message);
  return answer(JSON.stringify(o));
}

// ---- the plugin -----------------------------------------------------------------------------

class Rule {
  constructor(public model: string, public contains: string, public to: string) {}
}

let rules: Rule[] = [];

/** `model` glob: `*` matches any run of characters. */
function glob(pattern: string, text: string): bool {
  const parts = pattern.split("*");
  if (parts.length == 1) return pattern == text;
  if (!text.startsWith(parts[0])) return false;
  let at = parts[0].length;
  for (let i = 1; i < parts.length - 1; i++) {
    const found = text.indexOf(parts[i], at);
    if (found < 0) return false;
    at = found + parts[i].length;
  }
  const tail = parts[parts.length - 1];
  return text.length - at >= tail.length && text.endsWith(tail);
}

function configError(path: string, message: string): u64 {
  const e = new JSON.Obj();
  e.set("path", path);
  e.set("message", message);
  return answer('{"errors":[' + JSON.stringify(e) + "]}");
}

/** Reads `config.rules`: [{ model, contains?, to }]. */
export function init(ptr: usize, len: i32): u64 {
  const config = JSON.parse<JSON.Value>(read(ptr, len));
  rules = [];
  if (config.type == JSON.Types.Null) return 0;
  if (config.type != JSON.Types.Object) return configError("", "must be a table");
  const table = config.get<JSON.Obj>();
  const list = table.get("rules");
  if (list == null) return configError("rules", "name at least one rule");
  if (list.type != JSON.Types.Array) return configError("rules", "must be a list of tables");
  const items = list.get<JSON.Value[]>();
  for (let i = 0; i < items.length; i++) {
    const at = "rules[" + i.toString() + "]";
    if (items[i].type != JSON.Types.Object) return configError(at, "must be a table");
    const r = items[i].get<JSON.Obj>();
    const keys = r.keys();
    for (let k = 0; k < keys.length; k++) {
      if (keys[k] != "model" && keys[k] != "contains" && keys[k] != "to") {
        return configError(at + "." + keys[k], "unknown field (expected model, contains, to)");
      }
    }
    const model = r.get("model");
    const to = r.get("to");
    const contains = r.get("contains");
    if (model == null || model.type != JSON.Types.String) return configError(at + ".model", "must be a model glob");
    if (to == null || to.type != JSON.Types.String || to.get<string>().length == 0) {
      return configError(at + ".to", "must name the model or route to send matching requests to");
    }
    if (contains != null && contains.type != JSON.Types.String) return configError(at + ".contains", "must be a string");
    rules.push(new Rule(model.get<string>(), contains == null ? "" : contains.get<string>().toLowerCase(), to.get<string>()));
  }
  return 0;
}

/** The text of the last user message (string content or text parts). */
function lastUserText(request: JSON.Obj): string {
  const messages = request.get("messages");
  if (messages == null || messages.type != JSON.Types.Array) return "";
  const list = messages.get<JSON.Value[]>();
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i].type != JSON.Types.Object) continue;
    const m = list[i].get<JSON.Obj>();
    const role = m.get("role");
    if (role == null || role.type != JSON.Types.String || role.get<string>() != "user") continue;
    const content = m.get("content");
    if (content == null) return "";
    if (content.type == JSON.Types.String) return content.get<string>();
    if (content.type != JSON.Types.Array) return "";
    let text = "";
    const parts = content.get<JSON.Value[]>();
    for (let p = 0; p < parts.length; p++) {
      if (parts[p].type != JSON.Types.Object) continue;
      const t = parts[p].get<JSON.Obj>().get("text");
      if (t != null && t.type == JSON.Types.String) text += t.get<string>() + "\n";
    }
    return text;
  }
  return "";
}

/** { info, request, state } -> { request, state } when a rule matches; 0 otherwise. */
export function on_request(ptr: usize, len: i32): u64 {
  const input = JSON.parse<JSON.Obj>(read(ptr, len));
  const req = input.get("request");
  if (req == null || req.type != JSON.Types.Object) return fail("no request in the input");
  const request = req.get<JSON.Obj>();
  const model = request.get("model");
  if (model == null || model.type != JSON.Types.String) return fail("the request has no model");
  const asked = model.get<string>();
  let text = "";
  let textRead = false;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i];
    if (!glob(rule.model, asked)) continue;
    if (rule.contains.length > 0) {
      if (!textRead) {
        text = lastUserText(request).toLowerCase();
        textRead = true;
      }
      if (!text.includes(rule.contains)) continue;
    }
    request.set("model", rule.to);
    const state = new JSON.Obj();
    state.set("requested_model", asked);
    state.set("routed_to", rule.to);
    state.set("rule", i);
    const out = new JSON.Obj();
    out.set("request", request);
    out.set("state", state);
    return answer(JSON.stringify(out));
  }
  return 0;
}

/** { info, response, state } -> the response with `switchyard_route` when on_request routed. */
export function on_response(ptr: usize, len: i32): u64 {
  const input = JSON.parse<JSON.Obj>(read(ptr, len));
  const state = input.get("state");
  if (state == null || state.type != JSON.Types.Object) return 0;
  const resp = input.get("response");
  if (resp == null || resp.type != JSON.Types.Object) return fail("no response in the input");
  const response = resp.get<JSON.Obj>();
  response.set("switchyard_route", state.get<JSON.Obj>());
  const out = new JSON.Obj();
  out.set("response", response);
  return answer(JSON.stringify(out));
}
