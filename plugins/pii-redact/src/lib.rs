//! `pii-redact`: the provider never sees the user's personal data.
//!
//! E-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs (mod-97-checked) and
//! configured patterns in the request's messages and tool-call arguments are replaced with typed
//! placeholders (`[EMAIL_1]`, `[CARD_1]`, ...; the same value gets the same placeholder). With
//! `restore` (default on) the placeholders in the answer are put back, so the user sees their own
//! data; with `redact_answers` the personal data the model writes itself is replaced too. Streams
//! stay streams: the plugin holds back at most `window` characters (default 64) so a value or a
//! placeholder split across two chunks is still found. MCP tools the gateway runs in its loop get
//! the real values in their arguments, and their results are redacted before the model sees them.
//!
//! ```toml
//! [[plugins]]
//! name = "pii-redact"
//! kind = "builtin"
//! config = { detect = ["email", "phone", "card", "iban"], restore = true, redact_answers = false,
//!            patterns = [{ name = "employee", pattern = "EMP-[0-9]{6}" }] }
//! ```

use regex::Regex;
use serde_json::Value;
use switchyard_plugin::chat::{Content, Message};
use switchyard_plugin::{
    ChatChunk, ChatRequest, ChatResponse, ChunkVerdict, ConfigError, Hooks, Plugin, PluginError,
    RequestInfo, State, ToolVerdict, Verdict, config_table,
};

/// One kind of personal data: its placeholder label, where it may be, and a final check.
struct Detector {
    label: String,
    find: Regex,
    check: fn(&str) -> bool,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn checksum of a card number.
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 mod-97 check of an IBAN.
pub fn iban_ok(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &c in tail.iter().chain(head) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        let width = if v >= 10 { 100 } else { 10 };
        rem = (rem * width + v) % 97;
    }
    rem == 1
}

/// A phone number: 8 to 15 digits, written with a leading `+` or with separators.
fn phone_ok(s: &str) -> bool {
    let n = digits(s).len();
    (8..=15).contains(&n) && (s.starts_with('+') || s.contains([' ', '-', '.', '(']))
}

fn always(_: &str) -> bool {
    true
}

fn builtin(kind: &str) -> Option<Detector> {
    let (label, pattern, check): (&str, &str, fn(&str) -> bool) = match kind {
        "email" => (
            "EMAIL",
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            always,
        ),
        "card" => ("CARD", r"\b(?:\d[ -]?){12,18}\d\b", luhn),
        "iban" => (
            "IBAN",
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
            iban_ok,
        ),
        "phone" => ("PHONE", r"\+?\(?\d[\d ().-]{6,18}\d\b", phone_ok),
        _ => return None,
    };
    Regex::new(pattern).ok().map(|find| Detector {
        label: label.to_owned(),
        find,
        check,
    })
}

/// The plugin.
#[derive(Debug)]
pub struct PiiRedact {
    detectors: Vec<Detector>,
    restore: bool,
    redact_answers: bool,
    window: usize,
}

/// Longest placeholder (`[EMPLOYEE_ID_12345]`) the stream window must be able to hold.
const MAX_PLACEHOLDER: usize = 48;

/// Builds the plugin from its `config` table.
pub fn create(config: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let known = ["detect", "patterns", "restore", "redact_answers", "window"];
    let Some(obj) = config_table(config, "", &known, &mut errors) else {
        return Err(errors);
    };
    let bool_field = |k: &str, default: bool, errors: &mut Vec<ConfigError>| match obj.get(k) {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(ConfigError::new(k, "must be true or false"));
            default
        }
    };
    let restore = bool_field("restore", true, &mut errors);
    let redact_answers = bool_field("redact_answers", false, &mut errors);
    let window = match obj.get("window") {
        None => 64,
        Some(v) => match v.as_u64().filter(|w| (16..=4096).contains(w)) {
            Some(w) => w as usize,
            None => {
                errors.push(ConfigError::new(
                    "window",
                    "must be an integer from 16 to 4096",
                ));
                64
            }
        },
    };
    let mut detectors = Vec::new();
    let kinds: Vec<Value> = match obj.get("detect") {
        None => ["card", "iban", "email", "phone"]
            .iter()
            .map(|k| Value::from(*k))
            .collect(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            errors.push(ConfigError::new("detect", "must be a list of kinds"));
            Vec::new()
        }
    };
    // Cards and IBANs before phones: a phone pattern would take their digits.
    let mut ordered: Vec<(usize, &str)> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, k)| k.as_str().map(|s| (i, s)))
        .collect();
    ordered.sort_by_key(|(_, k)| match *k {
        "card" => 0,
        "iban" => 1,
        "email" => 2,
        _ => 3,
    });
    for (i, k) in ordered {
        match builtin(k) {
            Some(d) => detectors.push(d),
            None => errors.push(ConfigError::new(
                format!("detect[{i}]"),
                format!("unknown kind `{k}` (email, phone, card, iban)"),
            )),
        }
    }
    if kinds.iter().any(|k| !k.is_string()) {
        errors.push(ConfigError::new("detect", "kinds must be strings"));
    }
    let patterns = match obj.get("patterns") {
        None => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(_) => {
            errors.push(ConfigError::new(
                "patterns",
                "must be a list of { name, pattern } tables",
            ));
            &[][..]
        }
    };
    for (i, p) in patterns.iter().enumerate() {
        let name = p.get("name").and_then(Value::as_str).filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let Some(name) = name else {
            errors.push(ConfigError::new(
                format!("patterns[{i}].name"),
                "a name of letters, digits, `_` or `-` is required",
            ));
            continue;
        };
        match p.get("pattern").and_then(Value::as_str).map(Regex::new) {
            Some(Ok(find)) => detectors.push(Detector {
                label: name.to_ascii_uppercase().replace('-', "_"),
                find,
                check: always,
            }),
            Some(Err(e)) => errors.push(ConfigError::new(
                format!("patterns[{i}].pattern"),
                format!("not a valid regex: {e}"),
            )),
            None => errors.push(ConfigError::new(
                format!("patterns[{i}].pattern"),
                "a regex string is required",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Box::new(PiiRedact {
        detectors,
        restore,
        redact_answers,
        window,
    }))
}

/// What one request's redaction replaced, and the streamed text held back.
#[derive(Debug, Default)]
struct Redactions {
    /// (placeholder, original, restorable), in order of first sight. Values from the request are
    /// restorable (the user's own data); values the model wrote itself are not.
    map: Vec<(String, String, bool)>,
    /// Streamed text not yet sent.
    held: String,
}

impl Redactions {
    fn placeholder(&mut self, label: &str, original: &str, restorable: bool) -> String {
        if let Some((p, _, _)) = self.map.iter().find(|(_, o, _)| o == original) {
            return p.clone();
        }
        let prefix = format!("[{label}_");
        let n = self
            .map
            .iter()
            .filter(|(p, _, _)| p.starts_with(&prefix))
            .count()
            + 1;
        let p = format!("[{label}_{n}]");
        self.map.push((p.clone(), original.to_owned(), restorable));
        p
    }

    fn restore(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (p, o, restorable) in &self.map {
            if *restorable && out.contains(p.as_str()) {
                out = out.replace(p.as_str(), o);
            }
        }
        out
    }
}

impl PiiRedact {
    /// `text` with every detected value replaced by its placeholder (`restorable` for the request's
    /// own values).
    fn redact(&self, text: &str, r: &mut Redactions, restorable: bool) -> String {
        let mut out = text.to_owned();
        for d in &self.detectors {
            if !d.find.is_match(&out) {
                continue;
            }
            let mut next = String::with_capacity(out.len());
            let mut last = 0;
            for m in d.find.find_iter(&out) {
                if !(d.check)(m.as_str()) {
                    continue;
                }
                next.push_str(&out[last..m.start()]);
                next.push_str(&r.placeholder(&d.label, m.as_str(), restorable));
                last = m.end();
            }
            next.push_str(&out[last..]);
            out = next;
        }
        out
    }

    /// The start of a value or placeholder that reaches the end of `text` (and so may continue in
    /// the next chunk): streamed text from there on is held back.
    fn hold_from(&self, text: &str) -> usize {
        let mut cut = text.len();
        if self.restore
            && let Some(open) = text.rfind('[')
            && !text[open..].contains(']')
            && text.len() - open <= MAX_PLACEHOLDER
        {
            cut = open;
        }
        if self.redact_answers {
            let mut floor = text.len().saturating_sub(self.window);
            while !text.is_char_boundary(floor) {
                floor -= 1;
            }
            // A value straddling the window's edge is held whole.
            for d in &self.detectors {
                for m in d.find.find_iter(text) {
                    if m.start() < floor && m.end() > floor {
                        floor = m.start();
                    }
                }
            }
            cut = cut.min(floor);
        }
        cut
    }

    /// An answer's text as the user sees it.
    fn answer(&self, text: &str, r: &mut Redactions) -> String {
        let text = if self.redact_answers {
            self.redact(text, r, false)
        } else {
            text.to_owned()
        };
        if self.restore { r.restore(&text) } else { text }
    }
}

/// This request's redactions (created on first use).
fn redactions(state: &mut State) -> Result<&mut Redactions, PluginError> {
    let boxed = state.get_or_insert_with(|| Box::new(Redactions::default()));
    if !boxed.is::<Redactions>() {
        *boxed = Box::new(Redactions::default());
    }
    boxed
        .downcast_mut::<Redactions>()
        .ok_or_else(|| PluginError("pii-redact lost its request state".into()))
}

fn redact_message(p: &PiiRedact, m: &mut Message, r: &mut Redactions) {
    match &mut m.content {
        Some(Content::Text(t)) => *t = p.redact(t, r, true),
        Some(Content::Parts(parts)) => {
            for part in parts {
                if let Some(t) = &mut part.text {
                    *t = p.redact(t, r, true);
                }
            }
        }
        None => {}
    }
    for c in m.tool_calls.iter_mut().flatten() {
        c.function.arguments = p.redact(&c.function.arguments, r, true);
    }
}

impl Plugin for PiiRedact {
    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            response: self.restore || self.redact_answers,
            stream: self.restore || self.redact_answers,
            tool_call: self.restore,
            tool_result: true,
            complete: false,
        }
    }

    fn on_request(
        &self,
        _info: &RequestInfo,
        req: &mut ChatRequest,
        state: &mut State,
    ) -> Result<Verdict, PluginError> {
        let r = redactions(state)?;
        for m in &mut req.messages {
            redact_message(self, m, r);
        }
        Ok(Verdict::Continue)
    }

    fn on_response(
        &self,
        _info: &RequestInfo,
        resp: &mut ChatResponse,
        state: &mut State,
    ) -> Result<(), PluginError> {
        let r = redactions(state)?;
        for c in &mut resp.choices {
            match &mut c.message.content {
                Some(Content::Text(t)) => *t = self.answer(t, r),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        if let Some(t) = &mut part.text {
                            *t = self.answer(t, r);
                        }
                    }
                }
                None => {}
            }
            for call in c.message.tool_calls.iter_mut().flatten() {
                call.function.arguments = self.answer(&call.function.arguments, r);
            }
        }
        Ok(())
    }

    fn on_stream_chunk(
        &self,
        _info: &RequestInfo,
        chunk: &mut ChatChunk,
        state: &mut State,
    ) -> Result<ChunkVerdict, PluginError> {
        let r = redactions(state)?;
        let Some(choice) = chunk.choices.iter_mut().find(|c| c.index == 0) else {
            return Ok(ChunkVerdict::Keep);
        };
        let finishing = choice.finish_reason.is_some();
        if let Some(delta) = choice.delta.content.take() {
            r.held.push_str(&delta);
        }
        if r.held.is_empty() {
            return Ok(ChunkVerdict::Keep);
        }
        let cut = if finishing {
            r.held.len()
        } else {
            self.hold_from(&r.held)
        };
        let ready: String = r.held.drain(..cut).collect();
        choice.delta.content = Some(self.answer(&ready, r));
        for call in choice.delta.tool_calls.iter_mut().flatten() {
            if let Some(f) = &mut call.function
                && let Some(a) = &mut f.arguments
            {
                *a = self.answer(a, r);
            }
        }
        Ok(ChunkVerdict::Keep)
    }

    /// A tool the gateway runs gets the user's real values (the model only knows placeholders).
    fn on_tool_call(
        &self,
        _info: &RequestInfo,
        _tool: &str,
        arguments: &mut String,
        state: &mut State,
    ) -> Result<ToolVerdict, PluginError> {
        let r = redactions(state)?;
        *arguments = r.restore(arguments);
        Ok(ToolVerdict::Continue)
    }

    /// A tool's result is redacted before the model sees it (and restored in the answer).
    fn on_tool_result(
        &self,
        _info: &RequestInfo,
        _tool: &str,
        result: &mut String,
        state: &mut State,
    ) -> Result<(), PluginError> {
        let r = redactions(state)?;
        *result = self.redact(result, r, true);
        Ok(())
    }

    fn on_stream_end(
        &self,
        _info: &RequestInfo,
        state: &mut State,
    ) -> Result<Vec<ChatChunk>, PluginError> {
        let r = redactions(state)?;
        if r.held.is_empty() {
            return Ok(Vec::new());
        }
        let rest = std::mem::take(&mut r.held);
        let text = self.answer(&rest, r);
        let chunk: ChatChunk = serde_json::from_value(serde_json::json!({
            "choices": [{"index": 0, "delta": {"content": text}}]
        }))
        .map_err(|e| PluginError(e.to_string()))?;
        Ok(vec![chunk])
    }
}

#[cfg(test)]
mod tests;
