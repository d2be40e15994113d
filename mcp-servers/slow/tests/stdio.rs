//! mcp-slow over stdio, driven with raw MCP JSON-RPC.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/stdio_rpc.rs"]
#[allow(dead_code)]
mod stdio_rpc;

use std::time::{Duration, Instant};

use serde_json::json;
use stdio_rpc::Rpc;

#[test]
fn sleeps_fails_and_crashes_on_demand() {
    let (mut rpc, init) = Rpc::start(env!("CARGO_BIN_EXE_mcp-slow"));
    assert_eq!(init["serverInfo"]["name"], "mcp-slow");
    let r = rpc.tool("echo", json!({"text": "hi"}));
    assert_eq!(r["content"][0]["text"], "hi");
    let t = Instant::now();
    let r = rpc.tool("sleep", json!({"ms": 300}));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r["content"][0]["text"], "slept 300 ms");
    let r = rpc.tool("fail", json!({"text": "boom"}));
    assert_eq!(r["isError"], true);
    assert_eq!(r["content"][0]["text"], "boom");
    let tools = rpc.call("tools/list", json!({}));
    assert!(
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "hang")
    );
    // `crash` ends the process before any answer.
    rpc.stdin_send_crash();
    assert_eq!(rpc.wait().code(), Some(3));
}
