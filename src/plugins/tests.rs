use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_plugin::{
    ChatChunk, ChatRequest, ChatResponse, ChunkVerdict, ConfigError, Hooks, Plugin, PluginError,
    RequestInfo, State, Verdict,
};

use super::{Next, PluginHost, PluginStop};
use crate::config::plugins::{OnError, PluginConfig, PluginKind};
use crate::request::{ChatBody, ChatOutcome, Served};

/// Appends its tag to the user's text on the way in and to the answer on the way out; fails or
/// panics when the text asks it to.
struct Tagger(&'static str);

impl Plugin for Tagger {
    fn hooks(&self) -> Hooks {
        Hooks {
            request: true,
            response: true,
            stream: true,
            ..Hooks::default()
        }
    }
    fn on_request(
        &self,
        _: &RequestInfo,
        req: &mut ChatRequest,
        _: &mut State,
    ) -> Result<Verdict, PluginError> {
        let text = req.messages[0].text_content();
        if text.contains(&format!("fail {}", self.0)) {
            return Err(PluginError("asked to fail".into()));
        }
        if text.contains(&format!("panic {}", self.0)) {
            #[allow(clippy::panic)]
            {
                panic!("asked to panic");
            }
        }
        if text.contains(&format!("block {}", self.0)) {
            return Ok(Verdict::Reject {
                status: 403,
                message: format!("{} says no", self.0),
            });
        }
        if text.contains(&format!("answer {}", self.0)) {
            let resp: ChatResponse = serde_json::from_value(json!({"model": "plugin", "choices": [{"index": 0, "message": {"role": "assistant", "content": "direct"}, "finish_reason": "stop"}]})).map_err(|e| PluginError(e.to_string()))?;
            return Ok(Verdict::Respond(Box::new(resp)));
        }
        req.messages[0] =
            crate::chat::Message::text(crate::chat::Role::User, format!("{text} {}", self.0));
        Ok(Verdict::Continue)
    }
    fn on_response(
        &self,
        _: &RequestInfo,
        resp: &mut ChatResponse,
        _: &mut State,
    ) -> Result<(), PluginError> {
        let t = resp.choices[0].message.text_content();
        resp.choices[0].message =
            crate::chat::Message::text(crate::chat::Role::Assistant, format!("{t} {}", self.0));
        Ok(())
    }
    fn on_stream_chunk(
        &self,
        _: &RequestInfo,
        chunk: &mut ChatChunk,
        _: &mut State,
    ) -> Result<ChunkVerdict, PluginError> {
        if let Some(c) = chunk
            .choices
            .first_mut()
            .and_then(|c| c.delta.content.as_mut())
        {
            if c == "drop" {
                return Ok(ChunkVerdict::Drop);
            }
            c.push_str(self.0);
        }
        Ok(ChunkVerdict::Keep)
    }
}

fn a(_: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>> {
    Ok(Box::new(Tagger("A")))
}
fn b(_: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>> {
    Ok(Box::new(Tagger("B")))
}

fn host(on_error: OnError, scope_b: Vec<String>) -> Arc<PluginHost> {
    let cfg = |name: &str, f: switchyard_plugin::Factory, scope: Vec<String>| PluginConfig {
        name: name.into(),
        kind: PluginKind::Builtin(f),
        config: Value::Null,
        scope,
        on_error,
        mandatory: false,
        default_on: true,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let configs = [cfg("a", a, Vec::new()), cfg("b", b, scope_b)];
    match PluginHost::new(
        &configs,
        reqwest::Client::new(),
        Arc::new(crate::telemetry::metrics::Metrics::new()),
    ) {
        Ok(h) => Arc::new(h),
        Err(e) => unreachable!("{e}"),
    }
}

fn info(model: &str) -> RequestInfo {
    RequestInfo {
        request_id: "r".into(),
        model: model.into(),
        key: None,
    }
}

fn ask(text: &str) -> ChatRequest {
    serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .unwrap_or_default()
}

fn outcome(text: &str) -> ChatOutcome {
    let resp: ChatResponse = serde_json::from_value(
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}),
    )
    .unwrap_or_else(|_| unreachable!());
    ChatOutcome {
        served: Served {
            provider: Arc::from("p"),
            model: Arc::from("m"),
            attempts: 1,
        },
        body: ChatBody::Complete(Box::new(resp)),
        cache: None,
        mcp: None,
        json: None,
    }
}

fn text(o: &ChatOutcome) -> String {
    match &o.body {
        ChatBody::Complete(r) => r.choices[0].message.text_content(),
        ChatBody::Raw(_) | ChatBody::Stream(_) => String::new(),
    }
}

#[tokio::test]
async fn requests_go_in_order_and_answers_come_back_in_reverse() {
    let h = host(OnError::FailClosed, Vec::new());
    let Some(mut run) = h.begin(info("m"), None) else {
        unreachable!()
    };
    let mut req = ask("hi");
    assert!(matches!(run.on_request(&mut req).await, Ok(Next::Continue)));
    assert_eq!(req.messages[0].text_content(), "hi A B");
    let out = run
        .wrap(outcome("yo"))
        .await
        .unwrap_or_else(|_| unreachable!());
    assert_eq!(text(&out), "yo B A");
    let views = h.views();
    assert_eq!(views[0].stats["request"].calls, 1);
    assert_eq!(views[1].stats["response"].calls, 1);
}

#[tokio::test]
async fn a_rejection_stops_the_walk_and_a_direct_answer_goes_back_through_earlier_plugins() {
    let h = host(OnError::FailClosed, Vec::new());
    let Some(mut run) = h.begin(info("m"), None) else {
        unreachable!()
    };
    let r = run.on_request(&mut ask("block B")).await;
    assert!(
        matches!(r, Err(PluginStop::Rejected { status: 403, ref plugin, .. }) if plugin == "b")
    );
    assert_eq!(h.views()[1].stats["request"].blocks, 1);

    let Some(mut run) = h.begin(info("m"), None) else {
        unreachable!()
    };
    let Ok(Next::Respond(resp)) = run.on_request(&mut ask("answer B")).await else {
        unreachable!()
    };
    let mut o = outcome("");
    o.body = ChatBody::Complete(resp);
    let out = run.wrap(o).await.unwrap_or_else(|_| unreachable!());
    // B answered, so only A sees the answer.
    assert_eq!(text(&out), "direct A");
}

#[tokio::test]
async fn failures_and_panics_follow_on_error() {
    let closed = host(OnError::FailClosed, Vec::new());
    for ask_text in ["fail A", "panic A"] {
        let Some(mut run) = closed.begin(info("m"), None) else {
            unreachable!()
        };
        let r = run.on_request(&mut ask(ask_text)).await;
        assert!(
            matches!(r, Err(PluginStop::Failed { ref plugin, .. }) if plugin == "a"),
            "{ask_text}"
        );
    }
    let open = host(OnError::FailOpen, Vec::new());
    let Some(mut run) = open.begin(info("m"), None) else {
        unreachable!()
    };
    let mut req = ask("panic A");
    assert!(matches!(run.on_request(&mut req).await, Ok(Next::Continue)));
    assert_eq!(
        req.messages[0].text_content(),
        "panic A B",
        "A skipped, B ran"
    );
    assert_eq!(open.views()[0].stats["request"].errors, 1);
}

#[tokio::test]
async fn scope_limits_a_plugin_to_its_models() {
    let h = host(OnError::FailClosed, vec!["openai/*".into()]);
    let Some(mut run) = h.begin(info("anthropic/claude"), None) else {
        unreachable!()
    };
    let mut req = ask("hi");
    let _ = run.on_request(&mut req).await;
    assert_eq!(req.messages[0].text_content(), "hi A");
    let Some(mut run) = h.begin(info("openai/gpt"), None) else {
        unreachable!()
    };
    let mut req = ask("hi");
    let _ = run.on_request(&mut req).await;
    assert_eq!(req.messages[0].text_content(), "hi A B");
}

#[tokio::test]
async fn stream_chunks_pass_through_in_reverse_and_can_be_dropped() {
    use futures_util::StreamExt;
    let h = host(OnError::FailClosed, Vec::new());
    let Some(mut run) = h.begin(info("m"), None) else {
        unreachable!()
    };
    let _ = run.on_request(&mut ask("hi")).await;
    let chunks: Vec<crate::chat::StreamItem> = ["x", "drop", "y"]
        .iter()
        .map(|t| {
            serde_json::from_value::<crate::chat::ChatChunk>(
                json!({"choices": [{"index": 0, "delta": {"content": t}}]}),
            )
            .map(|c| Box::new(c.into()))
            .map_err(|e| crate::chat::StreamError::new(e.to_string()))
        })
        .collect();
    let mut o = outcome("");
    o.body = ChatBody::Stream(Box::pin(futures_util::stream::iter(chunks)));
    let out = run.wrap(o).await.unwrap_or_else(|_| unreachable!());
    let ChatBody::Stream(s) = out.body else {
        unreachable!()
    };
    let texts: Vec<String> = s
        .filter_map(|c| async move { c.ok().and_then(|c| c.choices[0].delta.content.clone()) })
        .collect()
        .await;
    assert_eq!(texts, ["xBA", "yBA"]);
}
