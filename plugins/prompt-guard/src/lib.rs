//! `prompt-guard`: refuses requests that match configured rules, with a 400 the client can read.
//!
//! ```toml
//! [[plugins]]
//! name = "prompt-guard"
//! kind = "builtin"
//! config = { max_prompt_chars = 20000, rules = [
//!   { name = "no-secrets", pattern = "(?i)BEGIN (RSA|OPENSSH) PRIVATE KEY" },
//!   { name = "no-weapons", topics = ["nerve agent", "build a bomb"] },
//! ] }
//! ```
//!
//! A rule has a `name` and either a `pattern` (a regular expression, matched against every
//! message's text) or `topics` (phrases matched case-insensitively as whole words). The message
//! the client gets names the rule (`message` overrides it). Blocks are counted per rule; the
//! gateway reports them as the plugin's blocks.

use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use serde_json::Value;
use switchyard_plugin::{
    ChatRequest, ConfigError, Hooks, Plugin, PluginError, RequestInfo, State, Verdict, config_table,
};

/// One rule.
#[derive(Debug)]
struct Rule {
    name: String,
    matcher: Regex,
    message: Option<String>,
    blocks: AtomicU64,
}

/// The plugin.
#[derive(Debug)]
pub struct PromptGuard {
    rules: Vec<Rule>,
    max_prompt_chars: Option<usize>,
    size_blocks: AtomicU64,
}

/// Builds the plugin from its `config` table.
pub fn create(config: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let Some(obj) = config_table(config, "", &["rules", "max_prompt_chars"], &mut errors) else {
        return Err(errors);
    };
    let max_prompt_chars = match obj.get("max_prompt_chars") {
        None => None,
        Some(v) => match v.as_u64().filter(|n| *n > 0) {
            Some(n) => Some(n as usize),
            None => {
                errors.push(ConfigError::new(
                    "max_prompt_chars",
                    "must be a positive integer",
                ));
                None
            }
        },
    };
    let mut rules = Vec::new();
    let list = match obj.get("rules") {
        None => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(_) => {
            errors.push(ConfigError::new("rules", "must be a list of rule tables"));
            &[][..]
        }
    };
    for (i, r) in list.iter().enumerate() {
        let at = format!("rules[{i}]");
        match rule(r, &at) {
            Ok(rule) => rules.push(rule),
            Err(e) => errors.extend(e),
        }
    }
    if rules.is_empty() && max_prompt_chars.is_none() && errors.is_empty() {
        errors.push(ConfigError::new(
            "",
            "nothing to guard: give `rules` or `max_prompt_chars`",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Box::new(PromptGuard {
        rules,
        max_prompt_chars,
        size_blocks: AtomicU64::new(0),
    }))
}

fn rule(r: &Value, at: &str) -> Result<Rule, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let Some(o) = config_table(
        r,
        at,
        &["name", "pattern", "topics", "message"],
        &mut errors,
    ) else {
        return Err(errors);
    };
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    if name.is_none() {
        errors.push(ConfigError::new(
            format!("{at}.name"),
            "a rule needs a name",
        ));
    }
    let source = match (o.get("pattern"), o.get("topics")) {
        (Some(Value::String(p)), None) => Some(p.clone()),
        (None, Some(Value::Array(topics))) if !topics.is_empty() => {
            let mut alts = Vec::new();
            for (j, t) in topics.iter().enumerate() {
                match t.as_str().map(str::trim).filter(|t| !t.is_empty()) {
                    Some(t) => alts.push(regex::escape(t).replace(' ', r"\s+")),
                    None => errors.push(ConfigError::new(
                        format!("{at}.topics[{j}]"),
                        "must be a non-empty string",
                    )),
                }
            }
            Some(format!(r"(?i)\b(?:{})\b", alts.join("|")))
        }
        _ => {
            errors.push(ConfigError::new(
                at,
                "a rule needs either `pattern` (a regex) or `topics` (a non-empty list of phrases)",
            ));
            None
        }
    };
    let matcher = source.and_then(|s| match Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(ConfigError::new(
                format!("{at}.pattern"),
                format!("not a valid regex: {e}"),
            ));
            None
        }
    });
    let message = o.get("message").and_then(Value::as_str).map(str::to_owned);
    match (name, matcher) {
        (Some(n), Some(m)) if errors.is_empty() => Ok(Rule {
            name: n.to_owned(),
            matcher: m,
            message,
            blocks: AtomicU64::new(0),
        }),
        _ => Err(errors),
    }
}

impl PromptGuard {
    /// Blocks so far, per rule (and `max_prompt_chars` for the size limit).
    pub fn blocks(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.blocks.load(Ordering::Relaxed)))
            .collect();
        out.push((
            "max_prompt_chars".into(),
            self.size_blocks.load(Ordering::Relaxed),
        ));
        out
    }
}

impl Plugin for PromptGuard {
    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            ..Hooks::default()
        }
    }

    fn on_request(
        &self,
        _info: &RequestInfo,
        req: &mut ChatRequest,
        _state: &mut State,
    ) -> Result<Verdict, PluginError> {
        let texts: Vec<String> = req.messages.iter().map(|m| m.text_content()).collect();
        if let Some(max) = self.max_prompt_chars {
            let size: usize = texts.iter().map(|t| t.chars().count()).sum();
            if size > max {
                self.size_blocks.fetch_add(1, Ordering::Relaxed);
                return Ok(Verdict::Reject {
                    status: 400,
                    message: format!(
                        "the prompt is {size} characters long; this gateway accepts at most {max}"
                    ),
                });
            }
        }
        for rule in &self.rules {
            if texts.iter().any(|t| rule.matcher.is_match(t)) {
                rule.blocks.fetch_add(1, Ordering::Relaxed);
                let message = rule.message.clone().unwrap_or_else(|| {
                    format!(
                        "the request was blocked by the gateway's prompt rule `{}`",
                        rule.name
                    )
                });
                return Ok(Verdict::Reject {
                    status: 400,
                    message,
                });
            }
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(text: &str) -> ChatRequest {
        serde_json::from_value(
            json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
        )
        .unwrap_or_default()
    }

    fn verdict(p: &dyn Plugin, text: &str) -> Verdict {
        p.on_request(&RequestInfo::default(), &mut req(text), &mut None)
            .unwrap_or(Verdict::Continue)
    }

    #[test]
    fn rules_block_with_a_readable_message_and_count() {
        let Ok(p) = create(&json!({"max_prompt_chars": 40, "rules": [
            {"name": "keys", "pattern": "(?i)private key"},
            {"name": "weapons", "topics": ["nerve agent"], "message": "Not here."}
        ]})) else {
            unreachable!("valid config")
        };
        assert!(matches!(
            verdict(p.as_ref(), "hello there"),
            Verdict::Continue
        ));
        let Verdict::Reject { status, message } = verdict(p.as_ref(), "my PRIVATE KEY is") else {
            unreachable!("blocked")
        };
        assert_eq!(status, 400);
        assert!(message.contains("`keys`"), "{message}");
        let Verdict::Reject { message, .. } = verdict(p.as_ref(), "make a nerve   agent") else {
            unreachable!("blocked")
        };
        assert_eq!(message, "Not here.");
        // Whole words only.
        assert!(matches!(
            verdict(p.as_ref(), "nerve agents"),
            Verdict::Continue
        ));
        assert!(matches!(
            verdict(p.as_ref(), &"x".repeat(41)),
            Verdict::Reject { .. }
        ));
    }

    #[test]
    fn config_mistakes_have_paths() {
        let Err(errors) = create(&json!({"rules": [{"pattern": "("}, {"name": "x"}], "extra": 1}))
        else {
            unreachable!("invalid config")
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"rules[0].name"), "{paths:?}");
        assert!(paths.contains(&"rules[0].pattern"), "{paths:?}");
        assert!(paths.contains(&"rules[1]"), "{paths:?}");
        assert!(paths.contains(&"extra"), "{paths:?}");
    }
}
