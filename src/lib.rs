//! Switchyard: an OpenAI-, Anthropic- and Gemini-compatible LLM gateway.
//!
//! # Layout (one module per stage of the request path)
//! - `cli`: command line (`serve`, `check`).
//! - `app`: shared state, router assembly, graceful shutdown.
//! - `api`: HTTP edge: OpenAI (chat, Responses), Anthropic and Gemini ingress, admin API, web UI,
//!   SSE encoding.
//! - `pipeline`: the ordered request path in one function.
//! - `request`: what every stage shares about one request (context, options, outcome, `ChatBackend`).
//! - `governance`: virtual keys, budgets and rate limits: `admit` -> `Permit`, `settle`.
//! - `plugins`: the plugin host: `[[plugins]]` hooks in order (compiled-in, webhook).
//! - `cache`: the semantic cache (exact + semantic tiers, local embeddings, Qdrant Edge / server).
//! - `mcp`: MCP servers (rmcp), tool injection, the tool loop, the gateway's own `/mcp`.
//! - `error`: every module error -> status + OpenAI JSON body.
//! - `chat`: canonical OpenAI-shaped request/response/chunk types.
//! - `config`: raw TOML -> validated config; `env.NAME`; zero-config.
//! - `router`: route table, weighted picks, the one retry policy, circuit breakers.
//! - `providers`: upstream adapters (OpenAI wire format and presets; Anthropic; Gemini; Bedrock;
//!   Vertex AI).
//! - `telemetry`: logging, Prometheus metrics, price estimates, the request log.
//! - `store`: the sled store (cache analytics, MCP registrations, the request log, governance,
//!   stored Responses API turns).

pub mod api;
pub mod app;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod config;
pub mod error;
pub mod governance;
pub mod mcp;
pub mod pipeline;
pub mod plugins;
pub mod providers;
pub mod request;
pub mod router;
pub mod runtime;
pub mod store;
pub mod telemetry;
