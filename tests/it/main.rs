//! The one integration-test binary: real gateway, mock providers speaking the real wire formats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    // Tests start mock servers and helpers with plain spawns; the gateway itself may not.
    clippy::disallowed_methods
)]

mod anthropic_ingress;
mod bedrock;
mod cache;
mod cache_eval;
mod cache_qdrant;
mod cli;
mod conformance;
mod deploy;
mod edge;
mod fleet;
mod footprint;
mod gateway;
mod genai_ingress;
mod governance;
mod governance_redis;
mod interop;
mod mcp;
mod mcp_interop;
mod mock;
mod model;
mod observe;
mod otel;
mod plugins;
mod plugins_wasm;
mod postgres_server;
mod qdrant_fake;
mod redis_server;
mod reload;
mod responses;
mod router;
mod runtime_config;
mod security;
mod ui;
mod vertex;
