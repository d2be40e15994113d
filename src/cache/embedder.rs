//! The embedding model: all-MiniLM-L6-v2 (int8 ONNX, mean pooling) through fastembed and an ONNX
//! Runtime loaded from `models/`, on a dedicated thread that batches concurrent requests.
//!
//! Nothing here touches the network: the files come from `python3 models/fetch.py`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Instant;

use fastembed::{
    InitOptionsUserDefined, Pooling, QuantizationMode, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};
use tokio::sync::oneshot;

/// Dimensions of all-MiniLM-L6-v2.
pub const DIMENSIONS: usize = 384;
/// Longest input in tokens; longer prompts are truncated (the model was trained on 256).
const MAX_TOKENS: usize = 256;
/// Largest batch handed to the model at once.
const MAX_BATCH: usize = 32;

/// Why embedding failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing.
    #[error(
        "embedding model file {0} is missing; run `python3 models/fetch.py` to fetch it (the cache serves exact hits only until then)"
    )]
    Missing(PathBuf),
    /// A file exists but cannot be read or loaded.
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    /// The model failed on an input.
    #[error("embedding failed: {0}")]
    Run(String),
    /// The embedding thread is gone.
    #[error("the embedding thread stopped")]
    Stopped,
}

/// Turns text into unit vectors; the cache's first seam.
pub trait Embedder: Send + Sync {
    /// Embeds one text (calls may be batched with concurrent ones).
    fn embed(
        &self,
        text: String,
    ) -> impl std::future::Future<Output = Result<Vec<f32>, EmbedError>> + Send;
}

/// The loaded model, used from one thread at a time.
pub struct Model {
    inner: TextEmbedding,
}

static RUNTIME: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();

/// Loads ONNX Runtime from `path` (once per process).
fn load_runtime(path: &Path) -> Result<(), EmbedError> {
    let slot = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut loaded = slot.lock().map_err(|_| EmbedError::Load("lock".into()))?;
    if loaded.is_some() {
        return Ok(());
    }
    if !path.is_file() {
        return Err(EmbedError::Missing(path.to_owned()));
    }
    let _builder =
        ort::init_from(path).map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
    *loaded = Some(path.to_owned());
    Ok(())
}

/// The four tokenizer files fastembed wants, from a model directory.
pub(super) fn tokenizer_files(dir: &Path) -> Result<TokenizerFiles, EmbedError> {
    Ok(TokenizerFiles {
        tokenizer_file: read(dir, "tokenizer.json")?,
        config_file: read(dir, "config.json")?,
        special_tokens_map_file: read(dir, "special_tokens_map.json")?,
        tokenizer_config_file: read(dir, "tokenizer_config.json")?,
    })
}

/// Reads a model file, naming it when it is missing.
pub(super) fn read(dir: &Path, name: &str) -> Result<Vec<u8>, EmbedError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Err(EmbedError::Missing(path));
    }
    std::fs::read(&path).map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))
}

impl Model {
    /// Loads `model.onnx` and the tokenizer files from `dir`, with ONNX Runtime from `runtime`.
    pub fn load(dir: &Path, runtime: &Path) -> Result<Self, EmbedError> {
        let onnx = read(dir, "model.onnx")?;
        let files = tokenizer_files(dir)?;
        load_runtime(runtime)?;
        let model = UserDefinedEmbeddingModel::new(onnx, files)
            .with_pooling(Pooling::Mean)
            .with_quantization(QuantizationMode::Dynamic);
        let inner = TextEmbedding::try_new_from_user_defined(
            model,
            InitOptionsUserDefined::new().with_max_length(MAX_TOKENS),
        )
        .map_err(|e| EmbedError::Load(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Embeds a batch; vectors are unit length.
    pub fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = self
            .inner
            .embed(texts, None)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        for v in &mut out {
            normalise(v);
        }
        Ok(out)
    }
}

/// Scales `v` to unit length (cosine = dot product afterwards).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Batch sizes seen by the embedding thread, for the benchmark and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    /// Batches run.
    pub batches: u64,
    /// Texts embedded.
    pub texts: u64,
}

/// The model on its own thread: requests queue on a channel, and whatever has queued while the
/// previous batch ran goes into the next one (up to 32), so concurrent lookups share one run.
pub struct OnnxEmbedder {
    tx: mpsc::Sender<Job>,
    stats: std::sync::Arc<Mutex<BatchStats>>,
}

impl OnnxEmbedder {
    /// Starts the thread that owns `model`.
    pub fn start(mut model: Model) -> Result<Self, EmbedError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = std::sync::Arc::new(Mutex::new(BatchStats::default()));
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("switchyard-embed".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let texts: Vec<&str> = jobs.iter().map(|j| j.text.as_str()).collect();
                    let started = Instant::now();
                    let result = model.embed_batch(&texts);
                    tracing::trace!(
                        batch = jobs.len(),
                        took_us = started.elapsed().as_micros() as u64,
                        "embedded"
                    );
                    if let Ok(mut s) = thread_stats.lock() {
                        s.batches += 1;
                        s.texts += jobs.len() as u64;
                    }
                    match result {
                        Ok(vectors) => {
                            for (job, v) in jobs.into_iter().zip(vectors) {
                                let _ = job.reply.send(Ok(v));
                            }
                        }
                        Err(e) => {
                            for job in jobs {
                                let _ = job.reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| EmbedError::Load(format!("cannot start the embedding thread: {e}")))?;
        Ok(Self { tx, stats })
    }

    /// Batches run and texts embedded so far.
    pub fn batch_stats(&self) -> BatchStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Embedder for OnnxEmbedder {
    async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { text, reply })
            .map_err(|_| EmbedError::Stopped)?;
        rx.await.map_err(|_| EmbedError::Stopped)?
    }
}
