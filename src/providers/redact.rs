//! The one redaction every string from an upstream passes before it can reach a client, a log, a
//! trace, a metric or the store.
//!
//! Two strengths: [`Redactor::text`] (error messages, connection errors, in-stream error events)
//! removes the provider's own secrets and anything shaped like a credential (`Bearer …`,
//! `x-api-key: …`, `?key=…`, `sk-…` and other vendors' key prefixes); [`Redactor::exact`]
//! (successful bodies and stream chunks) removes only the provider's own secrets, so an answer
//! that merely talks about key formats is left as the model wrote it.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;

use super::ProviderError;
use crate::chat::StreamError;
use crate::config::{ProviderConfig, Secret};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Shortest secret removed from successful bodies (shorter ones would match ordinary text).
const MIN_BODY_SECRET: usize = 8;
/// Shortest secret removed from error texts.
const MIN_ERROR_SECRET: usize = 4;

/// Removes a provider's secrets from upstream text. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Secrets of at least [`MIN_ERROR_SECRET`] bytes (for error texts).
    all: Option<Arc<AhoCorasick>>,
    /// Secrets of at least [`MIN_BODY_SECRET`] bytes (for successful bodies).
    long: Option<Arc<AhoCorasick>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(***)")
    }
}

fn matcher<'a>(secrets: impl Iterator<Item = &'a str>) -> Option<Arc<AhoCorasick>> {
    let mut list: Vec<&str> = secrets.collect();
    if list.is_empty() {
        return None;
    }
    // Longest first, so a key that contains another is removed whole.
    list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    list.dedup();
    AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(list)
        .ok()
        .map(Arc::new)
}

impl Redactor {
    /// A redactor for these secrets.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let secrets: Vec<&str> = secrets
            .into_iter()
            .map(str::trim)
            .filter(|s| s.len() >= MIN_ERROR_SECRET)
            .collect();
        Self {
            all: matcher(secrets.iter().copied()),
            long: matcher(
                secrets
                    .iter()
                    .copied()
                    .filter(|s| s.len() >= MIN_BODY_SECRET),
            ),
        }
    }

    /// The secrets a provider sends upstream: its keys and the values of credential-like headers.
    pub fn for_provider(cfg: &ProviderConfig) -> Self {
        let keys = cfg.keys.iter().map(|k| k.secret.expose());
        let headers = cfg
            .headers
            .iter()
            .filter(|(name, _)| is_credential_header(name))
            .map(|(_, v)| v.expose());
        let mut all: Vec<&str> = keys.chain(headers).collect();
        // `Bearer xyz` in a header: the token alone is the secret too.
        let bare: Vec<&str> = all
            .iter()
            .filter_map(|v| v.split_once(' ').map(|(_, t)| t))
            .collect();
        all.extend(bare);
        Self::new(all)
    }

    /// A redactor for one secret (tests, single-key callers).
    pub fn for_secret(secret: &Secret) -> Self {
        Self::new([secret.expose()])
    }

    /// Successful bodies: the provider's own secrets removed, nothing else touched.
    pub fn exact<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.long {
            Some(m) if m.is_match(s) => Cow::Owned(m.replace_all(s, &vec![MASK; m.patterns_len()])),
            _ => Cow::Borrowed(s),
        }
    }

    /// Raw successful bytes: the provider's own secrets removed (`None` when there were none).
    pub fn exact_bytes(&self, b: &[u8]) -> Option<Vec<u8>> {
        let m = self.long.as_ref()?;
        if !m.is_match(b) {
            return None;
        }
        Some(m.replace_all_bytes(b, &vec![MASK.as_bytes(); m.patterns_len()]))
    }

    /// Error texts: the provider's secrets and anything shaped like a credential removed.
    pub fn text(&self, s: &str) -> String {
        let own = match &self.all {
            Some(m) if m.is_match(s) => m.replace_all(s, &vec![MASK; m.patterns_len()]),
            _ => s.to_owned(),
        };
        scrub(&own)
    }

    /// The same error with every string it carries redacted.
    pub fn error(&self, e: ProviderError) -> ProviderError {
        match e {
            ProviderError::Connect(m) => ProviderError::Connect(self.text(&m)),
            ProviderError::Io(m) => ProviderError::Io(self.text(&m)),
            ProviderError::Decode(m) => ProviderError::Decode(self.text(&m)),
            ProviderError::Status {
                status,
                message,
                retry_after,
            } => ProviderError::Status {
                status,
                message: self.text(&message),
                retry_after,
            },
            t @ ProviderError::Timeout(_) => t,
        }
    }

    /// An in-stream error with its message redacted.
    pub fn stream_error(&self, e: StreamError) -> StreamError {
        StreamError::new(self.text(&e.message))
    }
}

/// Header names whose values are credentials.
fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "key",
        "token",
        "secret",
        "cookie",
        "password",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Labels after which the next word is a credential (compared lower-case, punctuation trimmed).
const LABELS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "api_key",
    "apikey",
    "x-goog-api-key",
    "bearer",
    "basic",
    "token",
    "access_token",
    "password",
    "secret",
];

/// Prefixes of vendors' key formats, with the least length of a whole key.
const KEY_PREFIXES: &[(&str, usize)] = &[
    ("sk-", 13),
    ("sk_", 13),
    ("gsk_", 20),
    ("xai-", 20),
    ("pplx-", 20),
    ("AIza", 30),
    ("AKIA", 20),
    ("ASIA", 20),
    ("ya29.", 20),
    ("hf_", 20),
    ("r8_", 20),
    ("ghp_", 20),
    ("github_pat_", 20),
];

/// Query parameters whose value is a credential (`?key=…`, `&access_token=…`).
const QUERY_KEYS: &[&str] = &[
    "key=",
    "api_key=",
    "apikey=",
    "access_token=",
    "token=",
    "sig=",
    "signature=",
    "x-amz-signature=",
    "x-amz-security-token=",
];

/// Labels after which the next word is a credential even without a `:` or `=`.
const STRONG_LABELS: &[&str] = &["bearer", "basic"];

/// Removes credential-shaped words from a text.
pub(crate) fn scrub(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // The next word is a credential (after `Bearer`, `x-api-key:`, `api-key =`).
    let mut pending = false;
    // The previous word was a label without its separator (`api-key` then `=`).
    let mut bare_label = false;
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && !"-_.".contains(c));
        let lower = bare.to_ascii_lowercase();
        if pending && !bare.is_empty() && !LABELS.contains(&lower.as_str()) {
            out.push_str(&word.replacen(bare, MASK, 1));
            pending = false;
            continue;
        }
        if bare_label && (word == ":" || word == "=") {
            out.push_str(word);
            pending = true;
            bare_label = false;
            continue;
        }
        let mut w = word.to_owned();
        if is_key_shaped(bare) {
            w = w.replace(bare, MASK);
        }
        w = scrub_query(&w);
        let mut glued_value = false;
        if let Some((label, value)) = split_glued(word)
            && !value.is_empty()
            && LABELS.contains(&label.as_str())
            && !LABELS.contains(&value.to_ascii_lowercase().as_str())
        {
            w = w.replacen(value, MASK, 1);
            glued_value = true;
        }
        (pending, bare_label) = if glued_value {
            (false, false)
        } else {
            label_state(word, pending)
        };
        out.push_str(&w);
    }
    out
}

/// After `word`: whether the next word is a credential, and whether a lone `:`/`=` would make it one.
fn label_state(word: &str, pending: bool) -> (bool, bool) {
    let trimmed = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let separator = word
        .get(trimmed.len()..)
        .is_some_and(|rest| rest.contains([':', '=']));
    let last = trimmed
        .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if STRONG_LABELS.contains(&last.as_str()) {
        return (true, false);
    }
    if !LABELS.contains(&last.as_str()) {
        // Punctuation alone (`"`) keeps a pending credential pending.
        return (pending && trimmed.is_empty(), false);
    }
    (separator || pending, !separator)
}

fn is_key_shaped(bare: &str) -> bool {
    KEY_PREFIXES
        .iter()
        .any(|(p, min)| bare.starts_with(p) && bare.len() >= *min)
}

/// `label:value` or `"label":"value"` in one word: the label (lower-case) and the value.
fn split_glued(word: &str) -> Option<(String, &str)> {
    let (l, v) = word.split_once([':', '='])?;
    let label = l
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
        .to_ascii_lowercase();
    let value = v.trim_matches(|c: char| !c.is_ascii_alphanumeric() && !"-_.".contains(c));
    Some((label, value))
}

/// Masks the values of credential query parameters inside a word (`…?key=abc&x=1`).
fn scrub_query(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        let found = QUERY_KEYS
            .iter()
            .filter_map(|k| {
                lower
                    .get(i..)?
                    .find(k)
                    .map(|at| (i + at, k.len()))
                    // Only a parameter name: at the start, or after `?`, `&` or `;`.
                    .filter(|(at, _)| {
                        *at == 0 || matches!(word.as_bytes().get(at - 1), Some(b'?' | b'&' | b';'))
                    })
            })
            .min();
        let Some((at, len)) = found else {
            out.push_str(word.get(i..).unwrap_or_default());
            break;
        };
        let start = at + len;
        let end = word
            .get(start..)
            .and_then(|rest| rest.find(['&', '"', '\'', ' ', ')', ',', ';']))
            .map_or(word.len(), |e| start + e);
        out.push_str(word.get(i..start).unwrap_or_default());
        if end > start {
            out.push_str(MASK);
        }
        i = end.max(start);
        if i == at {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_secrets_leave_errors_and_bodies() {
        let r = Redactor::new(["k-live-0123456789", "shortk"]);
        assert_eq!(
            r.text("you sent authorization: Bearer k-live-0123456789"),
            "you sent authorization: Bearer ***"
        );
        assert_eq!(r.text("echo shortk here"), "echo *** here");
        assert_eq!(r.exact("a k-live-0123456789 b"), "a *** b");
        // Short secrets stay in successful bodies (they would match ordinary words).
        assert_eq!(r.exact("shortk"), "shortk");
        assert_eq!(
            r.exact_bytes(b"{\"x\":\"k-live-0123456789\"}").unwrap(),
            b"{\"x\":\"***\"}"
        );
        assert!(r.exact_bytes(b"nothing").is_none());
    }

    #[test]
    fn credential_shapes_leave_error_texts() {
        let r = Redactor::default();
        for (input, secret) in [
            (
                "Incorrect API key provided: sk-proj-abcdefghijklmnop.",
                "abcdefghijklmnop",
            ),
            (
                "you sent authorization: Bearer unknown-token-value",
                "unknown-token-value",
            ),
            (
                "headers: {\"authorization\":\"Bearer tok123456\"}",
                "tok123456",
            ),
            ("x-api-key: anthropic-secret-1", "anthropic-secret-1"),
            ("x-api-key:glued-secret-2", "glued-secret-2"),
            (
                "GET https://h/v1/models?key=AIzaSyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&alt=sse failed",
                "AIzaSy",
            ),
            ("aws AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE"),
            ("api-key = azure-secret-3 rejected", "azure-secret-3"),
            ("BEARER UPPER-CASE-TOKEN", "UPPER-CASE-TOKEN"),
        ] {
            let out = r.text(input);
            assert!(!out.contains(secret), "{input} -> {out}");
        }
        assert_eq!(r.text("plain message, 3 tokens"), "plain message, 3 tokens");
        assert_eq!(
            r.text("max_tokens is too large: 9000 > 4096"),
            "max_tokens is too large: 9000 > 4096"
        );
    }

    #[test]
    fn provider_errors_are_redacted_in_every_variant() {
        let r = Redactor::new(["secret-key-123456"]);
        for e in [
            ProviderError::Connect("secret-key-123456".into()),
            ProviderError::Io("secret-key-123456".into()),
            ProviderError::Decode("secret-key-123456".into()),
            ProviderError::Status {
                status: 500,
                message: "secret-key-123456".into(),
                retry_after: None,
            },
        ] {
            assert!(!r.error(e).to_string().contains("secret-key"));
        }
        let s = r.stream_error(StreamError::new("echo secret-key-123456"));
        assert_eq!(s.message, "echo ***");
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let r = Redactor::new(["secret-key-123456"]);
        assert!(!format!("{r:?}").contains("secret"));
    }
}
