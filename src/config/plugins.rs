//! `[[plugins]]`: which plugins run, in order, where, and what happens when one fails. Compiled-in
//! plugins validate their own `config` table here, so `check` reports its mistakes with paths.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sha2::Digest;
use switchyard_plugin::Factory;

use super::{Issue, Secret};

/// The compiled-in plugins, by the name `[[plugins]] name` uses.
pub const BUILTIN: &[(&str, Factory)] = &[
    ("pii-redact", switchyard_pii_redact::create),
    ("prompt-guard", switchyard_prompt_guard::create),
];

/// One `[[plugins]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub config: Option<toml::Value>,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub on_error: Option<String>,
    #[serde(default)]
    pub mandatory: Option<bool>,
    #[serde(default)]
    pub default_on: Option<bool>,
    /// WebAssembly.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Webhooks.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub hooks: Option<Vec<String>>,
}

/// What a plugin failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse the request (default: a guardrail that cannot run must not be skipped).
    FailClosed,
    /// Go on without the plugin.
    FailOpen,
}

/// How a plugin runs.
#[derive(Debug, Clone)]
pub enum PluginKind {
    /// Compiled in: the factory registered under the plugin's name.
    Builtin(Factory),
    /// A WebAssembly module run in the gateway (see `docs/plugins.md` for its ABI).
    Wasm(WasmSource),
    /// An HTTP service that answers each hook with a verdict.
    Webhook {
        /// Where to POST.
        url: String,
        /// Extra headers (values may be `env.NAME`).
        headers: BTreeMap<String, Secret>,
        /// Per call.
        timeout: Duration,
        /// Whether requests are sent (`hooks` has `request`).
        request: bool,
        /// Whether complete answers are sent (`response`).
        response: bool,
        /// Whether each request's record is sent after the answer (`complete`).
        complete: bool,
    },
}

/// A WebAssembly plugin's module, read and checked against its pinned hash.
#[derive(Clone)]
pub struct WasmSource {
    /// Where it was read from.
    pub path: std::path::PathBuf,
    /// Its sha256 (lowercase hex), as pinned.
    pub sha256: String,
    /// The module's bytes.
    pub bytes: std::sync::Arc<[u8]>,
    /// The most linear memory it may have, in bytes.
    pub memory: usize,
    /// The longest one hook call may run.
    pub timeout: Duration,
}

impl std::fmt::Debug for WasmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSource")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("memory", &self.memory)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A validated `[[plugins]]` entry.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Its name (the builtin's registered name, or any name for a webhook).
    pub name: String,
    /// How it runs.
    pub kind: PluginKind,
    /// The `config` table, as JSON, handed to the plugin.
    pub config: serde_json::Value,
    /// Requested models or routes it applies to (globs); empty: all.
    pub scope: Vec<String>,
    /// What a failure does.
    pub on_error: OnError,
    /// A virtual key may not turn it off.
    pub mandatory: bool,
    /// It runs unless a key turns it off; `false`: only for keys that add it.
    pub default_on: bool,
}

/// Validates `[[plugins]]`; a builtin's own `config` is checked by the plugin.
pub fn validate(raw: &[Option<RawPlugin>], issues: &mut Vec<Issue>) -> Vec<PluginConfig> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in raw.iter().enumerate() {
        let Some(p) = p else { continue };
        let at = format!("plugins[{i}]");
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            issues.push(Issue::new(
                format!("{at}.name"),
                format!(
                    "must be non-empty and unique (`{}` is taken or empty)",
                    p.name
                ),
            ));
        }
        let config = match &p.config {
            None => serde_json::Value::Null,
            Some(v @ toml::Value::Table(_)) => serde_json::to_value(v).unwrap_or_default(),
            Some(_) => {
                issues.push(Issue::new(format!("{at}.config"), "must be a table"));
                serde_json::Value::Null
            }
        };
        let mut scope = Vec::new();
        for (field, list) in [("routes", &p.routes), ("models", &p.models)] {
            for (j, g) in list.iter().enumerate() {
                match crate::governance::glob::check(g) {
                    Ok(()) => scope.push(g.clone()),
                    Err(e) => issues.push(Issue::new(format!("{at}.{field}[{j}]"), e)),
                }
            }
        }
        let on_error = match p.on_error.as_deref() {
            None | Some("fail_closed") => OnError::FailClosed,
            Some("fail_open") => OnError::FailOpen,
            Some(other) => {
                issues.push(Issue::new(
                    format!("{at}.on_error"),
                    format!("`{other}` is not fail_closed or fail_open"),
                ));
                OnError::FailClosed
            }
        };
        // Fields that belong to one kind (timeout_ms to two).
        let owned = [
            ("url", p.url.is_some(), &["webhook"][..]),
            ("headers", !p.headers.is_empty(), &["webhook"]),
            ("hooks", p.hooks.is_some(), &["webhook"]),
            ("timeout_ms", p.timeout_ms.is_some(), &["webhook", "wasm"]),
            ("path", p.path.is_some(), &["wasm"]),
            ("sha256", p.sha256.is_some(), &["wasm"]),
            ("memory_mb", p.memory_mb.is_some(), &["wasm"]),
        ];
        if ["builtin", "webhook", "wasm"].contains(&p.kind.as_str()) {
            for (field, given, kinds) in owned {
                if given && !kinds.contains(&p.kind.as_str()) {
                    issues.push(Issue::new(
                        format!("{at}.{field}"),
                        format!("only used by kind `{}`", kinds.join("` and `")),
                    ));
                }
            }
        }
        let kind = match p.kind.as_str() {
            "builtin" => {
                let Some((_, factory)) = BUILTIN.iter().find(|(n, _)| *n == p.name) else {
                    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                    issues.push(Issue::new(
                        format!("{at}.name"),
                        format!(
                            "no compiled-in plugin `{}` (built in: {})",
                            p.name,
                            names.join(", ")
                        ),
                    ));
                    continue;
                };
                if let Err(errors) = factory(&config) {
                    for e in errors {
                        let path = if e.path.is_empty() {
                            format!("{at}.config")
                        } else {
                            format!("{at}.config.{}", e.path)
                        };
                        issues.push(Issue::new(path, e.message));
                    }
                    continue;
                }
                PluginKind::Builtin(*factory)
            }
            "webhook" => match webhook(p, &at, issues) {
                Some(k) => k,
                None => continue,
            },
            "wasm" => match wasm(p, &at, issues) {
                Some(source) => PluginKind::Wasm(source),
                None => continue,
            },
            other => {
                issues.push(Issue::new(
                    format!("{at}.kind"),
                    format!("unknown kind `{other}` (builtin, wasm, webhook)"),
                ));
                continue;
            }
        };
        let default_on = p.default_on.unwrap_or(true);
        let mandatory = p.mandatory.unwrap_or(default_on);
        if mandatory && !default_on {
            issues.push(Issue::new(
                format!("{at}.mandatory"),
                "a mandatory plugin runs for every key: it cannot have default_on = false",
            ));
        }
        out.push(PluginConfig {
            name: p.name.clone(),
            kind,
            config,
            scope,
            on_error,
            mandatory,
            default_on,
        });
    }
    out
}

/// Reads a WebAssembly plugin's module and checks it against its pinned sha256. Whether it
/// compiles, has the exports the ABI needs and accepts its `config` is checked when the plugin
/// host loads it (which `switchyard check` does too).
fn wasm(p: &RawPlugin, at: &str, issues: &mut Vec<Issue>) -> Option<WasmSource> {
    let timeout = p.timeout_ms.unwrap_or(100);
    if !(1..=10_000).contains(&timeout) {
        issues.push(Issue::new(
            format!("{at}.timeout_ms"),
            "must be from 1 to 10000",
        ));
    }
    let memory_mb = p.memory_mb.unwrap_or(64);
    if !(1..=4096).contains(&memory_mb) {
        issues.push(Issue::new(
            format!("{at}.memory_mb"),
            "must be from 1 to 4096",
        ));
    }
    let pinned = match p.sha256.as_deref() {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(h.to_ascii_lowercase())
        }
        Some(_) => {
            issues.push(Issue::new(
                format!("{at}.sha256"),
                "must be 64 hex digits (the module's sha256)",
            ));
            None
        }
        None => {
            issues.push(Issue::new(
                format!("{at}.sha256"),
                "kind `wasm` needs the module's sha256 pinned (`sha256sum` prints it)",
            ));
            None
        }
    };
    let Some(path) = p.path.as_deref().filter(|s| !s.is_empty()) else {
        issues.push(Issue::new(
            format!("{at}.path"),
            "kind `wasm` needs the path of the .wasm module",
        ));
        return None;
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            issues.push(Issue::new(
                format!("{at}.path"),
                format!("cannot read `{path}`: {e}"),
            ));
            return None;
        }
    };
    let actual = hex::encode(sha2::Sha256::digest(&bytes));
    let pinned = pinned?;
    if actual != pinned {
        issues.push(Issue::new(
            format!("{at}.sha256"),
            format!("`{path}` has sha256 {actual}, not the pinned {pinned}: refusing to load it"),
        ));
        return None;
    }
    Some(WasmSource {
        path: path.into(),
        sha256: actual,
        bytes: bytes.into(),
        memory: usize::try_from(memory_mb.clamp(1, 4096) << 20).unwrap_or(usize::MAX),
        timeout: Duration::from_millis(timeout.clamp(1, 10_000)),
    })
}

fn webhook(p: &RawPlugin, at: &str, issues: &mut Vec<Issue>) -> Option<PluginKind> {
    let url = match p.url.as_deref() {
        Some(u)
            if (u.starts_with("http://") || u.starts_with("https://"))
                && reqwest::Url::parse(u).is_ok() =>
        {
            u.to_owned()
        }
        Some(u) => {
            issues.push(Issue::new(
                format!("{at}.url"),
                format!("`{u}` is not an http(s) URL"),
            ));
            return None;
        }
        None => {
            issues.push(Issue::new(
                format!("{at}.url"),
                "kind `webhook` needs a url",
            ));
            return None;
        }
    };
    let timeout = p.timeout_ms.unwrap_or(2000);
    if !(1..=60_000).contains(&timeout) {
        issues.push(Issue::new(
            format!("{at}.timeout_ms"),
            "must be from 1 to 60000",
        ));
    }
    let hooks = p.hooks.clone().unwrap_or_else(|| vec!["request".into()]);
    let (mut request, mut response, mut complete) = (false, false, false);
    for (j, h) in hooks.iter().enumerate() {
        match h.as_str() {
            "request" => request = true,
            "response" => response = true,
            "complete" => complete = true,
            other => issues.push(Issue::new(
                format!("{at}.hooks[{j}]"),
                format!("`{other}` is not a webhook hook (request, response, complete)"),
            )),
        }
    }
    if !request && !response && !complete {
        issues.push(Issue::new(format!("{at}.hooks"), "name at least one hook"));
    }
    Some(PluginKind::Webhook {
        url,
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect(),
        timeout: Duration::from_millis(timeout),
        request,
        response,
        complete,
    })
}

/// Checks the virtual keys' plugin lists against `[[plugins]]`: names must exist, and a key may
/// not turn off a mandatory plugin.
pub fn check_key_plugins(
    plugins: &[PluginConfig],
    key: &super::governance::KeySpec,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    for (field, names) in [
        ("plugins", &key.plugins),
        ("disable_plugins", &key.disable_plugins),
    ] {
        for (j, n) in names.iter().enumerate() {
            match plugins.iter().find(|p| p.name == *n) {
                None => issues.push(Issue::new(
                    format!("{path}.{field}[{j}]"),
                    format!("no [[plugins]] entry named `{n}`"),
                )),
                Some(p) if field == "disable_plugins" && p.mandatory => issues.push(Issue::new(
                    format!("{path}.{field}[{j}]"),
                    format!("`{n}` is mandatory: a key cannot turn it off"),
                )),
                Some(_) => {}
            }
        }
    }
}
