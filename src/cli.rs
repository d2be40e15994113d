//! Command line: `switchyard serve`, `switchyard check` and `switchyard cache-eval`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Server, shutdown_signal};
use crate::config::{Config, ConfigError};

/// Switchyard: an OpenAI- and Anthropic-compatible LLM gateway.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway (zero-config when no config file is given or found).
    Serve {
        /// Config file (default: ./switchyard.toml when present).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file: print every problem with its field path.
    Check {
        /// Config file (default: ./switchyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Measure the semantic cache on labelled prompt pairs: served and wrong-hit rates, per kind
    /// and style, with the learned verifier (the default) or the guard's curve over thresholds
    /// (uses the real embedding model).
    CacheEval {
        /// JSONL file of {"a", "b", "hit", "kind"} pairs.
        #[arg(long, default_value = "tests/fixtures/cache/pairs.jsonl")]
        pairs: PathBuf,
        /// Also the wrong hits a team reported, as exported by
        /// `GET /api/cache/feedback?format=jsonl` (must-not-hit pairs, kind `reported`).
        #[arg(long)]
        feedback: Option<PathBuf>,
        /// Only the pairs of this split (`tune`, `validate`, `test`; default all).
        #[arg(long)]
        split: Option<String>,
        /// The learned verifier's directory (`[cache] verifier_model`).
        #[arg(long, default_value = "models/cache-verifier")]
        verifier: PathBuf,
        /// Judge conversations whose earlier turns differ with this conversation verifier
        /// (`[cache] conversations = "meaning"`; without it earlier turns must match exactly).
        #[arg(long)]
        conversations: Option<PathBuf>,
        /// Judge candidates with the word-list guard instead (`[cache] verifier = "guard"`).
        #[arg(long)]
        guard: bool,
        /// Directory with model.onnx and the tokenizer files.
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        model: PathBuf,
        /// ONNX Runtime library.
        #[arg(long, default_value = "models/onnxruntime/libonnxruntime.so.1.24.4")]
        runtime: PathBuf,
        /// Threshold to mark as the default in the report.
        #[arg(long, default_value_t = crate::config::cache::DEFAULT_THRESHOLD)]
        threshold: f32,
    },
}

const DEFAULT_CONFIG: &str = "switchyard.toml";

/// Runs the CLI; the exit code says how it went.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => {
            check(&config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)))
        }
        Command::Serve { config, listen } => serve(config, listen),
        Command::CacheEval {
            pairs,
            feedback,
            split,
            verifier,
            conversations,
            guard,
            model,
            runtime,
            threshold,
        } => cache_eval(
            &EvalArgs {
                pairs,
                feedback,
                split,
                verifier: (!guard).then_some(verifier),
                conversations,
                model,
            },
            &runtime,
            threshold,
        ),
    }
}

/// What `cache-eval` reads.
struct EvalArgs {
    pairs: PathBuf,
    feedback: Option<PathBuf>,
    split: Option<String>,
    verifier: Option<PathBuf>,
    conversations: Option<PathBuf>,
    model: PathBuf,
}

fn cache_eval(args: &EvalArgs, runtime: &Path, threshold: f32) -> ExitCode {
    use crate::cache::{embedder::Model, eval, verifier::Verifier};
    let split = args.split.as_deref();
    let model = args.model.as_path();
    let run = || -> Result<String, eval::EvalError> {
        let mut pairs = eval::read_pairs(&args.pairs)?;
        if let Some(f) = &args.feedback {
            pairs.extend(eval::read_pairs(f)?);
        }
        let pairs = eval::only_split(pairs, split);
        if pairs.is_empty() {
            return Err(eval::EvalError::Pairs(format!(
                "no pairs{}",
                split
                    .map(|s| format!(" in the split `{s}`"))
                    .unwrap_or_default()
            )));
        }
        let mut embedder = Model::load(model, runtime)?;
        let mut scored = eval::score(&mut embedder, pairs)?;
        let Some(dir) = &args.verifier else {
            return Ok(eval::report(&scored, threshold, None));
        };
        let floor = crate::config::cache::VERIFIER_FLOOR;
        let v = Verifier::load(dir, model, None, args.conversations.as_deref())?;
        eval::verify(&mut scored, &v, floor)?;
        Ok(eval::report(&scored, floor, Some(v.threshold)))
    };
    match run() {
        Ok(report) => {
            eprint!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cache-eval: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            let mut issues: Vec<String> = cfg
                .exposure_issues(cfg.server.listen)
                .into_iter()
                .map(|i| i.to_string())
                .collect();
            issues.extend(crate::plugins::check(&cfg.plugins));
            if !issues.is_empty() {
                eprintln!("{}: {} problem(s)", path.display(), issues.len());
                for i in issues {
                    eprintln!("  {i}");
                }
                return ExitCode::from(1);
            }
            eprintln!(
                "{}: ok ({} provider(s), {} route(s))",
                path.display(),
                cfg.providers.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(issues)) => {
            eprintln!("{}: {} problem(s)", path.display(), issues.len());
            for i in issues {
                eprintln!("  {i}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    let cfg = match config {
        Some(path) => Config::load(&path),
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(Config::zero_config(&|k| std::env::var(k).ok())),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let exposure = cfg.exposure_issues(listen.unwrap_or(cfg.server.listen));
    if !exposure.is_empty() {
        eprintln!("refusing to start:");
        for i in exposure {
            eprintln!("  {i}");
        }
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter needs it.
        let traces = crate::telemetry::init(&cfg.telemetry);
        let code = run_server(cfg, listen).await;
        // Export what is buffered before the process ends.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        code
    })
}

async fn run_server(cfg: Config, listen: Option<SocketAddr>) -> ExitCode {
    let server = match Server::start(cfg, listen).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let token = server.shutdown_token();
    // The signal watcher lives as long as the process; it only triggers the drain.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
    match server.wait().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
