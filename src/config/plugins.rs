//! `[[plugins]]`: which plugins run, in order, where, and what happens when one fails. Compiled-in
//! plugins validate their own `config` table here, so `check` reports its mistakes with paths.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
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
        let webhook_only = [
            ("url", p.url.is_some()),
            ("headers", !p.headers.is_empty()),
            ("timeout_ms", p.timeout_ms.is_some()),
            ("hooks", p.hooks.is_some()),
        ];
        let kind = match p.kind.as_str() {
            "builtin" => {
                for (field, given) in webhook_only {
                    if given {
                        issues.push(Issue::new(
                            format!("{at}.{field}"),
                            "only used by kind `webhook`",
                        ));
                    }
                }
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
            "wasm" => {
                issues.push(Issue::new(
                    format!("{at}.kind"),
                    "WebAssembly plugins are not built yet in this version (use `builtin` or `webhook`)",
                ));
                continue;
            }
            other => {
                issues.push(Issue::new(
                    format!("{at}.kind"),
                    format!("unknown kind `{other}` (builtin, webhook)"),
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
