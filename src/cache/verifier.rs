//! The learned verifier (`[cache] verifier = "model"`): a cross-encoder that reads the cached
//! question and the new one together and scores whether one answer serves both (see
//! models/cache-verifier/README.md and docs/cache.md). It replaces the word-list guard for the
//! best semantic candidates; it runs on ONNX Runtime through fastembed's reranker, off the async
//! runtime (the caller uses `spawn_blocking`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use fastembed::{RerankInitOptionsUserDefined, TextRerank, UserDefinedRerankingModel};

use super::embedder::{EmbedError, read, tokenizer_files};

/// Longest pair in tokens (questions are short; longer pairs are truncated).
const MAX_TOKENS: usize = 256;

/// The loaded verifier: the question model, and the conversation model when conversations are
/// judged by meaning.
pub struct Verifier {
    questions: Judge,
    conversations: Option<Judge>,
    /// Scores of the question model at or above it are served.
    pub threshold: f32,
}

/// One cross-encoder and its decision threshold.
struct Judge {
    inner: Mutex<TextRerank>,
    threshold: f32,
}

#[derive(serde::Deserialize)]
struct Meta {
    threshold: f32,
}

/// One side of a comparison: the earlier turns as the verifier reads them (empty: none) and the
/// last user turn(s).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// `u: ... // a: ...`, or empty.
    pub context: &'a str,
    /// The last user turn(s).
    pub last: &'a str,
}

/// What the verifier is asked to judge for two sides.
#[derive(Debug, Clone, PartialEq)]
pub enum Question {
    /// Two questions without earlier turns, or with the same ones: the last turns.
    Last(String, String),
    /// Two conversations, read whole.
    Conversation(String, String),
    /// The earlier turns differ and cannot be judged (no conversation threshold, or too long
    /// for the model to read whole): not served.
    Refused,
}

/// Longest conversation side, in characters, the verifier is asked to read (a pair must also fit
/// in [`MAX_TOKENS`] tokens whole, checked when it is scored: nothing is judged from a cut text).
pub const MAX_CONVERSATION_CHARS: usize = 600;

impl Question {
    /// What to judge for a cached side and an asked side.
    pub fn of(cached: Side<'_>, asked: Side<'_>, conversations: bool) -> Self {
        if cached.context == asked.context {
            return Self::Last(cached.last.to_owned(), asked.last.to_owned());
        }
        let (a, b) = (
            super::key::conversation_text(cached.context, cached.last),
            super::key::conversation_text(asked.context, asked.last),
        );
        if !conversations || a.len() > MAX_CONVERSATION_CHARS || b.len() > MAX_CONVERSATION_CHARS {
            return Self::Refused;
        }
        Self::Conversation(a, b)
    }
}

/// The one decision: a pair is served when the model's score reaches its threshold.
fn serves((score, threshold): (f32, f32)) -> bool {
    score >= threshold
}

/// What the verifier made of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Served, or the reason not (`context`, `verifier`).
    pub served: Result<(), &'static str>,
    /// The model's score less the threshold it was held to; `None` when no model read the pair.
    pub margin: Option<f32>,
}

impl Judge {
    /// Loads `model.onnx` and `verifier.json` from `dir` and the tokenizer files from
    /// `tokenizer_dir` (the embedding model's: the same vocabulary). ONNX Runtime must be loaded.
    fn load(dir: &Path, tokenizer_dir: &Path, threshold: Option<f32>) -> Result<Self, EmbedError> {
        let meta: Meta = serde_json::from_slice(&read(dir, "verifier.json")?)
            .map_err(|e| EmbedError::Load(format!("verifier.json: {e}")))?;
        let files = tokenizer_files(tokenizer_dir)?;
        let model = UserDefinedRerankingModel::new(read(dir, "model.onnx")?, files);
        let inner = TextRerank::try_new_from_user_defined(
            model,
            // One thread: a pair is ~40 tokens, and a thread per core spinning on it tripled a
            // semantic hit's latency under load (docs/performance.md).
            RerankInitOptionsUserDefined::default()
                .with_max_length(MAX_TOKENS)
                .with_intra_threads(1),
        )
        .map_err(|e| EmbedError::Load(e.to_string()))?;
        Ok(Self {
            inner: Mutex::new(inner),
            threshold: threshold.unwrap_or(meta.threshold),
        })
    }

    fn model(&self) -> Result<std::sync::MutexGuard<'_, TextRerank>, EmbedError> {
        self.inner
            .lock()
            .map_err(|_| EmbedError::Run("verifier lock poisoned".into()))
    }

    /// The score of serving the answer to `cached` for `asked` (blocking: a few ms).
    fn score(&self, cached: &str, asked: &str) -> Result<f32, EmbedError> {
        let out = self
            .model()?
            .rerank(cached, vec![asked], false, None)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        out.first()
            .map(|r| r.score)
            .ok_or_else(|| EmbedError::Run("the verifier returned no score".into()))
    }

    /// Whether the pair is read whole (the tokenizer truncates longer pairs, and a conversation
    /// judged from a cut text could hide the turn that differs).
    fn fits(&self, a: &str, b: &str) -> Result<bool, EmbedError> {
        let enc = self
            .model()?
            .tokenizer
            .encode((a, b), true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        Ok(enc.get_overflowing().is_empty() && enc.len() < MAX_TOKENS)
    }
}

impl Verifier {
    /// Loads the question model from `dir` (its decision threshold overridden by `threshold`)
    /// and, when `conversations` names one, the conversation model; both read the tokenizer files
    /// in `tokenizer_dir`. ONNX Runtime must be loaded.
    pub fn load(
        dir: &Path,
        tokenizer_dir: &Path,
        threshold: Option<f32>,
        conversations: Option<&Path>,
    ) -> Result<Self, EmbedError> {
        let questions = Judge::load(dir, tokenizer_dir, threshold)?;
        let conversations = conversations
            .map(|d| {
                Judge::load(d, tokenizer_dir, None)
                    .map_err(|e| EmbedError::Load(format!("{}: {e}", d.display())))
            })
            .transpose()?;
        Ok(Self {
            threshold: questions.threshold,
            questions,
            conversations,
        })
    }

    /// Whether conversations whose earlier turns differ can be judged.
    pub fn reads_conversations(&self) -> bool {
        self.conversations.is_some()
    }

    /// The question model's score of serving the answer to `cached` for `asked` (blocking).
    pub fn score(&self, cached: &str, asked: &str) -> Result<f32, EmbedError> {
        self.questions.score(cached, asked)
    }

    /// The model's score for `q` and the threshold it is held to (blocking); `None` when no model
    /// can read it.
    fn read(&self, q: &Question) -> Result<Option<(f32, f32)>, EmbedError> {
        let (judge, a, b) = match q {
            Question::Last(a, b) => (&self.questions, a, b),
            Question::Conversation(a, b) => match &self.conversations {
                Some(j) if j.fits(a, b)? => (j, a, b),
                _ => return Ok(None),
            },
            Question::Refused => return Ok(None),
        };
        Ok(Some((judge.score(a, b)?, judge.threshold)))
    }

    /// Whether the verifier serves `q` (blocking), and the score it gave.
    pub fn judge(&self, q: &Question) -> Result<(bool, Option<f32>), EmbedError> {
        let read = self.read(q)?;
        Ok((read.is_some_and(serves), read.map(|(score, _)| score)))
    }

    /// Whether `q` is served (blocking), and the model's score less the threshold it was held to
    /// (`None` when no model read it: the margin `cache-eval` draws its curve from); a refusal is
    /// the reason the what-if and `cache-eval` report: `context` when earlier turns differ in a
    /// way it cannot judge, else `verifier`.
    pub fn verdict(&self, q: &Question) -> Result<Verdict, EmbedError> {
        if *q == Question::Refused {
            return Ok(Verdict {
                served: Err("context"),
                margin: None,
            });
        }
        let read = self.read(q)?;
        Ok(Verdict {
            served: if read.is_some_and(serves) {
                Ok(())
            } else {
                Err("verifier")
            },
            margin: read.map(|(score, threshold)| score - threshold),
        })
    }

    /// Whether the answer to the `cached` side may serve the `asked` one, scored on a blocking
    /// thread; the error is the reason for the what-if (`verifier`, `context` when earlier turns
    /// differ in a way it cannot judge, or `verifier_failed` when the model failed).
    pub async fn accepts(
        self: &Arc<Self>,
        cached: Side<'_>,
        asked: Side<'_>,
    ) -> Result<(), String> {
        let q = Question::of(cached, asked, self.reads_conversations());
        // What needs no model is answered without a hop to a blocking thread.
        if q == Question::Refused {
            return Err("context".to_owned());
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.verdict(&q)).await {
            Ok(Ok(verdict)) => verdict.served.map_err(str::to_owned),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache verifier failed; treating the candidate as a miss");
                Err("verifier_failed".to_owned())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache verifier task failed; treating the candidate as a miss");
                Err("verifier_failed".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side<'a>(context: &'a str, last: &'a str) -> Side<'a> {
        Side { context, last }
    }

    #[test]
    fn the_same_earlier_turns_are_judged_on_the_last_turn_alone() {
        let q = Question::of(side("u: hi", "How?"), side("u: hi", "How so?"), true);
        assert_eq!(q, Question::Last("How?".into(), "How so?".into()));
        let q = Question::of(side("", "How?"), side("", "How so?"), false);
        assert_eq!(q, Question::Last("How?".into(), "How so?".into()));
    }

    #[test]
    fn other_earlier_turns_are_read_whole_or_refused() {
        let q = Question::of(
            side("u: I have a Pro plan. // a: Sure.", "How do I cancel it?"),
            side("", "How do I cancel it?"),
            true,
        );
        assert_eq!(
            q,
            Question::Conversation(
                "u: I have a Pro plan. // a: Sure. // u: How do I cancel it?".into(),
                "u: How do I cancel it?".into()
            )
        );
        // A model without a conversation threshold cannot judge them.
        let q = Question::of(side("u: a", "b"), side("", "b"), false);
        assert_eq!(q, Question::Refused);
        // Nor can any model read a conversation longer than it takes whole.
        let long = "u: ".to_owned() + &"word ".repeat(MAX_CONVERSATION_CHARS / 5);
        let q = Question::of(side(&long, "b"), side("", "b"), true);
        assert_eq!(q, Question::Refused);
    }
}
