//! mcp-calculator over stdio, driven with raw MCP JSON-RPC.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/stdio_rpc.rs"]
#[allow(dead_code)]
mod stdio_rpc;

use serde_json::json;
use stdio_rpc::Rpc;

#[test]
fn lists_and_runs_its_tools() {
    let (mut rpc, init) = Rpc::start(env!("CARGO_BIN_EXE_mcp-calculator"));
    assert_eq!(init["serverInfo"]["name"], "mcp-calculator");
    let tools = rpc.call("tools/list", json!({}));
    let mut names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "div", "mul", "sqrt", "sub"]);
    let add = &tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "add")
        .unwrap()["inputSchema"];
    assert_eq!(add["properties"]["a"]["type"], "number");

    let r = rpc.tool("add", json!({"a": 2, "b": 3.5}));
    assert_eq!(r["content"][0]["text"], "5.5");
    assert_ne!(r["isError"], true);
    let r = rpc.tool("mul", json!({"a": 6, "b": 7}));
    assert_eq!(r["content"][0]["text"], "42");
    let r = rpc.tool("div", json!({"a": 1, "b": 0}));
    assert_eq!(r["isError"], true);
    assert_eq!(r["content"][0]["text"], "division by zero");
    // Bad arguments are a protocol error, not a crash.
    let r = rpc.tool("add", json!({"a": "two"}));
    assert!(r["code"].is_number() || r["isError"] == true, "{r}");
    let r = rpc.tool("add", json!({"a": 1, "b": 1}));
    assert_eq!(r["content"][0]["text"], "2");
}
