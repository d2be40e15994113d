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

/// The loaded verifier.
pub struct Verifier {
    inner: Mutex<TextRerank>,
    /// Scores at or above it are served.
    pub threshold: f32,
}

#[derive(serde::Deserialize)]
struct Meta {
    threshold: f32,
}

impl Verifier {
    /// Loads `model.onnx` and `verifier.json` from `dir` and the tokenizer files from
    /// `tokenizer_dir` (the embedding model's: the same vocabulary). ONNX Runtime must be loaded.
    pub fn load(
        dir: &Path,
        tokenizer_dir: &Path,
        threshold: Option<f32>,
    ) -> Result<Self, EmbedError> {
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

    /// The score of serving the answer to `cached` for `asked` (blocking: a few ms).
    pub fn score(&self, cached: &str, asked: &str) -> Result<f32, EmbedError> {
        let mut model = self
            .inner
            .lock()
            .map_err(|_| EmbedError::Run("verifier lock poisoned".into()))?;
        let out = model
            .rerank(cached, vec![asked], false, None)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        out.first()
            .map(|r| r.score)
            .ok_or_else(|| EmbedError::Run("the verifier returned no score".into()))
    }

    /// Whether the answer to `cached` may serve `asked`, scored on a blocking thread; the error
    /// is the reason for the what-if (`verifier`, or `verifier_failed` when the model failed).
    pub async fn accepts(self: &Arc<Self>, cached: &str, asked: &str) -> Result<(), String> {
        let (me, cached, asked) = (self.clone(), cached.to_owned(), asked.to_owned());
        match tokio::task::spawn_blocking(move || me.score(&cached, &asked)).await {
            Ok(Ok(score)) if score >= self.threshold => Ok(()),
            Ok(Ok(_)) => Err("verifier".to_owned()),
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
