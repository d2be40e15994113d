//! WebAssembly plugins (`kind = "wasm"`), run with wasmtime.
//!
//! The ABI (documented in `docs/plugins.md`): the module exports `memory`, `alloc(len) -> ptr`
//! and the hooks it implements, each `(ptr, len) -> i64`; the gateway writes the hook's input as
//! JSON into memory from `alloc`, calls the hook, and reads its JSON answer at the packed
//! `(ptr << 32) | len` the hook returns (`0`: no change). Optional exports: `dealloc(ptr, len)`
//! (the gateway calls it for the input after each call) and `init(ptr, len) -> i64` (the plugin's
//! `config` table, once per instance; an answer `{"errors": [{"path", "message"}]}` refuses it).
//!
//! Limits: each call has a deadline (`timeout_ms`, enforced by epoch interruption on a 5 ms tick)
//! and each instance a memory cap (`memory_mb`); the module gets no WASI, so no file system,
//! network, clock or environment: its only imports are `switchyard.log` and AssemblyScript's
//! `env.abort` and `env.seed`. A trap, a timeout or an exhausted memory fails that call (the
//! plugin's `on_error` decides) and throws the instance away; the gateway never goes down with it.
//!
//! Instances are pooled: a call takes an idle instance (or makes one) and puts it back after, so
//! concurrent requests never share one and a module's globals persist between calls of one
//! instance (a plugin must keep per-request data in the `state` the gateway hands it).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_plugin::{
    ChatChunk, ChatRequest, ChatResponse, ChunkVerdict, Hooks, Plugin, PluginError, RequestInfo,
    State, ToolVerdict, Verdict,
};
use wasmtime::{
    Caller, Engine, ExternType, InstancePre, Linker, Memory, Module, Store, Trap, TypedFunc,
    ValType,
};

use crate::config::plugins::WasmSource;

/// How often the engine's epoch advances: the granularity of call deadlines.
const TICK: Duration = Duration::from_millis(5);
/// The largest answer a hook may return.
const MAX_ANSWER: usize = 16 << 20;
/// Idle instances kept per plugin.
const MAX_IDLE: usize = 64;

/// The hook exports, in the order of [`Hook`].
const HOOK_EXPORTS: [&str; 7] = [
    "on_request",
    "on_response",
    "on_stream_chunk",
    "on_stream_end",
    "on_tool_call",
    "on_tool_result",
    "on_complete",
];

#[derive(Debug, Clone, Copy)]
enum Hook {
    Request = 0,
    Response,
    StreamChunk,
    StreamEnd,
    ToolCall,
    ToolResult,
    Complete,
}

/// The one engine of the process, with the thread that advances its epoch (started with the
/// first WebAssembly plugin; a gateway without one has neither).
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = wasmtime::Config::new();
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| format!("cannot start the wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What an instance's store holds: its limits, and why it stopped when it aborted.
struct HostData {
    plugin: Arc<str>,
    memory_limit: usize,
    /// Set when the plugin called `abort` or outgrew its memory: the reason its call failed.
    failure: Option<String>,
}

impl wasmtime::ResourceLimiter for HostData {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.failure = Some(format!(
                "needed {} MiB of memory, over its limit of {} MiB (memory_mb)",
                desired.div_ceil(1 << 20),
                self.memory_limit >> 20
            ));
            return Err(wasmtime::format_err!("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// One instance and its exports.
struct Instance {
    store: Store<HostData>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    dealloc: Option<TypedFunc<(i32, i32), ()>>,
    hooks: [Option<TypedFunc<(i32, i32), i64>>; 7],
}

impl Instance {
    /// Writes `input` into the instance and calls `f` with it; the answer's bytes, if any.
    fn call(
        &mut self,
        f: &TypedFunc<(i32, i32), i64>,
        input: &[u8],
        ticks: u64,
    ) -> Result<Option<Vec<u8>>, wasmtime::Error> {
        self.store.set_epoch_deadline(ticks);
        let len = i32::try_from(input.len())
            .map_err(|_| wasmtime::format_err!("the input is too large for a 32-bit module"))?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        let at = usize::try_from(ptr)
            .map_err(|_| wasmtime::format_err!("alloc returned a negative pointer"))?;
        self.memory
            .write(&mut self.store, at, input)
            .map_err(|_| wasmtime::format_err!("alloc returned memory outside the module's"))?;
        let packed = f.call(&mut self.store, (ptr, len))? as u64;
        let answer = if packed == 0 {
            None
        } else {
            let start = usize::try_from(packed >> 32).unwrap_or(usize::MAX);
            let n = usize::try_from(packed & 0xffff_ffff).unwrap_or(usize::MAX);
            if n > MAX_ANSWER {
                return Err(wasmtime::format_err!(
                    "answered {n} bytes (the most is {MAX_ANSWER})"
                ));
            }
            let bytes = self
                .memory
                .data(&self.store)
                .get(start..start.saturating_add(n))
                .ok_or_else(|| wasmtime::format_err!("answered outside its memory"))?;
            Some(bytes.to_vec())
        };
        if let Some(d) = &self.dealloc {
            d.call(&mut self.store, (ptr, len))?;
        }
        Ok(answer)
    }
}

/// A loaded WebAssembly plugin.
pub struct Wasm {
    name: Arc<str>,
    pre: InstancePre<HostData>,
    /// The plugin's `config`, as JSON, handed to `init` of each new instance.
    config: Vec<u8>,
    memory: usize,
    timeout: Duration,
    ticks: u64,
    exports: [bool; 7],
    idle: Mutex<Vec<Instance>>,
}

/// The imports a module may have: (module, name, parameters, results).
const IMPORTS: &[(&str, &str, &[ValType], &[ValType])] = &[
    (
        "switchyard",
        "log",
        &[ValType::I32, ValType::I32, ValType::I32],
        &[],
    ),
    (
        "env",
        "abort",
        &[ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        &[],
    ),
    ("env", "seed", &[], &[ValType::F64]),
];

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

fn same(a: impl ExactSizeIterator<Item = ValType>, b: &[ValType]) -> bool {
    a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
}

impl Wasm {
    /// Compiles and checks the module (imports, exports and their types), and makes its first
    /// instance, whose `init` validates the plugin's `config`. Every problem found is listed.
    pub fn load(name: &str, source: &WasmSource, config: &Value) -> Result<Self, Vec<String>> {
        let engine = engine().map_err(|e| vec![e])?;
        let module = Module::new(engine, &*source.bytes).map_err(|e| {
            // The top-level message only: the causes below it dump the bytes read.
            vec![format!(
                "`{}` is not a WebAssembly module wasmtime can run ({e})",
                source.path.display()
            )]
        })?;
        let mut problems = Vec::new();
        for import in module.imports() {
            let known = IMPORTS
                .iter()
                .find(|(m, n, _, _)| *m == import.module() && *n == import.name());
            match (known, import.ty()) {
                (Some((_, _, params, results)), ExternType::Func(f))
                    if same(f.params(), params) && same(f.results(), results) => {}
                (Some((m, n, params, results)), _) => problems.push(format!(
                    "imports `{m}.{n}` with the wrong type (the gateway provides {})",
                    signature(params, results)
                )),
                (None, _) => problems.push(format!(
                    "imports `{}.{}`, which the gateway does not provide (plugins get no WASI: \
                     no file system, network, clock or environment; only switchyard.log, \
                     env.abort and env.seed)",
                    import.module(),
                    import.name()
                )),
            }
        }
        let hook_type = (&[ValType::I32, ValType::I32][..], &[ValType::I64][..]);
        let mut exports = [false; 7];
        let mut has_memory = false;
        for export in module.exports() {
            let expected: Option<(&[ValType], &[ValType])> = match export.name() {
                "memory" => {
                    has_memory = matches!(export.ty(), ExternType::Memory(m) if !m.is_64());
                    if !has_memory {
                        problems.push("export `memory` must be a 32-bit linear memory".into());
                    }
                    continue;
                }
                "alloc" => Some((&[ValType::I32], &[ValType::I32])),
                "dealloc" => Some((&[ValType::I32, ValType::I32], &[])),
                "init" => Some(hook_type),
                n => match HOOK_EXPORTS.iter().position(|h| *h == n) {
                    Some(i) => {
                        exports[i] = true;
                        Some(hook_type)
                    }
                    None => None,
                },
            };
            if let Some((params, results)) = expected {
                let ok = matches!(export.ty(), ExternType::Func(f)
                    if same(f.params(), params) && same(f.results(), results));
                if !ok {
                    problems.push(format!(
                        "export `{}` must be a function {}",
                        export.name(),
                        signature(params, results)
                    ));
                }
            }
        }
        if !has_memory && module.get_export("memory").is_none() {
            problems.push("exports no `memory`".into());
        }
        if module.get_export("alloc").is_none() {
            problems.push("exports no `alloc(len: i32) -> i32`".into());
        }
        if !exports.iter().any(|e| *e) {
            problems.push(format!(
                "exports no hook (any of {})",
                HOOK_EXPORTS.join(", ")
            ));
        }
        if exports[Hook::StreamEnd as usize] && !exports[Hook::StreamChunk as usize] {
            problems.push("exports on_stream_end without on_stream_chunk".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut linker: Linker<HostData> = Linker::new(engine);
        let link = |r: wasmtime::Result<&mut Linker<HostData>>| {
            r.map(|_| ()).map_err(|e| vec![format!("wasmtime: {e}")])
        };
        link(linker.func_wrap(
            "switchyard",
            "log",
            |mut caller: Caller<'_, HostData>, level: i32, ptr: i32, len: i32| {
                let text = read_utf8(&mut caller, ptr, len).unwrap_or_default();
                let plugin = caller.data().plugin.clone();
                match level {
                    0 => tracing::debug!(plugin = %plugin, "{text}"),
                    1 => tracing::info!(plugin = %plugin, "{text}"),
                    _ => tracing::warn!(plugin = %plugin, "{text}"),
                }
            },
        ))?;
        link(linker.func_wrap(
            "env",
            "abort",
            |mut caller: Caller<'_, HostData>,
             msg: i32,
             file: i32,
             line: i32,
             column: i32|
             -> wasmtime::Result<()> {
                let msg = read_as_string(&mut caller, msg).unwrap_or_default();
                let file = read_as_string(&mut caller, file).unwrap_or_default();
                caller.data_mut().failure =
                    Some(format!("aborted: {msg} (at {file}:{line}:{column})"));
                Err(wasmtime::format_err!("abort"))
            },
        ))?;
        link(linker.func_wrap("env", "seed", || fastrand::f64() * 1e9))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| vec![format!("cannot link the module: {e:#}")])?;
        let timeout = source.timeout;
        let wasm = Self {
            name: Arc::from(name),
            pre,
            config: serde_json::to_vec(config).unwrap_or_else(|_| b"null".to_vec()),
            memory: source.memory,
            timeout,
            ticks: u64::try_from(timeout.as_millis().div_ceil(TICK.as_millis()))
                .unwrap_or(u64::MAX)
                .saturating_add(1),
            exports,
            idle: Mutex::new(Vec::new()),
        };
        let first = wasm.instantiate()?;
        wasm.put_back(first);
        Ok(wasm)
    }

    /// A new instance, its `init` run with the plugin's `config`.
    fn instantiate(&self) -> Result<Instance, Vec<String>> {
        let mut store = Store::new(
            self.pre.module().engine(),
            HostData {
                plugin: self.name.clone(),
                memory_limit: self.memory,
                failure: None,
            },
        );
        store.limiter(|d| d as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(self.ticks);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| vec![self.describe(&e, &mut store, "starting")])?;
        let missing = |what: &str| vec![format!("export `{what}` is missing or has another type")];
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|_| missing("alloc"))?;
        let dealloc = instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "dealloc")
            .ok();
        let mut hooks: [Option<TypedFunc<(i32, i32), i64>>; 7] = Default::default();
        for (i, name) in HOOK_EXPORTS.iter().enumerate() {
            if let Some(slot) = hooks.get_mut(i) {
                *slot = instance.get_typed_func(&mut store, name).ok();
            }
        }
        let init = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "init")
            .ok();
        let mut inst = Instance {
            store,
            memory,
            alloc,
            dealloc,
            hooks,
        };
        if let Some(init) = init {
            let answer = inst
                .call(&init, &self.config, self.ticks)
                .map_err(|e| vec![self.describe(&e, &mut inst.store, "init")])?;
            if let Some(bytes) = answer {
                return Err(config_errors(&bytes));
            }
        }
        Ok(inst)
    }

    fn put_back(&self, inst: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(inst);
        }
    }

    /// Why a call failed, in words a plugin's author can act on.
    fn describe(&self, e: &wasmtime::Error, store: &mut Store<HostData>, what: &str) -> String {
        if let Some(f) = store.data_mut().failure.take() {
            return format!("{what}: {f}");
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "{what}: ran past its time limit of {} ms (timeout_ms)",
                self.timeout.as_millis()
            ),
            Some(t) => format!("{what}: trapped ({t})"),
            None => format!("{what}: {e:#}"),
        }
    }

    /// Calls hook `hook` with `input`; its parsed answer (`None`: no change).
    fn run<I: Serialize>(&self, hook: Hook, input: &I) -> Result<Option<Answer>, PluginError> {
        let bytes = serde_json::to_vec(input)
            .map_err(|e| PluginError(format!("cannot encode the hook's input: {e}")))?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(i) => i,
            None => self
                .instantiate()
                .map_err(|problems| PluginError(problems.join("; ")))?,
        };
        let name = HOOK_EXPORTS.get(hook as usize).copied().unwrap_or("hook");
        let Some(f) = inst.hooks.get(hook as usize).cloned().flatten() else {
            self.put_back(inst);
            return Ok(None);
        };
        match inst.call(&f, &bytes, self.ticks) {
            Ok(answer) => {
                self.put_back(inst);
                let Some(bytes) = answer else {
                    return Ok(None);
                };
                let invalid = |e: serde_json::Error| {
                    PluginError(format!("{name} answered JSON the ABI does not accept: {e}"))
                };
                let mut value: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
                integral(&mut value);
                let answer: Answer = serde_json::from_value(value).map_err(invalid)?;
                match answer.error {
                    Some(message) => Err(PluginError(message)),
                    None => Ok(Some(answer)),
                }
            }
            // The instance is dropped: after a trap its memory cannot be trusted.
            Err(e) => Err(PluginError(self.describe(&e, &mut inst.store, name))),
        }
    }
}

/// Turns whole floats (`1700000000.0`, as JSON libraries with only doubles write integers) back
/// into integers, so counts and timestamps read as the integers they are.
fn integral(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                #[expect(clippy::cast_possible_truncation, reason = "whole and below 2^53")]
                let i = f as i64;
                *v = Value::from(i);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral),
        Value::Object(o) => o.values_mut().for_each(integral),
        _ => {}
    }
}

/// `init`'s refusal: `{"errors": [{"path", "message"}]}` (or `{"error": "..."}`).
fn config_errors(bytes: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(default)]
        errors: Vec<Problem>,
        #[serde(default)]
        error: Option<String>,
    }
    #[derive(Deserialize)]
    struct Problem {
        #[serde(default)]
        path: String,
        message: String,
    }
    match serde_json::from_slice::<Refusal>(bytes) {
        Ok(r) if !r.errors.is_empty() => r
            .errors
            .into_iter()
            .map(|p| {
                if p.path.is_empty() {
                    format!("config: {}", p.message)
                } else {
                    format!("config.{}: {}", p.path, p.message)
                }
            })
            .collect(),
        Ok(Refusal { error: Some(e), .. }) => vec![format!("config: {e}")],
        _ => vec![format!(
            "init answered something other than {{\"errors\": [...]}}: {}",
            String::from_utf8_lossy(bytes.get(..200).unwrap_or(bytes))
        )],
    }
}

/// `len` bytes of UTF-8 at `ptr` in the caller's memory.
fn read_utf8(caller: &mut Caller<'_, HostData>, ptr: i32, len: i32) -> Option<String> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let start = usize::try_from(ptr).ok()?;
    let n = usize::try_from(len).ok()?.min(64 << 10);
    let bytes = memory.data(&*caller).get(start..start.checked_add(n)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// An AssemblyScript string (UTF-16, its byte length in the 4 bytes before it) at `ptr`.
fn read_as_string(caller: &mut Caller<'_, HostData>, ptr: i32) -> Option<String> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let start = usize::try_from(ptr).ok()?;
    let data = memory.data(&*caller);
    let len_bytes: [u8; 4] = data.get(start.checked_sub(4)?..start)?.try_into().ok()?;
    let n = usize::try_from(u32::from_le_bytes(len_bytes))
        .ok()?
        .min(8 << 10);
    let units: Vec<u16> = data
        .get(start..start.checked_add(n)?)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// What the gateway tells a hook about the request.
#[derive(Serialize)]
struct Info<'a> {
    request_id: &'a str,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

impl<'a> From<&'a RequestInfo> for Info<'a> {
    fn from(i: &'a RequestInfo) -> Self {
        Self {
            request_id: &i.request_id,
            model: &i.model,
            key: i.key.as_deref(),
        }
    }
}

/// A hook's input: the request's info, the one value the hook is about, and the plugin's state.
#[derive(Serialize)]
struct Input<'a, T: Serialize> {
    info: Info<'a>,
    #[serde(flatten)]
    value: T,
    state: Option<&'a Value>,
}

/// A hook's answer; each hook reads the fields that concern it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer {
    error: Option<String>,
    action: Option<String>,
    status: Option<u16>,
    message: Option<String>,
    request: Option<ChatRequest>,
    response: Option<ChatResponse>,
    chunk: Option<ChatChunk>,
    drop: bool,
    chunks: Vec<ChatChunk>,
    arguments: Option<String>,
    result: Option<String>,
    state: Option<Value>,
}

/// The plugin's JSON state of this request.
fn json_state(state: &State) -> Option<&Value> {
    state.as_ref().and_then(|s| s.downcast_ref::<Value>())
}

fn keep_state(state: &mut State, answer: &mut Answer) {
    if let Some(v) = answer.state.take() {
        *state = Some(Box::new(v));
    }
}

impl Plugin for Wasm {
    fn hooks(&self) -> Hooks {
        let has = |h: Hook| self.exports.get(h as usize).copied().unwrap_or(false);
        Hooks {
            request: has(Hook::Request),
            response: has(Hook::Response),
            stream: has(Hook::StreamChunk),
            tool_call: has(Hook::ToolCall),
            tool_result: has(Hook::ToolResult),
            complete: has(Hook::Complete),
        }
    }

    fn on_request(
        &self,
        info: &RequestInfo,
        req: &mut ChatRequest,
        state: &mut State,
    ) -> Result<Verdict, PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            request: &'a ChatRequest,
        }
        let input = Input {
            info: info.into(),
            value: V { request: req },
            state: json_state(state),
        };
        let Some(mut answer) = self.run(Hook::Request, &input)? else {
            return Ok(Verdict::Continue);
        };
        keep_state(state, &mut answer);
        match answer.action.as_deref() {
            None | Some("allow" | "modify") => {
                if let Some(r) = answer.request {
                    *req = r;
                }
                Ok(Verdict::Continue)
            }
            Some("deny") => Ok(Verdict::Reject {
                status: answer.status.unwrap_or(400),
                message: answer
                    .message
                    .unwrap_or_else(|| format!("refused by plugin `{}`", self.name)),
            }),
            Some("respond") => match answer.response {
                Some(r) => Ok(Verdict::Respond(Box::new(r))),
                None => Err(PluginError(
                    "on_request answered action `respond` without a `response`".into(),
                )),
            },
            Some(other) => Err(PluginError(format!(
                "on_request answered action `{other}` (allow, modify, deny, respond)"
            ))),
        }
    }

    fn on_response(
        &self,
        info: &RequestInfo,
        resp: &mut ChatResponse,
        state: &mut State,
    ) -> Result<(), PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            response: &'a ChatResponse,
        }
        let input = Input {
            info: info.into(),
            value: V { response: resp },
            state: json_state(state),
        };
        if let Some(mut answer) = self.run(Hook::Response, &input)? {
            keep_state(state, &mut answer);
            if let Some(r) = answer.response {
                *resp = r;
            }
        }
        Ok(())
    }

    fn on_stream_chunk(
        &self,
        info: &RequestInfo,
        chunk: &mut ChatChunk,
        state: &mut State,
    ) -> Result<ChunkVerdict, PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            chunk: &'a ChatChunk,
        }
        let input = Input {
            info: info.into(),
            value: V { chunk },
            state: json_state(state),
        };
        let Some(mut answer) = self.run(Hook::StreamChunk, &input)? else {
            return Ok(ChunkVerdict::Keep);
        };
        keep_state(state, &mut answer);
        if answer.drop {
            return Ok(ChunkVerdict::Drop);
        }
        if let Some(c) = answer.chunk {
            *chunk = c;
        }
        Ok(ChunkVerdict::Keep)
    }

    fn on_stream_end(
        &self,
        info: &RequestInfo,
        state: &mut State,
    ) -> Result<Vec<ChatChunk>, PluginError> {
        if !self.exports[Hook::StreamEnd as usize] {
            return Ok(Vec::new());
        }
        let input = Input {
            info: info.into(),
            value: serde_json::Map::new(),
            state: json_state(state),
        };
        Ok(self
            .run(Hook::StreamEnd, &input)?
            .map(|a| a.chunks)
            .unwrap_or_default())
    }

    fn on_tool_call(
        &self,
        info: &RequestInfo,
        tool: &str,
        arguments: &mut String,
        state: &mut State,
    ) -> Result<ToolVerdict, PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            tool: &'a str,
            arguments: &'a str,
        }
        let input = Input {
            info: info.into(),
            value: V { tool, arguments },
            state: json_state(state),
        };
        let Some(mut answer) = self.run(Hook::ToolCall, &input)? else {
            return Ok(ToolVerdict::Continue);
        };
        keep_state(state, &mut answer);
        match answer.action.as_deref() {
            None | Some("allow" | "modify") => {
                if let Some(a) = answer.arguments {
                    *arguments = a;
                }
                Ok(ToolVerdict::Continue)
            }
            Some("deny") => {
                Ok(ToolVerdict::Block(answer.message.unwrap_or_else(|| {
                    format!("blocked by plugin `{}`", self.name)
                })))
            }
            Some(other) => Err(PluginError(format!(
                "on_tool_call answered action `{other}` (allow, modify, deny)"
            ))),
        }
    }

    fn on_tool_result(
        &self,
        info: &RequestInfo,
        tool: &str,
        result: &mut String,
        state: &mut State,
    ) -> Result<(), PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            tool: &'a str,
            result: &'a str,
        }
        let input = Input {
            info: info.into(),
            value: V { tool, result },
            state: json_state(state),
        };
        if let Some(mut answer) = self.run(Hook::ToolResult, &input)? {
            keep_state(state, &mut answer);
            if let Some(r) = answer.result {
                *result = r;
            }
        }
        Ok(())
    }

    fn on_complete(&self, record: &Value) -> Result<(), PluginError> {
        #[derive(Serialize)]
        struct V<'a> {
            record: &'a Value,
        }
        self.run(Hook::Complete, &V { record }).map(|_| ())
    }
}
