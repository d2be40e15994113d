//! The tool loop: inject the registered servers' tools, run the model's calls of them, call the
//! model again with the results, until it answers or the iteration bound is reached. It works
//! on canonical types only, so it runs through every provider the router has.
//!
//! Mixed turns (the model calls gateway tools and the client's own tools at once): the gateway
//! runs its own calls and returns only the client's calls. It holds the full turn (every gateway
//! round of this request, the assistant message with all its calls, and the gateway's results)
//! keyed by the client's call ids; when the client continues the conversation with its results,
//! [`Continuations::restore`] puts the held messages back in place, so the model sees a complete,
//! valid history.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use super::conn::{CallOutcome, ToolEntry};
use super::relay::{Relay, Relayer};
use super::{McpHub, McpOptions, McpReport, Mode};
use crate::chat::{
    ChatChunk, ChatRequest, ChatStream, ChunkChoice, Delta, Extra, Message, Role, StreamCollector,
    StreamError, StreamOptions, TokenDetails, ToolCall, Usage,
};
use crate::request::{ChatBackend, ChatBody, ChatOutcome, RequestContext};
use crate::router::RouterError;

/// How long a mixed turn's gateway rounds are held for the client to continue.
const HOLD_FOR: Duration = Duration::from_secs(3600);
/// Bound on held turns (the oldest go first).
const MAX_HELD: usize = 10_000;

/// What the MCP layer does for one request.
pub struct Plan {
    /// `auto` runs the loop; `inject` only offers the tools.
    pub mode: Mode,
    /// Offered tools (shared with the server's list, and with the hub's kept offer).
    pub tools: Arc<[Arc<ToolEntry>]>,
    /// Tool rounds allowed.
    pub max_iterations: u32,
    /// Bound on one tool call.
    pub timeout: Duration,
    /// What happened, for headers and the cache.
    pub report: Arc<McpReport>,
    /// SHA-256 over the offered tools' digests, when the hub had it made.
    pub digest: Option<[u8; 32]>,
}

impl Plan {
    /// The plan for a request, or `None` when there is nothing to inject. An unknown server or
    /// tool named in the headers is an error for the client.
    pub fn prepare(
        hub: &McpHub,
        opts: &McpOptions,
        gate: Option<&Arc<dyn crate::request::ToolGate>>,
        req: &ChatRequest,
    ) -> Result<Option<Self>, String> {
        if opts.mode == Mode::Off || !hub.has_servers() {
            return Ok(None);
        }
        // Without narrowing headers, the gate's whole offer, made once and kept by the hub.
        let (mut tools, mut digest) = if opts.servers.is_none() && opts.tools.is_none() {
            let (tools, digest) = hub.offer_all(gate);
            (tools, Some(digest))
        } else {
            (hub.offer(opts, gate.map(|g| &**g))?.into(), None)
        };
        // The client's own tools stay untouched; a gateway tool with the same name is not offered.
        if let Some(own) = req.tools.as_deref().filter(|t| !t.is_empty()) {
            let client: HashSet<&str> = own.iter().map(|t| t.function.name.as_str()).collect();
            if tools.iter().any(|t| client.contains(t.exposed.as_str())) {
                tools = tools
                    .iter()
                    .filter(|t| !client.contains(t.exposed.as_str()))
                    .cloned()
                    .collect();
                digest = None;
            }
        }
        if tools.is_empty() {
            return Ok(None);
        }
        let cap = hub.max_iterations();
        Ok(Some(Self {
            mode: opts.mode,
            tools,
            max_iterations: opts.max_iterations.map_or(cap, |m| m.min(cap)),
            timeout: hub.tool_timeout(),
            report: Arc::new(McpReport::default()),
            digest,
        }))
    }

    /// Adds the offered tools to the request, after the client's own.
    pub fn inject(&self, req: &mut ChatRequest) {
        let list = req.tools.get_or_insert_with(Vec::new);
        list.extend(self.tools.iter().map(|t| t.as_tool()));
    }

    /// What the cache keys this plan by instead of the injected tools: the mode and a digest of
    /// the offered tools (each tool's digest was computed when its server listed it), so a
    /// request is looked up before the tools are injected, without encoding their schemas.
    pub fn cache_key(&self) -> String {
        let digest = self
            .digest
            .unwrap_or_else(|| super::hub::offer_digest(&self.tools));
        // Written in place: `hex::encode` and `format!` went through a character iterator and
        // the formatting machinery, about 1.4k instructions a request.
        let mut digits = [0u8; 32];
        let mode = self.mode.as_str();
        let mut key = String::with_capacity(4 + mode.len() + 7 + digits.len());
        key.push_str("mcp=");
        key.push_str(mode);
        key.push_str(";tools=");
        match hex::encode_to_slice(&digest[..16], &mut digits)
            .ok()
            .and_then(|()| std::str::from_utf8(&digits).ok())
        {
            Some(hex) => key.push_str(hex),
            None => key.push_str(&hex::encode(&digest[..16])),
        }
        key
    }

    /// Whether `name` is one of the gateway's offered tools.
    pub fn is_gateway(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.exposed == name)
    }

    /// Splits calls into the gateway's and the client's.
    fn split(&self, calls: Vec<ToolCall>) -> (Vec<ToolCall>, Vec<ToolCall>) {
        calls
            .into_iter()
            .partition(|c| self.is_gateway(&c.function.name))
    }
}

/// The loop around a backend.
pub struct ToolLoop<B> {
    /// Who answers (the router).
    pub backend: Arc<B>,
    /// Who runs the tools.
    pub hub: Arc<McpHub>,
    /// For this request.
    pub plan: Plan,
}

/// What every round of a loop used, summed, and its upstream attempts.
#[derive(Default)]
struct Totals {
    /// The rounds' usage: token counts and their details (cached, reasoning, audio and
    /// prediction tokens) summed; `None` until a round reports usage.
    usage: Option<Usage>,
    attempts: u32,
}

impl Totals {
    fn add(&mut self, u: Option<&Usage>) {
        let Some(u) = u else { return };
        let sum = self.usage.get_or_insert_with(Usage::default);
        sum.prompt_tokens = sum.prompt_tokens.saturating_add(u.prompt_tokens);
        sum.completion_tokens = sum.completion_tokens.saturating_add(u.completion_tokens);
        sum.total_tokens = sum.total_tokens.saturating_add(u.total_tokens);
        add_details(
            &mut sum.prompt_tokens_details,
            u.prompt_tokens_details.as_deref(),
        );
        add_details(
            &mut sum.completion_tokens_details,
            u.completion_tokens_details.as_deref(),
        );
    }

    fn seen(&self) -> bool {
        self.usage.is_some()
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}

/// Adds one round's detail counts to the sum: a kind any round reported is in the sum (members
/// the gateway does not model, a vendor's own counts, are not summed).
fn add_details(sum: &mut Option<Box<TokenDetails>>, round: Option<&TokenDetails>) {
    let Some(r) = round else { return };
    let s = sum.get_or_insert_with(Box::default);
    let add = |a: &mut Option<u64>, b: Option<u64>| {
        if let Some(b) = b {
            *a = Some(a.unwrap_or(0).saturating_add(b));
        }
    };
    add(&mut s.cached_tokens, r.cached_tokens);
    add(&mut s.cache_write_tokens, r.cache_write_tokens);
    add(&mut s.reasoning_tokens, r.reasoning_tokens);
    add(&mut s.audio_tokens, r.audio_tokens);
    add(
        &mut s.accepted_prediction_tokens,
        r.accepted_prediction_tokens,
    );
    add(
        &mut s.rejected_prediction_tokens,
        r.rejected_prediction_tokens,
    );
}

/// A first round's own finish and usage chunks, which the relay leaves out, held to close the
/// stream with if the answer ends in that round: the client then gets what the upstream sent,
/// as it sent it (an OpenAI chunk as its JSON), instead of closing chunks written anew from the
/// loop's totals. Dropped (`None`) as soon as the round has something those chunks would not say
/// the same way: a finish or usage on a chunk that is sent (edited), a second finish or usage, a
/// chunk with another id, time or model, a finish that repeats the role.
#[derive(Default)]
struct UpstreamEnd {
    finish: Option<ChunkBox>,
    usage: Option<ChunkBox>,
}

/// A chunk as a stream carries it.
type ChunkBox = Box<crate::chat::Chunk>;

impl UpstreamEnd {
    /// Takes a chunk the relay left out whole.
    fn left_out(mut self, chunk: ChunkBox, head: Option<&(String, u64, String)>) -> Option<Self> {
        let same_head = head.is_some_and(|(id, created, model)| {
            chunk.id == *id && chunk.created == *created && chunk.model == *model
        });
        let finish = chunk.choices.iter().any(|c| c.finish_reason.is_some());
        match (chunk.choices.len(), chunk.usage.is_some(), finish) {
            // Nothing the client is sent: no choice and no usage, or deltas with nothing new.
            (0, false, _) | (_, false, false) => Some(self),
            (0, true, _) if same_head && self.usage.is_none() => {
                self.usage = Some(chunk);
                Some(self)
            }
            (1, false, true)
                if same_head && self.finish.is_none() && chunk.choices[0].delta.role.is_none() =>
            {
                self.finish = Some(chunk);
                Some(self)
            }
            _ => None,
        }
    }

    /// Whether a chunk about to be edited (and sent) carries what the held chunks would have to
    /// say: usage, or choice 0's finish reason, which the edit takes out.
    fn spoiled_by_edit(chunk: &crate::chat::Chunk) -> bool {
        chunk.usage.is_some()
            || chunk
                .choices
                .iter()
                .any(|c| c.index == 0 && c.finish_reason.is_some())
    }

    /// The chunks that close the stream, if the round answered and they say all the closing
    /// chunks would: a finish, and usage exactly when the round had usage.
    fn closing(self, answered: bool, had_usage: bool) -> Option<(ChunkBox, Option<ChunkBox>)> {
        let finish = self.finish.filter(|_| answered)?;
        (self.usage.is_some() == had_usage).then_some((finish, self.usage))
    }
}

impl<B: ChatBackend<Error = RouterError> + 'static> ToolLoop<B> {
    /// Runs the request through the loop, streamed or not as the client asked.
    pub async fn run(
        self,
        req: Box<ChatRequest>,
        ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        if req.is_stream() {
            self.run_stream(req, ctx).await
        } else {
            self.run_complete(req, ctx).await
        }
    }

    fn limit_reached(&self, req: &mut ChatRequest, rounds: u32) {
        if rounds >= self.plan.max_iterations {
            // Answer with what the conversation has now.
            req.tool_choice = Some(Value::String("none".into()));
            self.plan.report.set_limited();
        }
    }

    async fn run_complete(
        self,
        mut req: Box<ChatRequest>,
        ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        let mut totals = Totals::default();
        let mut rounds = 0u32;
        let mut before: Vec<Message> = Vec::new();
        // The conversation's digest, for holding rounds: worked out when a tool first runs.
        let mut prefix = None;
        self.limit_reached(&mut req, rounds);
        loop {
            let out = self.backend.chat(&req, ctx).await;
            // An answer kept as the upstream's JSON is sent as it came when it ends the loop at
            // once (it calls none of the gateway's tools); otherwise it is decoded, to be read
            // and changed.
            let out = match out {
                Ok(o)
                    if rounds == 0
                        && matches!(&o.body, ChatBody::Raw(raw) if !raw.tool_names.iter().any(|n| self.plan.is_gateway(n))) =>
                {
                    self.hub.metrics_loop("answered");
                    return Ok(o);
                }
                Ok(o) => crate::router::decode_raw(o),
                Err(e) => Err(e),
            };
            let mut out = match out {
                Ok(o) => o,
                Err(e) => {
                    self.hub.metrics_loop("error");
                    return Err(e);
                }
            };
            totals.attempts += out.served.attempts;
            let ChatBody::Complete(mut resp) = out.body else {
                return Ok(out);
            };
            // The upstream's JSON goes back only with the answer unchanged.
            let json = out.json.take();
            totals.add(resp.usage.as_ref());
            let Some(choice) = resp.choices.first_mut() else {
                out.body = ChatBody::Complete(resp);
                out.json = json;
                return Ok(out);
            };
            let calls = choice.message.tool_calls.clone().unwrap_or_default();
            let (mine, theirs) = self.plan.split(calls);
            let end = if mine.is_empty() {
                Some("answered")
            } else if rounds >= self.plan.max_iterations {
                self.plan.report.set_limited();
                choice.message.tool_calls = (!theirs.is_empty()).then(|| theirs.clone());
                if theirs.is_empty() {
                    choice.finish_reason = Some("stop".into());
                    if choice.message.content.is_none() {
                        choice.message.content = Some(crate::chat::Content::Text(String::new()));
                    }
                }
                Some("max_iterations")
            } else {
                None
            };
            if let Some(how) = end {
                self.hub.metrics_loop(how);
                if rounds == 0 && mine.is_empty() {
                    // The model's own answer, as it came (its usage details included).
                    out.json = json;
                } else {
                    resp.usage = totals.usage().or(resp.usage);
                }
                out.served.attempts = totals.attempts;
                out.body = ChatBody::Complete(resp);
                return Ok(out);
            }
            let assistant = choice.message.clone();
            // Before the first round joins the conversation.
            let prefix = *prefix.get_or_insert_with(|| digest(&req.messages));
            let results = Box::pin(run_calls(&self.hub, &mine, self.plan.timeout, ctx)).await;
            rounds += 1;
            self.plan.report.add_round(mine.len());
            if !theirs.is_empty() {
                let mut held = before;
                held.push(assistant);
                held.extend(results);
                self.hub.continuations.hold(prefix, &theirs, held);
                choice.message.tool_calls = Some(theirs);
                choice.finish_reason = Some("tool_calls".into());
                self.hub.metrics_loop("client_tools");
                resp.usage = totals.usage().or(resp.usage);
                out.served.attempts = totals.attempts;
                out.body = ChatBody::Complete(resp);
                return Ok(out);
            }
            before.push(assistant.clone());
            before.extend(results.iter().cloned());
            req.messages.push(assistant);
            req.messages.extend(results);
            self.limit_reached(&mut req, rounds);
        }
    }

    async fn run_stream(
        self,
        mut req: Box<ChatRequest>,
        ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        // Usage of every round is summed and sent once, at the end.
        req.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        self.limit_reached(&mut req, 0);
        let first = match self.backend.chat(&req, ctx).await {
            Ok(o) => o,
            Err(e) => {
                self.hub.metrics_loop("error");
                return Err(e);
            }
        };
        let served = first.served.clone();
        let ChatBody::Stream(upstream) = first.body else {
            return Ok(first);
        };
        let ctx = ctx.clone();
        let body: ChatStream = Box::pin(async_stream::stream! {
            let mut upstream = upstream;
            let mut relayer = Relayer::default();
            let mut totals = Totals::default();
            let mut rounds = 0u32;
            let mut before: Vec<Message> = Vec::new();
            // The conversation's digest, for holding rounds: worked out when a tool first runs.
            let mut prefix = None;
            loop {
                let mut acc = StreamCollector::default();
                relayer.round();
                // The first round's own finish and usage chunks, held: if the answer ends in
                // that round, they go out as they came (usage details included) instead of
                // closing chunks written anew.
                let mut held = (rounds == 0).then(UpstreamEnd::default);
                while let Some(item) = upstream.next().await {
                    let mut chunk = match item {
                        Ok(c) => c,
                        Err(e) => {
                            self.hub.metrics_loop("error");
                            yield Err(e);
                            return;
                        }
                    };
                    acc.push(&chunk);
                    totals.add(chunk.usage.as_ref());
                    // Most chunks pass as they are (an OpenAI chunk as its JSON), or not at all.
                    match relayer.relay(&chunk) {
                        Relay::AsIs => yield Ok(chunk),
                        Relay::Drop => {
                            if let Some(h) = held.take() {
                                held = h.left_out(chunk, relayer.head.as_ref());
                            }
                        }
                        Relay::Edit => {
                            if UpstreamEnd::spoiled_by_edit(&chunk) {
                                held = None;
                            }
                            match chunk.make_mut() {
                                Ok(c) => {
                                    if relayer.edit(c, |name| self.plan.is_gateway(name)) {
                                        yield Ok(chunk);
                                    }
                                }
                                Err(e) => {
                                    self.hub.metrics_loop("error");
                                    yield Err(e);
                                    return;
                                }
                            }
                        }
                    }
                }
                let round = acc.finish();
                let message = round
                    .choices
                    .into_iter()
                    .next()
                    .map(|c| c.message)
                    .unwrap_or_else(|| Message::text(Role::Assistant, ""));
                let (mine, theirs) = self.plan.split(message.tool_calls.clone().unwrap_or_default());
                let end = if mine.is_empty() {
                    Some(("answered", relayer.finish.clone()))
                } else if rounds >= self.plan.max_iterations {
                    self.plan.report.set_limited();
                    let why = if theirs.is_empty() { "stop" } else { "tool_calls" };
                    Some(("max_iterations", Some(why.to_owned())))
                } else {
                    None
                };
                let (id, created, model) = relayer.head.clone().unwrap_or_default();
                let closing = |reason: Option<String>, usage: Option<Usage>| {
                    let mut out = vec![ChatChunk {
                        id: id.clone(),
                        object: "chat.completion.chunk".into(),
                        created,
                        model: model.clone(),
                        choices: vec![ChunkChoice {
                            index: 0,
                            delta: Delta::default(),
                            finish_reason: Some(reason.unwrap_or_else(|| "stop".into())),
                            extra: Extra::new(),
                        }],
                        usage: None,
                        extra: Extra::new(),
                    }];
                    if let Some(u) = usage {
                        out.push(ChatChunk {
                            id: id.clone(),
                            object: "chat.completion.chunk".into(),
                            created,
                            model: model.clone(),
                            choices: Vec::new(),
                            usage: Some(u),
                            extra: Extra::new(),
                        });
                    }
                    out
                };
                if let Some((how, reason)) = end {
                    self.hub.metrics_loop(how);
                    match held.and_then(|h| h.closing(how == "answered", totals.seen())) {
                        Some((finish, usage)) => {
                            yield Ok(finish);
                            if let Some(u) = usage {
                                yield Ok(u);
                            }
                        }
                        None => {
                            for c in closing(reason, totals.usage()) {
                                yield Ok(Box::new(c.into()));
                            }
                        }
                    }
                    return;
                }
                // Before the first round joins the conversation.
                let prefix = *prefix.get_or_insert_with(|| digest(&req.messages));
                // Runs while the SSE layer sends keep-alive comments; dropped (and the calls
                // cancelled) if the client goes away.
                let results = Box::pin(run_calls(&self.hub, &mine, self.plan.timeout, &ctx)).await;
                rounds += 1;
                self.plan.report.add_round(mine.len());
                if !theirs.is_empty() {
                    let mut held = before;
                    held.push(message);
                    held.extend(results);
                    self.hub.continuations.hold(prefix, &theirs, held);
                    self.hub.metrics_loop("client_tools");
                    for c in closing(Some("tool_calls".into()), totals.usage()) {
                        yield Ok(Box::new(c.into()));
                    }
                    return;
                }
                before.push(message.clone());
                before.extend(results.iter().cloned());
                req.messages.push(message);
                req.messages.extend(results);
                self.limit_reached(&mut req, rounds);
                match self.backend.chat(&req, &ctx).await {
                    Ok(o) => match o.body {
                        ChatBody::Stream(s) => upstream = s,
                        ChatBody::Complete(_) | ChatBody::Raw(_) => {
                            yield Err(StreamError::new("the upstream answered a streaming request without a stream"));
                            return;
                        }
                    },
                    Err(e) => {
                        self.hub.metrics_loop("error");
                        yield Err(StreamError::new(e.to_string()));
                        return;
                    }
                }
            }
        });
        Ok(ChatOutcome {
            served,
            body: ChatBody::Stream(body),
            cache: None,
            mcp: None,
            json: None,
        })
    }
}

/// The tool message answering call `id`.
fn tool_message(id: &str, text: String) -> Message {
    let mut m = Message::text(Role::Tool, text);
    m.tool_call_id = Some(id.to_owned());
    m
}

/// Runs the calls in parallel, each within `timeout` (and the request's deadline); one tool
/// message per call, in call order.
async fn run_calls(
    hub: &McpHub,
    calls: &[ToolCall],
    timeout: Duration,
    ctx: &RequestContext,
) -> Vec<Message> {
    let left = ctx.deadline.saturating_duration_since(Instant::now());
    let timeout = timeout.min(left.max(Duration::from_millis(1)));
    let started = Instant::now();
    for c in calls {
        ctx.spent.tool(&c.function.name);
    }
    let runs = calls.iter().map(|c| async move {
        let span = tracing::info_span!(
            "tool",
            otel.name = format!("execute_tool {}", c.function.name),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = c.function.name.as_str(),
            gen_ai.tool.call.id = c.id.as_str(),
            error.type = tracing::field::Empty,
        );
        // Checked again at execution (and counted toward the key's tool calls per minute).
        let verdict = match &ctx.tool_gate {
            Some(g) => g.check(&c.function.name).await,
            None => Ok(()),
        };
        if let Err(why) = verdict {
            span.record("error.type", why.code());
            return tool_message(&c.id, format!("Error: {why}"));
        }
        // Plugins may change the arguments or refuse the call, and see the result first.
        let mut arguments = c.function.arguments.clone();
        if let Some(h) = &ctx.tool_hooks
            && let Err(why) = h.before(&c.function.name, &mut arguments)
        {
            span.record("error.type", "plugin_blocked");
            return tool_message(&c.id, format!("Error: {why}"));
        }
        let r = hub
            .call(&c.function.name, &arguments, timeout)
            .instrument(span.clone())
            .await;
        if r.outcome != CallOutcome::Ok {
            span.record("error.type", r.outcome.label());
            span.record("otel.status_code", "ERROR");
        }
        let mut text = match r.outcome {
            CallOutcome::Ok => r.text,
            _ => format!("Error: {}", r.text),
        };
        if let Some(h) = &ctx.tool_hooks {
            h.after(&c.function.name, &mut text);
        }
        tool_message(&c.id, text)
    });
    let results = futures_util::future::join_all(runs).await;
    ctx.spent.tool_round(started.elapsed());
    results
}

struct Held {
    at: Instant,
    /// Digest of the conversation before the turn: a continuation only applies to the same one.
    prefix: [u8; 32],
    messages: Arc<Vec<Message>>,
}

/// A digest of a conversation's substance (roles, text, call ids), insensitive to the null and
/// empty fields SDKs add or drop when they echo messages back.
pub fn digest(messages: &[Message]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for m in messages {
        // The role's name as `Debug` writes it, without formatting a string per message.
        h.update(match m.role {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool",
        });
        h.update([0]);
        h.update(m.text_view().as_bytes());
        h.update([0]);
        for c in m.tool_calls.iter().flatten() {
            h.update(c.id.as_bytes());
            h.update([1]);
        }
        h.update(m.tool_call_id.as_deref().unwrap_or_default().as_bytes());
        h.update([0x1e]);
    }
    h.finalize().into()
}

/// Gateway rounds of mixed turns, held for clients that continue the conversation.
#[derive(Default)]
pub struct Continuations {
    inner: Mutex<(HashMap<String, Held>, VecDeque<String>)>,
}

impl Continuations {
    /// Holds what replaces the assistant message the client got (which carries only `theirs`):
    /// the gateway's earlier rounds of the request, the full assistant message and the results.
    fn hold(&self, prefix: [u8; 32], theirs: &[ToolCall], rounds: Vec<Message>) {
        let Some(key) = theirs.first().map(|c| c.id.clone()) else {
            return;
        };
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        let now = Instant::now();
        while let Some(oldest) = order.front() {
            let expired = map
                .get(oldest)
                .is_none_or(|h| now.duration_since(h.at) > HOLD_FOR);
            if expired || map.len() >= MAX_HELD {
                if let Some(k) = order.pop_front() {
                    map.remove(&k);
                }
            } else {
                break;
            }
        }
        map.insert(
            key.clone(),
            Held {
                at: now,
                prefix,
                messages: Arc::new(rounds),
            },
        );
        order.push_back(key);
    }

    fn get(&self, id: &str) -> Option<(Arc<Vec<Message>>, [u8; 32])> {
        let g = self.inner.lock().ok()?;
        g.0.get(id)
            .filter(|h| h.at.elapsed() <= HOLD_FOR)
            .map(|h| (h.messages.clone(), h.prefix))
    }

    /// Puts held gateway rounds back in place of the assistant messages the client echoes, front
    /// to back (a later turn was held with the earlier ones already restored). A held turn is
    /// used only when the conversation before it is the one it was held for and the echoed calls
    /// are the held turn's. Returns how many messages were restored.
    pub fn restore(&self, messages: &mut Vec<Message>) -> usize {
        let mut restored = 0;
        let mut i = 0;
        while i < messages.len() {
            let key = messages
                .get(i)
                .filter(|m| m.role == Role::Assistant)
                .and_then(|m| m.tool_calls.as_ref())
                .and_then(|c| c.first())
                .map(|c| c.id.clone());
            let Some((held, prefix)) = key.and_then(|k| self.get(&k)) else {
                i += 1;
                continue;
            };
            let held_ids: HashSet<&str> = held
                .iter()
                .rfind(|m| m.role == Role::Assistant)
                .and_then(|m| m.tool_calls.as_ref())
                .map(|c| c.iter().map(|c| c.id.as_str()).collect())
                .unwrap_or_default();
            let subset = messages
                .get(i)
                .and_then(|m| m.tool_calls.as_ref())
                .is_some_and(|calls| calls.iter().all(|c| held_ids.contains(c.id.as_str())));
            if !subset || digest(messages.get(..i).unwrap_or_default()) != prefix {
                i += 1;
                continue;
            }
            messages.splice(i..=i, held.iter().cloned());
            i += held.len();
            restored += held.len();
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Content, FunctionCall};
    use sha2::{Digest, Sha256};

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: "{}".into(),
            },
        }
    }

    fn assistant(calls: Vec<ToolCall>) -> Message {
        Message {
            role: Role::Assistant,
            content: None,
            name: None,
            tool_calls: Some(calls),
            tool_call_id: None,
            extra: Extra::new(),
        }
    }

    fn result(id: &str, text: &str) -> Message {
        Message {
            role: Role::Tool,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: Some(id.into()),
            extra: Extra::new(),
        }
    }

    fn chunk(id: &str, delta: Delta, finish: Option<&str>) -> Box<crate::chat::Chunk> {
        Box::new(ChatChunk::of(id, 1, "m", delta, finish.map(str::to_owned)).into())
    }

    fn usage_chunk(id: &str) -> Box<crate::chat::Chunk> {
        let mut c = ChatChunk::of(id, 1, "m", Delta::default(), None);
        c.choices.clear();
        c.usage = Some(Usage::new(3, 4));
        Box::new(c.into())
    }

    #[test]
    fn the_upstreams_own_end_closes_the_stream_only_when_it_says_all_the_closing_would() {
        let head = ("a".to_owned(), 1, "m".to_owned());
        let head = Some(&head);
        let finish = || chunk("a", Delta::default(), Some("stop"));
        let ended = |chunks: Vec<Box<crate::chat::Chunk>>| {
            chunks
                .into_iter()
                .try_fold(UpstreamEnd::default(), |h, c| h.left_out(c, head))
        };
        // The finish and the usage, in either order, and chunks that say nothing in between.
        let empty = || chunk("a", Delta::default(), None);
        let both = ended(vec![finish(), empty(), usage_chunk("a")]).expect("held");
        let (f, u) = both.closing(true, true).expect("passed");
        assert_eq!(f.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(u.and_then(|u| u.usage.clone()), Some(Usage::new(3, 4)));
        let both = ended(vec![usage_chunk("a"), finish()]).expect("held");
        assert!(both.closing(true, true).is_some());
        // Without usage in the round, the finish alone.
        let (_, u) = ended(vec![finish()])
            .expect("held")
            .closing(true, false)
            .expect("passed");
        assert!(u.is_none());
        // Not when the round did not answer, nor when usage came that is not held, nor without
        // a finish.
        assert!(
            ended(vec![finish()])
                .expect("held")
                .closing(false, false)
                .is_none()
        );
        assert!(
            ended(vec![finish()])
                .expect("held")
                .closing(true, true)
                .is_none()
        );
        assert!(
            ended(vec![usage_chunk("a")])
                .expect("held")
                .closing(true, true)
                .is_none()
        );
        // Given up on: a second finish or usage, another id, a finish that repeats the role.
        assert!(ended(vec![finish(), finish()]).is_none());
        assert!(ended(vec![usage_chunk("a"), usage_chunk("a")]).is_none());
        assert!(ended(vec![chunk("b", Delta::default(), Some("stop"))]).is_none());
        assert!(ended(vec![usage_chunk("b")]).is_none());
        let role = Delta {
            role: Some("assistant".into()),
            ..Delta::default()
        };
        assert!(ended(vec![chunk("a", role, Some("stop"))]).is_none());
        // A sent chunk that carries the finish or usage (the edit takes them out).
        let text = || Delta {
            content: Some("hi".into()),
            ..Delta::default()
        };
        assert!(UpstreamEnd::spoiled_by_edit(&chunk(
            "a",
            text(),
            Some("stop")
        )));
        let mut with_usage = chunk("a", text(), None);
        with_usage.make_mut().expect("chunk").usage = Some(Usage::new(1, 1));
        assert!(UpstreamEnd::spoiled_by_edit(&with_usage));
        assert!(!UpstreamEnd::spoiled_by_edit(&chunk("a", text(), None)));
    }

    #[test]
    fn the_plans_cache_key_names_the_mode_and_the_offered_tools_digest() {
        let tool = |digest: u8| {
            Arc::new(ToolEntry {
                exposed: "calc__add".into(),
                original: "add".into(),
                server: "calc".into(),
                description: None,
                input_schema: crate::chat::Schema::new(serde_json::json!({"type": "object"})),
                digest: [digest; 32],
            })
        };
        let plan = |mode, tools: Vec<Arc<ToolEntry>>| Plan {
            mode,
            tools: tools.into(),
            max_iterations: 1,
            timeout: Duration::from_secs(1),
            report: Arc::default(),
            digest: None,
        };
        let key = plan(Mode::Auto, vec![tool(1), tool(2)]).cache_key();
        let mut h = Sha256::new();
        h.update([1u8; 32]);
        h.update([2u8; 32]);
        let digest: [u8; 32] = h.finalize().into();
        assert_eq!(
            key,
            format!("mcp=auto;tools={}", hex::encode(&digest[..16]))
        );
        assert!(
            plan(Mode::Inject, vec![tool(1), tool(2)])
                .cache_key()
                .starts_with("mcp=inject;tools=")
        );
        assert_ne!(plan(Mode::Auto, vec![tool(2), tool(1)]).cache_key(), key);
        assert_ne!(plan(Mode::Auto, vec![tool(1)]).cache_key(), key);
    }

    #[test]
    fn the_rounds_usage_is_summed_with_its_details() {
        let mut totals = Totals::default();
        assert!(!totals.seen());
        let mut first = Usage::new(100, 10);
        first.prompt_tokens_details = Some(Box::new(TokenDetails {
            cached_tokens: Some(0),
            audio_tokens: Some(1),
            ..TokenDetails::default()
        }));
        first.completion_tokens_details = Some(Box::new(TokenDetails {
            reasoning_tokens: Some(4),
            ..TokenDetails::default()
        }));
        let mut second = Usage::new(130, 20);
        second.prompt_tokens_details = Some(Box::new(TokenDetails {
            cached_tokens: Some(96),
            cache_write_tokens: Some(30),
            ..TokenDetails::default()
        }));
        totals.add(Some(&first));
        totals.add(None);
        totals.add(Some(&second));
        let sum = totals.usage().expect("usage");
        assert_eq!(
            (sum.prompt_tokens, sum.completion_tokens, sum.total_tokens),
            (230, 30, 260)
        );
        assert_eq!(sum.cached_tokens(), 96);
        assert_eq!(sum.cache_write_tokens(), 30);
        assert_eq!(sum.reasoning_tokens(), 4);
        let prompt = sum.prompt_tokens_details.as_deref().expect("details");
        assert_eq!(prompt.audio_tokens, Some(1));
        assert_eq!(prompt.reasoning_tokens, None);
        // Rounds without details give none.
        let mut plain = Totals::default();
        plain.add(Some(&Usage::new(1, 2)));
        assert_eq!(plain.usage(), Some(Usage::new(1, 2)));
    }

    #[test]
    fn held_turns_come_back_only_in_their_own_conversation() {
        let held = Continuations::default();
        let user = Message::text(Role::User, "weather and sum?");
        let full = assistant(vec![call("g1", "calc__add"), call("c1", "get_weather")]);
        held.hold(
            digest(std::slice::from_ref(&user)),
            &[call("c1", "get_weather")],
            vec![full.clone(), result("g1", "5")],
        );
        let echoed = assistant(vec![call("c1", "get_weather")]);
        let mut convo = vec![user.clone(), echoed.clone(), result("c1", "sunny")];
        assert_eq!(held.restore(&mut convo), 2);
        assert_eq!(convo.len(), 4);
        assert_eq!(convo[1], full);
        assert_eq!(convo[2].tool_call_id.as_deref(), Some("g1"));
        assert_eq!(convo[3].tool_call_id.as_deref(), Some("c1"));
        // Sent again (clients resend the whole history every turn), it is restored again.
        let mut again = vec![user, echoed.clone(), result("c1", "sunny")];
        assert_eq!(held.restore(&mut again), 2);
        // Another conversation that echoes the same call id gets nothing.
        let mut other = vec![
            Message::text(Role::User, "something else"),
            echoed,
            result("c1", "x"),
        ];
        assert_eq!(held.restore(&mut other), 0);
        assert_eq!(other.len(), 3);
        // Calls the held turn did not have: nothing.
        let mut forged = vec![
            Message::text(Role::User, "weather and sum?"),
            assistant(vec![call("c1", "get_weather"), call("zz", "other")]),
        ];
        assert_eq!(held.restore(&mut forged), 0);
    }
}
