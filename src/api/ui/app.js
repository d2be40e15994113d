// Switchyard web UI: plain JavaScript, no build step. Every value from the API is put on the page
// as text (never as HTML). The admin token, when one is set, stays in this tab's sessionStorage.
"use strict";

const main = document.getElementById("main");
const TOKEN = "switchyard-admin-token";

// ---------- helpers ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const fmtInt = (n) => (n ?? 0).toLocaleString();
const fmtUsd = (n) => "$" + (n ?? 0).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 });
const fmtMs = (n) => (n === undefined || n === null ? "" : (n < 10 ? n.toFixed(2) : Math.round(n).toLocaleString()) + " ms");
const fmtPct = (x) => ((x ?? 0) * 100).toFixed(1) + "%";
const fmtTime = (ms) => new Date(ms).toLocaleString();
const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
function table(cols, rows, onRow) {
  return h("table", {},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", { class: onRow ? "click" : "", onclick: onRow ? () => onRow(r) : null },
      cols.map((c) => h("td", { class: c.num ? "num" : "" }, c.get(r))))) :
      h("tr", {}, h("td", { colspan: cols.length, class: "notice" }, "Nothing yet."))));
}
function errorBox(e) { return h("div", { class: "error", role: "alert" }, e.message || String(e)); }

class AuthError extends Error {}
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = "Bearer " + token;
  headers["X-Switchyard-Client"] = "ui";
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
  if (r.status === 401) throw new AuthError("The admin token is missing or wrong.");
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!r.ok) throw new Error((body && body.error && body.error.message) || `${r.status} ${r.statusText}`);
  return body;
}

// ---------- login ----------
function login(message) {
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true });
  main.replaceChildren(h("div", { class: "login" },
    h("h1", {}, "Sign in"),
    h("p", { class: "notice" }, "This gateway has an admin token. Enter it to continue."),
    message ? errorBox({ message }) : null,
    h("form", { onsubmit: (ev) => { ev.preventDefault(); sessionStorage.setItem(TOKEN, input.value); route(); } },
      h("label", {}, "Admin token", input), h("button", { type: "submit" }, "Sign in"))));
  input.focus();
}
document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN); route(); });

// ---------- charts ----------
function barChart(points, valueOf, lineOf, labelOf = (p) => fmtTime(p[0])) {
  const W = 800, H = 160, P = 24;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "chart"); svg.setAttribute("role", "img");
  const max = Math.max(1, ...points.map(valueOf));
  const bw = (W - 2 * P) / Math.max(points.length, 1);
  const add = (tag, attrs) => { const e = document.createElementNS(svg.namespaceURI, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  points.forEach((p, i) => {
    const v = valueOf(p), bh = ((H - 2 * P) * v) / max;
    const r = add("rect", { class: "bar", x: P + i * bw + 1, y: H - P - bh, width: Math.max(bw - 2, 1), height: bh });
    const t = document.createElementNS(svg.namespaceURI, "title"); t.textContent = `${labelOf(p)}: ${v}`; r.append(t);
  });
  if (lineOf && points.length) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${P + i * bw + bw / 2},${H - P - (H - 2 * P) * lineOf(p)}`).join(" ");
    add("path", { class: "line", d });
  }
  add("text", { x: P, y: 14 }).textContent = `max ${fmtInt(max)}`;
  if (points.length) {
    add("text", { x: P, y: H - 6 }).textContent = labelOf(points[0]);
    add("text", { x: W - P, y: H - 6, "text-anchor": "end" }).textContent = labelOf(points[points.length - 1]);
  }
  return svg;
}

// ---------- pages ----------
const pages = {};

pages.dashboard = async () => {
  const [u, c, p] = await Promise.all([api("/api/usage"), api("/api/cache/stats"), api("/api/providers")]);
  const t = u.total;
  const byModel = Object.entries(u.by_model).map(([k, v]) => ({ k, ...v }));
  const byProvider = Object.entries(u.by_provider).map(([k, v]) => ({ k, ...v }));
  const cols = [
    { label: "Name", get: (r) => r.k }, { label: "Requests", num: true, get: (r) => fmtInt(r.requests) },
    { label: "Errors", num: true, get: (r) => fmtInt(r.errors) }, { label: "Mean latency", num: true, get: (r) => fmtMs(r.mean_latency_ms) },
    { label: "Tokens in", num: true, get: (r) => fmtInt(r.input_tokens) }, { label: "Tokens out", num: true, get: (r) => fmtInt(r.output_tokens) },
    { label: "Cost", num: true, get: (r) => fmtUsd(r.cost_usd) }, { label: "Cache hits", num: true, get: (r) => fmtInt(r.cache_hits) },
  ];
  return [
    h("h1", {}, "Dashboard"),
    p.data.length ? [] : h("div", { class: "notice ok", role: "status", id: "welcome" }, "Welcome. No provider is set up yet: ", h("a", { href: "#/providers" }, "add a provider"), " to send your first request."),
    h("p", { class: "notice" }, `Last 24 hours (${fmtTime(u.from)} to ${fmtTime(u.to)}).`),
    h("div", { class: "cards" },
      card("Requests", fmtInt(t.requests)), card("Errors", fmtInt(t.errors)),
      card("Mean latency", fmtMs(t.mean_latency_ms)), card("Cost (est.)", fmtUsd(t.cost_usd)),
      card("Cache hit rate", fmtPct(t.cache_lookups ? t.cache_hits / t.cache_lookups : 0)),
      card("Saved by cache", fmtUsd(t.saved_usd)), card("Tokens saved (all time)", fmtInt(c.saved.prompt_tokens + c.saved.completion_tokens)),
      card("MCP tool calls", fmtInt(t.mcp_tool_calls))),
    h("h2", {}, `Traffic per ${u.bucket_seconds >= 3600 ? u.bucket_seconds / 3600 + " h" : u.bucket_seconds / 60 + " min"} (bars) and cache hit rate (line)`),
    barChart(u.series, (p) => p[1].requests, (p) => (p[1].cache_lookups ? p[1].cache_hits / p[1].cache_lookups : 0)),
    h("h2", {}, "By model"), table(cols, byModel), h("h2", {}, "By provider"), table(cols, byProvider),
  ];
};

const KINDS = ["openai", "anthropic", "gemini", "azure", "openai-compatible", "groq", "mistral", "openrouter", "deepseek", "xai", "cohere", "ollama", "bedrock", "vertex"];
pages.providers = async () => {
  const [p, r, v] = await Promise.all([api("/api/providers"), api("/api/routes"), api("/api/config/versions").catch(() => ({ data: [] }))]);
  const msg = h("div");
  const done = async (notice) => { await render(); if (notice) main.prepend(notice); };
  const ok = (text) => h("div", { class: "notice ok", role: "status" }, text);
  const fail = (e) => { if (e instanceof AuthError) throw e; msg.replaceChildren(errorBox(e)); };
  const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);
  const test = async (x) => {
    const model = x.models?.[0] || prompt(`Test ${x.name} with which model?`, "");
    if (!model) return;
    try {
      const t = await api(`/api/providers/${encodeURIComponent(x.name)}/test`, { method: "POST", json: { model } });
      msg.replaceChildren(t.ok ? ok(`${x.name} answered ${t.model} in ${fmtMs(t.latency_ms)}.`) : errorBox({ message: `${x.name} failed after ${fmtMs(t.latency_ms)}: ${t.error}` }));
    } catch (e) { fail(e); }
  };
  const editor = h("form", { class: "inline", id: "edit", hidden: true });
  const edit = (kind, id, path) => async () => {
    let current;
    try { current = await api(path); } catch (e) { fail(e); return; }
    delete current.source;
    const box = h("textarea", { name: "fields", class: "grow", rows: 8 }, JSON.stringify(current, null, 2));
    editor.replaceChildren(h("label", { class: "grow" }, `Edit ${kind} ${id} (JSON; the fields given are changed, null removes one; keys show masked: leave them out to keep them)`, box), h("button", { type: "submit" }, "Save"));
    editor.onsubmit = async (ev) => {
      ev.preventDefault();
      let body;
      try { body = JSON.parse(box.value); } catch (e) { msg.replaceChildren(errorBox({ message: "Not valid JSON: " + e.message })); return; }
      try { const c = await api(path, { method: "PATCH", json: body }); await done(ok(`Saved ${kind} ${id} (version ${c.version}).`)); } catch (e) { fail(e); }
    };
    editor.hidden = false;
    box.focus();
  };
  const remove = (kind, id, path) => async () => {
    if (!confirm(`Remove ${kind} ${id}?`)) return;
    try { await api(path, { method: "DELETE" }); await done(ok(`Removed ${kind} ${id}.`)); } catch (e) { fail(e); }
  };
  const provPath = (x) => `/api/providers/${encodeURIComponent(x.name)}`;
  const routePath = (x) => `/api/routes/${encodeURIComponent(x.model)}`;
  const provActions = (x) => h("span", { class: "actions" },
    h("button", { class: "secondary", onclick: () => test(x) }, "Test"),
    x.source === "api" ? h("button", { class: "secondary", onclick: edit("provider", x.name, provPath(x)) }, "Edit") : null,
    x.source === "api" ? h("button", { class: "danger", onclick: remove("provider", x.name, provPath(x)) }, "Remove") : null);
  const routeActions = (x) => x.source !== "api" ? "from config" : h("span", { class: "actions" },
    h("button", { class: "secondary", onclick: edit("route", x.model, routePath(x)) }, "Edit"),
    h("button", { class: "danger", onclick: remove("route", x.model, routePath(x)) }, "Remove"));
  // New provider.
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9._\\-]+", placeholder: "openai-eu" });
  const kind = h("select", { name: "kind" }, KINDS.map((k) => h("option", { value: k }, k)));
  const base = h("input", { name: "base_url", placeholder: "default for the kind", size: 28 });
  const key = h("input", { name: "key", type: "password", autocomplete: "off", placeholder: "sk-... or env.OPENAI_API_KEY", size: 24 });
  const models = h("input", { name: "models", placeholder: "gpt-4o-mini, gpt-4o", size: 20 });
  const addProvider = async (ev) => {
    ev.preventDefault();
    const body = { name: name.value.trim(), kind: kind.value };
    if (base.value.trim()) body.base_url = base.value.trim();
    if (key.value.trim()) body.keys = [key.value.trim()];
    if (models.value.trim()) body.models = list(models.value);
    try { const c = await api("/api/providers", { method: "POST", json: body }); await done(ok(`Added provider ${body.name} (version ${c.version}).`)); } catch (e) { fail(e); }
  };
  // New route.
  const rname = h("input", { name: "model", required: true, placeholder: "smart" });
  const targets = h("input", { name: "targets", required: true, placeholder: "openai/gpt-4o-mini=0.7, anthropic/claude-haiku-4-5=0.3", size: 40 });
  const fallbacks = h("input", { name: "fallbacks", placeholder: "groq/llama-3.3-70b", size: 20 });
  const addRoute = async (ev) => {
    ev.preventDefault();
    const body = { model: rname.value.trim(), targets: list(targets.value).map((t) => { const [m, w] = t.split("="); return w ? { model: m.trim(), weight: Number(w) } : { model: m.trim() }; }) };
    if (fallbacks.value.trim()) body.fallbacks = list(fallbacks.value);
    try { const c = await api("/api/routes", { method: "POST", json: body }); await done(ok(`Added route ${body.model} (version ${c.version}).`)); } catch (e) { fail(e); }
  };
  const rollback = async (n) => {
    if (!confirm(`Roll the providers and routes added here back to version ${n}?`)) return;
    try { const c = await api(`/api/config/rollback/${n}`, { method: "POST", json: {} }); await done(ok(`Rolled back to version ${n} (now version ${c.version}).`)); } catch (e) { fail(e); }
  };
  return [
    h("h1", {}, "Providers"), msg,
    p.data.length ? [] : h("div", { class: "notice ok", role: "status", id: "welcome" }, "No provider yet: add a provider below (or start the gateway with OPENAI_API_KEY, ANTHROPIC_API_KEY, ... set) to send your first request."),
    table([
      { label: "Name", get: (x) => x.name }, { label: "Source", get: (x) => x.source }, { label: "Kind", get: (x) => x.kind }, { label: "Base URL", get: (x) => x.base_url },
      { label: "Keys", get: (x) => x.keys.map((k) => `${k.source} (weight ${k.weight})`).join(", ") || "none" },
      { label: "Timeout", num: true, get: (x) => fmtMs(x.timeout_ms) }, { label: "Retries", num: true, get: (x) => x.max_retries },
      { label: "Open breakers", num: true, get: (x) => x.breakers.filter((b) => b.state !== "closed").length },
      { label: "", get: provActions },
    ], p.data),
    editor,
    h("h2", {}, "Add a provider"),
    h("form", { class: "inline", id: "add-provider", onsubmit: addProvider },
      h("label", {}, "Name", name), h("label", {}, "Kind", kind), h("label", {}, "Base URL", base), h("label", {}, "Key", key), h("label", {}, "Models", models),
      h("button", { type: "submit" }, "Add provider")),
    h("p", { class: "notice" }, "Keys are shown by source (an environment variable or inline), never by value. A key typed here is stored encrypted and not shown again; env.NAME reads the gateway's environment. Providers and routes from the config file are changed in the file."),
    h("h2", {}, "Routes"),
    table([
      { label: "Model", get: (x) => x.model }, { label: "Source", get: (x) => x.source },
      { label: "Targets", get: (x) => x.targets.map((t) => `${t.model} (${t.weight})`).join(", ") },
      { label: "Fallbacks", get: (x) => x.fallbacks.join(" → ") },
      { label: "", get: routeActions },
    ], r.data),
    h("h2", {}, "Add a route"),
    h("form", { class: "inline", id: "add-route", onsubmit: addRoute },
      h("label", {}, "Model", rname), h("label", {}, "Targets (provider/model=weight)", targets), h("label", {}, "Fallbacks", fallbacks),
      h("button", { type: "submit" }, "Add route")),
    h("h2", {}, "Versions"),
    table([
      { label: "#", num: true, get: (x) => x.version }, { label: "When", get: (x) => new Date(x.at).toLocaleString() }, { label: "By", get: (x) => x.actor },
      { label: "What", get: (x) => x.action }, { label: "Changes", get: (x) => x.changes.map((c) => c.path).join(", ") },
      { label: "", get: (x) => x.version === v.current ? "current" : h("button", { class: "secondary", onclick: () => rollback(x.version) }, "Roll back to this") },
    ], (v.data || []).slice(0, 20)),
  ];
};

pages.plugins = async () => {
  const p = await api("/api/plugins");
  const rows = [];
  for (const x of p.data) {
    const hooks = Object.entries(x.stats);
    if (!hooks.length) rows.push({ x, hook: "", s: null });
    for (const [hook, s] of hooks) rows.push({ x, hook, s });
  }
  return [
    h("h1", {}, "Plugins"),
    ...(p.data.length ? [] : [h("p", { class: "notice" }, "No plugins are configured. Add [[plugins]] entries to the config file (see docs/plugins.md).")]),
    table([
      { label: "Order", num: true, get: (r) => r.x.order + 1 }, { label: "Name", get: (r) => r.x.name },
      { label: "Kind", get: (r) => r.x.kind }, { label: "Hooks", get: (r) => r.x.hooks.join(", ") },
      { label: "Scope", get: (r) => r.x.scope.join(", ") || "all" }, { label: "On error", get: (r) => r.x.on_error },
      { label: "Hook", get: (r) => r.hook }, { label: "Calls", num: true, get: (r) => (r.s ? fmtInt(r.s.calls) : "") },
      { label: "Errors", num: true, get: (r) => (r.s ? fmtInt(r.s.errors) : "") },
      { label: "Blocks", num: true, get: (r) => (r.s ? fmtInt(r.s.blocks) : "") },
      { label: "p50", num: true, get: (r) => (r.s ? `${fmtInt(r.s.p50_us)} µs` : "") },
      { label: "p99", num: true, get: (r) => (r.s ? `${fmtInt(r.s.p99_us)} µs` : "") },
    ], rows),
    h("p", { class: "notice" }, "Requests go through the plugins in order, answers in reverse order. Times are of the recent calls (Prometheus has the full histograms)."),
  ];
};

pages.mcp = async () => {
  const [s, t] = await Promise.all([api("/api/mcp/servers"), api("/api/mcp/tools")]);
  const msg = h("div");
  const f = {
    name: h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_\\-]+", placeholder: "calc" }),
    transport: h("select", { name: "transport" }, h("option", { value: "stdio" }, "stdio"), h("option", { value: "http" }, "streamable HTTP"), h("option", { value: "sse" }, "legacy SSE")),
    command: h("input", { name: "command", placeholder: "mcp-calculator" }),
    args: h("input", { name: "args", placeholder: "space-separated arguments" }),
    url: h("input", { name: "url", placeholder: "http://127.0.0.1:9000/mcp", size: 30 }),
  };
  const register = async (ev) => {
    ev.preventDefault();
    const body = { name: f.name.value.trim(), transport: f.transport.value };
    if (body.transport === "stdio") {
      body.command = f.command.value.trim();
      const args = f.args.value.trim();
      if (args) body.args = args.split(/\s+/);
    } else body.url = f.url.value.trim();
    try {
      const v = await api("/api/mcp/servers", { method: "POST", json: body });
      await render(); main.prepend(h("div", { class: "notice ok", role: "status" }, `Registered ${v.name}: ${v.status}, ${(v.tools || []).length} tools.`));
    } catch (e) { if (e instanceof AuthError) throw e; msg.replaceChildren(errorBox(e)); }
  };
  const remove = async (name) => {
    if (!confirm(`Remove MCP server ${name}?`)) return;
    try { await api(`/api/mcp/servers/${encodeURIComponent(name)}`, { method: "DELETE" }); await render(); } catch (e) { msg.replaceChildren(errorBox(e)); }
  };
  const toolSel = h("select", { name: "tool" }, t.data.map((x) => h("option", { value: x.name }, x.name)));
  const argsBox = h("textarea", { name: "arguments" }, "{}");
  const out = h("pre", { hidden: true });
  const showSchema = () => { const x = t.data.find((y) => y.name === toolSel.value); if (x) argsBox.placeholder = JSON.stringify(x.input_schema); };
  toolSel.addEventListener("change", showSchema); showSchema();
  const tryTool = async (ev) => {
    ev.preventDefault();
    let args;
    try { args = JSON.parse(argsBox.value || "{}"); } catch (e) { out.hidden = false; out.textContent = "Arguments are not valid JSON: " + e.message; return; }
    try {
      const r = await api(`/api/mcp/tools/${encodeURIComponent(toolSel.value)}/call`, { method: "POST", json: args });
      out.hidden = false; out.textContent = `${r.outcome} in ${fmtMs(r.ms)}\n\n${r.text}`;
    } catch (e) { if (e instanceof AuthError) throw e; out.hidden = false; out.textContent = e.message; }
  };
  return [
    h("h1", {}, "MCP servers"), msg,
    table([
      { label: "Name", get: (x) => x.name }, { label: "Transport", get: (x) => x.transport }, { label: "Source", get: (x) => x.source },
      { label: "Endpoint", get: (x) => x.command || x.url || "" },
      { label: "Status", get: (x) => h("span", { class: "status-" + x.status }, x.status + (x.error ? `: ${x.error}` : "")) },
      { label: "Tools", num: true, get: (x) => (x.tools || []).length },
      { label: "", get: (x) => x.source === "api" ? h("button", { class: "danger", onclick: () => remove(x.name) }, "Remove") : "from config" },
    ], s.data),
    h("h2", {}, "Register a server"),
    h("form", { class: "inline", id: "register", onsubmit: register },
      h("label", {}, "Name", f.name), h("label", {}, "Transport", f.transport), h("label", {}, "Command (stdio)", f.command),
      h("label", {}, "Arguments (stdio)", f.args), h("label", {}, "URL (http, sse)", f.url), h("button", { type: "submit" }, "Register")),
    h("h2", {}, "Tools"),
    table([
      { label: "Name (as models see it)", get: (x) => x.name }, { label: "Server", get: (x) => x.server }, { label: "Tool", get: (x) => x.tool },
      { label: "Description", get: (x) => x.description || "" }, { label: "Available", get: (x) => (x.available ? "yes" : "no") },
    ], t.data),
    h("h2", {}, "Try a tool"),
    t.data.length ? h("form", { class: "inline", id: "try", onsubmit: tryTool }, h("label", {}, "Tool", toolSel),
      h("label", { class: "grow" }, "Arguments (JSON)", argsBox), h("button", { type: "submit" }, "Run")) : h("p", { class: "notice" }, "No tools registered."),
    out,
  ];
};

pages.cache = async (params) => {
  const offset = Number(params.get("offset") || 0), limit = 20;
  const [s, w, e, fb] = await Promise.all([
    api("/api/cache/stats"),
    api("/api/cache/whatif" + (params.get("threshold") ? `?threshold=${encodeURIComponent(params.get("threshold"))}` : "")),
    api(`/api/cache/entries?offset=${offset}&limit=${limit}`).catch((err) => ({ error: err })),
    api("/api/cache/feedback").catch(() => ({ data: [] })),
  ]);
  const th = h("input", { type: "number", name: "threshold", min: 0, max: 1, step: 0.01, value: w.threshold.toFixed(2) });
  const pairCols = [
    { label: "When", get: (x) => fmtTime(x.at_ms) }, { label: "Question", get: (x) => x.prompt },
    { label: "Cached question", get: (x) => x.cached_prompt }, { label: "Similarity", num: true, get: (x) => x.similarity.toFixed(4) },
  ];
  const del = async (id) => { await api(`/api/cache/entries/${id}`, { method: "DELETE" }); await render(); };
  const wrong = async (id) => {
    await api(`/api/cache/entries/${id}/feedback`, { method: "POST", json: { verdict: "wrong" } });
    await render();
  };
  const shadowCols = [
    { label: "When", get: (x) => fmtTime(x.at_ms) }, { label: "Question", get: (x) => x.prompt },
    { label: "Cached question", get: (x) => x.cached_prompt }, { label: "Tier", get: (x) => x.shadow.tier },
    { label: "Similarity", num: true, get: (x) => x.similarity.toFixed(4) },
    { label: "Would have answered", get: (x) => x.shadow.cached_answer }, { label: "Live answer", get: (x) => x.shadow.live_answer || "" },
  ];
  const purge = async () => { if (confirm("Delete every cache entry?")) { await api("/api/cache/entries", { method: "DELETE" }); await render(); } };
  const go = (o) => { location.hash = `#/cache?offset=${Math.max(0, o)}`; };
  return [
    h("h1", {}, "Cache"),
    h("div", { class: "cards" },
      card("Status", s.enabled ? (s.ready ? "ready" : "loading") : "off"), card("Mode", `${s.mode} / ${s.store}`),
      card("Entries", fmtInt(s.entries)), card("Hit rate", fmtPct(s.hit_rate)),
      card("Exact hits", fmtInt(s.lookups["hit-exact"])), card("Semantic hits", fmtInt(s.lookups["hit-semantic"])),
      card("Misses", fmtInt(s.lookups.miss)), card("Saved", fmtUsd(s.saved.cost_usd)),
      card("Shadow hits", fmtInt(s.lookups["shadow-hit-exact"] + s.lookups["shadow-hit-semantic"])),
      card("Reported wrong", fmtInt(s.lookups["reported-wrong"]))),
    h("h2", {}, "Most served entries"),
    h("div", { id: "top" }, table([
      { label: "Prompt", get: (x) => x.prompt }, { label: "Requested", get: (x) => x.route },
      { label: "Answered by", get: (x) => x.model }, { label: "Hits", num: true, get: (x) => fmtInt(x.hits) },
      { label: "Last hit", get: (x) => fmtTime(x.last_hit * 1000) },
    ], s.top_entries || [])),
    h("h2", {}, "Threshold what-if"),
    h("p", { class: "notice" }, `Configured threshold ${w.current_threshold.toFixed(2)}. From the last ${fmtInt(w.candidates)} semantic candidates: ` +
      `${fmtInt(w.served_now)} served; at ${w.threshold.toFixed(2)}, ${fmtInt(w.served_at_threshold)} would be ` +
      `(${fmtInt(w.gained_total)} more misses served, ${fmtInt(w.lost_total)} hits lost; ${fmtInt(w.guard_rejected)} rejected by the guard at any threshold).` +
      (w.floor ? ` Misses are recorded down to similarity ${w.floor.toFixed(2)}.` : "")),
    h("form", { class: "inline", id: "whatif", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/cache?threshold=${th.value}`; } },
      h("label", {}, "Threshold", th), h("button", { type: "submit" }, "Show")),
    h("h2", {}, "Semantic hits by threshold (0.60 to 1.00)"),
    barChart(w.curve, (p) => p[1], null, (p) => `threshold ${p[0].toFixed(2)}`),
    h("div", { class: "cols" },
      h("div", {}, h("h2", {}, `Would also be served (${fmtInt(w.gained_total)})`), table(pairCols, w.gained)),
      h("div", {}, h("h2", {}, `Would no longer be served (${fmtInt(w.lost_total)})`), table(pairCols, w.lost))),
    h("h2", {}, `Shadow mode: would have been served (${fmtInt(w.shadow_total)})`),
    h("div", { id: "shadow" }, w.shadow_total ? table(shadowCols, w.shadow)
      : h("p", { class: "notice" }, "No shadow hits. With mode = \"shadow\" (in [cache] or a route's cache table) the cache is looked up and what it would have served is shown here beside the live answer, without serving it.")),
    h("h2", {}, `Reported wrong (${fmtInt(fb.data.length)})`),
    h("div", { id: "reported" }, table([
      { label: "When", get: (x) => fmtTime(x.at_ms) }, { label: "Question", get: (x) => x.prompt || "(not known)" },
      { label: "Cached question", get: (x) => x.cached_prompt }, { label: "Route", get: (x) => x.route }, { label: "Via", get: (x) => x.source },
    ], fb.data)),
    h("h2", {}, "Entries"),
    e.error ? errorBox(e.error) : [
      table([
        { label: "Created", get: (x) => fmtTime(x.created * 1000) }, { label: "Model", get: (x) => x.model },
        { label: "Prompt", get: (x) => x.prompt }, { label: "Answer", get: (x) => (x.answer || "").slice(0, 160) },
        { label: "Hits", num: true, get: (x) => fmtInt(x.hits) }, { label: "Expires", get: (x) => fmtTime(x.expires * 1000) },
        { label: "", get: (x) => [h("button", { class: "secondary", title: "Report this answer as wrong: it is removed and the pair kept for cache-eval", onclick: () => wrong(x.id) }, "Wrong"), " ",
          h("button", { class: "danger", onclick: () => del(x.id) }, "Delete")] },
      ], e.entries),
      h("div", { class: "pager" },
        h("button", { class: "secondary", disabled: offset === 0, onclick: () => go(offset - limit) }, "Previous"),
        h("span", {}, `${e.total ? offset + 1 : 0}–${Math.min(offset + limit, e.total)} of ${fmtInt(e.total)}`),
        h("button", { class: "secondary", disabled: offset + limit >= e.total, onclick: () => go(offset + limit) }, "Next"),
        h("span", { class: "grow" }), h("button", { class: "danger", onclick: purge }, "Purge all")),
    ],
  ];
};

pages.logs = async (params) => {
  const q = new URLSearchParams();
  for (const k of ["model", "provider", "status", "cache", "cursor"]) if (params.get(k)) q.set(k, params.get(k));
  for (const k of ["from", "to"]) if (params.get(k)) q.set(k, String(new Date(params.get(k)).getTime()));
  q.set("limit", "50");
  const page = await api("/api/logs?" + q.toString());
  const f = {};
  for (const k of ["model", "provider"]) f[k] = h("input", { name: k, value: params.get(k) || "" });
  f.status = h("select", { name: "status" }, ["", "2xx", "4xx", "5xx", "error"].map((v) => h("option", { value: v, selected: params.get("status") === v }, v || "any")));
  f.cache = h("select", { name: "cache" }, ["", "hit", "hit-exact", "hit-semantic", "miss", "bypass", "off"].map((v) => h("option", { value: v, selected: params.get("cache") === v }, v || "any")));
  for (const k of ["from", "to"]) f[k] = h("input", { name: k, type: "datetime-local", value: params.get(k) || "" });
  const filter = (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, el] of Object.entries(f)) if (el.value) p.set(k, el.value);
    location.hash = "#/logs?" + p.toString();
  };
  const detail = h("div");
  const show = (r) => { detail.replaceChildren(h("h2", {}, `Request ${r.request_id}`), h("pre", { id: "detail" }, JSON.stringify(r, null, 2))); detail.scrollIntoView(); };
  const older = () => { const p = new URLSearchParams(params); p.set("cursor", page.next_cursor); location.hash = "#/logs?" + p.toString(); };
  return [
    h("h1", {}, "Request log"),
    h("form", { class: "inline", id: "filters", onsubmit: filter },
      h("label", {}, "Model", f.model), h("label", {}, "Provider", f.provider), h("label", {}, "Status", f.status),
      h("label", {}, "Cache", f.cache), h("label", {}, "From", f.from), h("label", {}, "To", f.to), h("button", { type: "submit" }, "Filter")),
    table([
      { label: "Time", get: (r) => fmtTime(r.at_ms) }, { label: "Endpoint", get: (r) => r.endpoint }, { label: "Model", get: (r) => r.model },
      { label: "Served by", get: (r) => (r.provider ? `${r.provider}/${r.served_model}` : "") },
      { label: "Status", get: (r) => h("span", { class: r.status < 400 ? "ok" : "bad" }, r.status) },
      { label: "Latency", num: true, get: (r) => fmtMs(r.latency_ms) }, { label: "TTFT", num: true, get: (r) => fmtMs(r.ttft_ms) },
      { label: "Tokens", num: true, get: (r) => `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}` },
      { label: "Cost", num: true, get: (r) => fmtUsd(r.cost_usd) }, { label: "Cache", get: (r) => r.cache || "" },
      { label: "Tools", num: true, get: (r) => (r.mcp_tools || []).length },
    ], page.data, show),
    h("div", { class: "pager" }, params.get("cursor") ? h("button", { class: "secondary", onclick: () => { location.hash = "#/logs"; } }, "Newest") : null,
      page.next_cursor ? h("button", { class: "secondary", onclick: older }, "Older") : null),
    detail,
  ];
};

// ---------- governance: keys, teams, customers ----------
const fmtBudgets = (x) => (x.budgets || []).map((b) => `${fmtUsd(b.spent_usd)} of ${fmtUsd(b.max_usd)} / ${b.period || "ever"}` + (b.reserved_usd ? ` (+${fmtUsd(b.reserved_usd)} reserved)` : "")).join("; ") || "none";
const fmtLimits = (x) => {
  const l = x.rate_limits || {};
  const parts = [];
  if (l.requests_per_minute) parts.push(`${l.current?.requests?.used ?? 0}/${l.requests_per_minute} req/min`);
  if (l.tokens_per_minute) parts.push(`${l.current?.tokens?.used ?? 0}/${l.tokens_per_minute} tok/min`);
  if (l.concurrent) parts.push(`${l.current?.concurrent?.reserved ?? 0}/${l.concurrent} in flight`);
  if (l.tool_calls_per_minute) parts.push(`${l.tool_calls_per_minute} tools/min`);
  return parts.join(", ") || "none";
};
// Fields a PATCH may change, per kind.
const EDITABLE = {
  customers: ["budgets", "rate_limits", "metadata"],
  teams: ["customer", "budgets", "rate_limits", "metadata"],
  keys: ["name", "team", "customer", "models", "deny_models", "mcp_tools", "budgets", "rate_limits", "expires_at", "active", "metadata"],
};
function secretBox(what, secret) {
  const code = h("code", { id: "secret" }, secret);
  const note = h("span", { class: "notice" }, "It will not be shown again.");
  const copy = h("button", { type: "button", class: "secondary", onclick: async () => {
    try { await navigator.clipboard.writeText(secret); note.textContent = "Copied. It will not be shown again."; }
    catch { note.textContent = "Copy it by hand (select the text). It will not be shown again."; }
  } }, "Copy");
  return h("div", { class: "notice ok secret", role: "status" }, `${what}: `, code, " ", copy, " ", note);
}
function governancePage(kind, title, singular) {
  return async () => {
    const lists = await Promise.all([api(`/api/${kind}`), kind === "customers" ? null : api("/api/customers"), kind === "keys" ? api("/api/teams") : null]);
    const [list, customers, teams] = lists;
    const msg = h("div");
    const done = async (notice) => { await render(); if (notice) main.prepend(notice); };
    const fail = (e) => { if (e instanceof AuthError) throw e; msg.replaceChildren(errorBox(e)); };
    const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]+", placeholder: singular === "key" ? "search-prod" : "search" });
    const owner = (name, items) => h("select", { name }, h("option", { value: "" }, "none"), (items?.data || []).map((x) => h("option", { value: x.id }, x.id)));
    const customerSel = customers ? owner("customer", customers) : null;
    const teamSel = teams ? owner("team", teams) : null;
    const maxUsd = h("input", { name: "max_usd", type: "number", min: "0", step: "any", placeholder: "20" });
    const period = h("select", { name: "period" }, ["", "1h", "1d", "1w", "1M", "1y"].map((p) => h("option", { value: p }, p || "never resets")));
    const rpm = h("input", { name: "requests_per_minute", type: "number", min: "1", placeholder: "60" });
    const models = h("input", { name: "models", placeholder: "openai/*, smart (all when empty)", size: 24 });
    const tools = h("input", { name: "mcp_tools", placeholder: "calc__* (none when empty)", size: 18 });
    const globs = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
    const create = async (ev) => {
      ev.preventDefault();
      const body = { id: id.value.trim() };
      if (customerSel?.value) body.customer = customerSel.value;
      if (teamSel?.value) body.team = teamSel.value;
      if (maxUsd.value !== "") body.budgets = [{ max_usd: Number(maxUsd.value), ...(period.value ? { period: period.value } : {}) }];
      if (rpm.value !== "") body.rate_limits = { requests_per_minute: Number(rpm.value) };
      if (singular === "key") {
        if (models.value.trim()) body.models = globs(models.value);
        if (tools.value.trim()) body.mcp_tools = globs(tools.value);
      }
      try {
        const v = await api(`/api/${kind}`, { method: "POST", json: body });
        await done(v.secret ? secretBox(`Created key ${v.id}`, v.secret) : h("div", { class: "notice ok", role: "status" }, `Created ${singular} ${v.id}.`));
      } catch (e) { fail(e); }
    };
    const path = (x) => `/api/${kind}/${encodeURIComponent(x.id)}`;
    const remove = async (x) => {
      if (!confirm(`Delete ${singular} ${x.id}?`)) return;
      try { await api(path(x), { method: "DELETE" }); await done(); } catch (e) { fail(e); }
    };
    const rotate = async (x) => {
      const grace = prompt(`Rotate key ${x.id}: how many seconds should the old secret keep working?`, "0");
      if (grace === null) return;
      try {
        const v = await api(`${path(x)}/rotate`, { method: "POST", json: { grace_seconds: Math.max(0, Math.floor(Number(grace) || 0)) } });
        await done(secretBox(`New secret for ${v.id}`, v.secret));
      } catch (e) { fail(e); }
    };
    const toggle = async (x) => {
      try { await api(path(x), { method: "PATCH", json: { active: !x.active } }); await done(); } catch (e) { fail(e); }
    };
    const editor = h("form", { class: "inline", id: "edit", hidden: true });
    const edit = (x) => {
      const fields = Object.fromEntries(EDITABLE[kind].filter((k) => x[k] !== undefined).map((k) => [k, k === "budgets" ? x[k].map(({ max_usd, period, calendar_aligned }) => ({ max_usd, period, calendar_aligned })) : (k === "rate_limits" ? Object.fromEntries(Object.entries(x[k]).filter(([n]) => n !== "current")) : x[k])]));
      const box = h("textarea", { name: "fields", class: "grow", rows: 8 }, JSON.stringify(fields, null, 2));
      const save = async (ev) => {
        ev.preventDefault();
        let body;
        try { body = JSON.parse(box.value); } catch (e) { msg.replaceChildren(errorBox({ message: "Not valid JSON: " + e.message })); return; }
        try { await api(path(x), { method: "PATCH", json: body }); await done(h("div", { class: "notice ok", role: "status" }, `Saved ${singular} ${x.id}.`)); } catch (e) { fail(e); }
      };
      editor.replaceChildren(h("label", { class: "grow" }, `Edit ${singular} ${x.id} (JSON; the fields given are changed)`, box), h("button", { type: "submit" }, "Save"));
      editor.onsubmit = save;
      editor.hidden = false;
      box.focus();
    };
    const actions = (x) => x.source !== "api" ? "from config" : h("span", { class: "actions" },
      h("button", { class: "secondary", onclick: () => edit(x) }, "Edit"),
      singular === "key" ? h("button", { class: "secondary", onclick: () => toggle(x) }, x.active ? "Disable" : "Enable") : null,
      singular === "key" ? h("button", { class: "secondary", onclick: () => rotate(x) }, "Rotate") : null,
      h("button", { class: "danger", onclick: () => remove(x) }, "Delete"));
    const cols = [{ label: "Id", get: (x) => x.id }];
    if (singular === "key") cols.push({ label: "Prefix", get: (x) => x.prefix || "" }, { label: "Team", get: (x) => x.team || "" });
    if (singular !== "customer") cols.push({ label: "Customer", get: (x) => x.customer || "" });
    if (singular === "key") cols.push({ label: "Models", get: (x) => (x.models || ["all"]).join(", ") + (x.deny_models?.length ? ` except ${x.deny_models.join(", ")}` : "") },
      { label: "MCP tools", get: (x) => (x.mcp_tools || []).join(", ") || "none" },
      { label: "Status", get: (x) => h("span", { class: x.active ? "ok" : "bad" }, x.active ? "active" : "disabled") });
    cols.push({ label: "Budgets (spent of max)", get: fmtBudgets }, { label: "Rate limits (this minute)", get: fmtLimits }, { label: "", get: actions });
    return [
      h("h1", {}, title), msg,
      table(cols, list.data),
      editor,
      h("h2", {}, `New ${singular}`),
      h("form", { class: "inline", id: "create", onsubmit: create },
        h("label", {}, "Id", id), customerSel ? h("label", {}, "Customer", customerSel) : null, teamSel ? h("label", {}, "Team", teamSel) : null,
        h("label", {}, "Budget (USD)", maxUsd), h("label", {}, "Period", period), h("label", {}, "Requests / min", rpm),
        singular === "key" ? h("label", {}, "Models", models) : null, singular === "key" ? h("label", {}, "MCP tools", tools) : null,
        h("button", { type: "submit" }, `Create ${singular}`)),
      h("p", { class: "notice" }, singular === "key" ? "A new key's secret is shown once, when it is created or rotated; the gateway keeps only its hash." : "Budgets and limits apply to every key below this level."),
    ];
  };
}
pages.keys = governancePage("keys", "Virtual keys", "key");
pages.teams = governancePage("teams", "Teams", "team");
pages.customers = governancePage("customers", "Customers", "customer");

// ---------- router ----------
// A page loads its data before it replaces the one shown. While it loads, the
// old page is inert (a click on a stale button does nothing), and only the
// latest navigation may replace the content, so a slow earlier page never
// overwrites a later one.
let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  main.inert = true;
  main.setAttribute("aria-busy", "true");
  try {
    await renderPage(() => seq === renderSeq);
  } finally {
    if (seq === renderSeq) {
      main.inert = false;
      main.removeAttribute("aria-busy");
    }
  }
}
async function renderPage(current) {
  const [path, query] = (location.hash.slice(2) || "dashboard").split("?");
  const name = pages[path] ? path : "dashboard";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  document.getElementById("logout").hidden = !sessionStorage.getItem(TOKEN);
  try {
    const token = sessionStorage.getItem(TOKEN);
    const s = await fetch("/ui/session", { headers: token ? { Authorization: "Bearer " + token } : {} }).then((r) => r.json());
    if (!s.authorized) {
      sessionStorage.removeItem(TOKEN);
      login(token ? "That token was not accepted." : null);
      return;
    }
    const content = await pages[name](new URLSearchParams(query || ""));
    if (!current()) return;
    main.replaceChildren(...[content].flat(Infinity));
    document.title = `Switchyard: ${document.querySelector("#nav a.active")?.textContent || ""}`;
  } catch (e) {
    if (e instanceof AuthError) {
      const hadToken = sessionStorage.getItem(TOKEN) !== null;
      sessionStorage.removeItem(TOKEN);
      login(hadToken ? "That token was not accepted." : null);
      return;
    }
    if (current()) main.replaceChildren(h("h1", {}, "Something went wrong"), errorBox(e));
  }
}
const route = () => render();
window.addEventListener("hashchange", route);
route();
