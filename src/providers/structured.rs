//! Structured output (`response_format` `json_schema` / `json_object`) for providers without a
//! JSON mode of their own (Anthropic Messages, Bedrock Converse, Claude on Vertex AI): the schema
//! becomes one forced tool, and the tool's input comes back as the answer's text, streamed as
//! content deltas. A request that brings tools of its own is sent as it is (forcing a tool would
//! take them away); the `response_format` is then not enforced.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::chat::{ChatRequest, ChatResponse, ChatStream, Content, FunctionDef, Schema, Tool};

/// The forced tool's name.
pub const JSON_TOOL: &str = "json_response";

/// The request with its `response_format` turned into a forced tool, when it has one to turn.
pub fn force(req: &ChatRequest) -> Option<ChatRequest> {
    let format = req.extra.get("response_format")?;
    let schema = match format.get("type").and_then(Value::as_str)? {
        "json_schema" => format
            .pointer("/json_schema/schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
        "json_object" => json!({"type": "object"}),
        _ => return None,
    };
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return None;
    }
    let mut out = req.clone();
    out.extra.remove("response_format");
    let description = format
        .pointer("/json_schema/description")
        .and_then(Value::as_str)
        .unwrap_or("Give the answer as a JSON object that matches this schema.");
    out.tools = Some(vec![Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: JSON_TOOL.into(),
            description: Some(description.into()),
            parameters: Some(Schema::new(schema)),
            extra: Default::default(),
        },
    }]);
    out.tool_choice = Some(json!({"type": "function", "function": {"name": JSON_TOOL}}));
    Some(out)
}

/// The forced tool's call turned back into the answer's text.
pub fn unwrap_response(mut resp: ChatResponse) -> ChatResponse {
    for c in &mut resp.choices {
        let Some(calls) = c.message.tool_calls.take() else {
            continue;
        };
        let (json, other): (Vec<_>, Vec<_>) = calls
            .into_iter()
            .partition(|t| t.function.name == JSON_TOOL);
        if let Some(j) = json.into_iter().next() {
            c.message.content = Some(Content::Text(j.function.arguments));
            if other.is_empty() && c.finish_reason.as_deref() == Some("tool_calls") {
                c.finish_reason = Some("stop".into());
            }
        }
        c.message.tool_calls = (!other.is_empty()).then_some(other);
    }
    resp
}

/// The same for a stream: the forced tool's argument deltas become content deltas.
pub fn unwrap_stream(stream: ChatStream) -> ChatStream {
    let mut json_index: Option<u32> = None;
    let mut others = false;
    Box::pin(stream.map(move |item| {
        let mut chunk = item?;
        for c in &mut chunk.make_mut()?.choices {
            if let Some(calls) = c.delta.tool_calls.take() {
                let mut kept = Vec::new();
                for d in calls {
                    let named_json =
                        d.function.as_ref().and_then(|f| f.name.as_deref()) == Some(JSON_TOOL);
                    if named_json {
                        json_index = Some(d.index);
                    }
                    if json_index == Some(d.index) {
                        if let Some(a) = d
                            .function
                            .and_then(|f| f.arguments)
                            .filter(|a| !a.is_empty())
                        {
                            c.delta.content.get_or_insert_with(String::new).push_str(&a);
                        }
                    } else {
                        others = true;
                        kept.push(d);
                    }
                }
                c.delta.tool_calls = (!kept.is_empty()).then_some(kept);
            }
            if json_index.is_some() && !others && c.finish_reason.as_deref() == Some("tool_calls") {
                c.finish_reason = Some("stop".into());
            }
        }
        Ok(chunk)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_becomes_a_forced_tool_and_its_call_the_text() {
        let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"a": {"type": "number"}}}}}}))
        .unwrap_or_default();
        let Some(forced) = force(&req) else {
            unreachable!("forced")
        };
        let v = serde_json::to_value(&forced).unwrap_or_default();
        assert!(v.get("response_format").is_none());
        assert_eq!(v["tools"][0]["function"]["name"], JSON_TOOL);
        assert_eq!(
            v["tools"][0]["function"]["parameters"]["properties"]["a"]["type"],
            "number"
        );
        assert_eq!(v["tool_choice"]["function"]["name"], JSON_TOOL);
        let resp: ChatResponse = serde_json::from_value(json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": JSON_TOOL, "arguments": "{\"a\":1}"}}]}}]}))
        .unwrap_or_else(|_| unreachable!());
        let out = unwrap_response(resp);
        assert_eq!(out.choices[0].message.text_content(), "{\"a\":1}");
        assert!(out.choices[0].message.tool_calls.is_none());
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("stop"));
        // A request with its own tools is left alone.
        let mut with_tools = req.clone();
        with_tools.tools = forced.tools.clone();
        assert!(force(&with_tools).is_none());
    }

    #[tokio::test]
    async fn streamed_arguments_become_content() {
        let chunks: Vec<crate::chat::StreamItem> = [
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": JSON_TOOL, "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ]
        .into_iter()
        .map(|v| {
            serde_json::from_value::<crate::chat::ChatChunk>(v)
                .map(|c| Box::new(c.into()))
                .map_err(|e| crate::chat::StreamError::new(e.to_string()))
        })
        .collect();
        let out = crate::chat::collect_stream(unwrap_stream(Box::pin(futures_util::stream::iter(
            chunks,
        ))))
        .await
        .unwrap_or_else(|_| unreachable!());
        assert_eq!(out.choices[0].message.text_content(), "{\"a\":1}");
        assert!(out.choices[0].message.tool_calls.is_none());
        assert_eq!(out.choices[0].finish_reason.as_deref(), Some("stop"));
    }
}
