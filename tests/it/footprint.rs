//! The request path's futures stay small. A future is copied whole each time a layer above wraps
//! it (the handler's span, axum's and hyper's wrappers, the task), so a stage whose future grows
//! by kilobytes costs every request: the chat handler's future was 52 KB before the pipeline's
//! was boxed (docs/performance.md, eleventh slice), and copying it was about 3 % of the CPU.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use switchyard::app::AppState;
use switchyard::config::Config;

/// Today's handlers are about 4 KB; a stage that adds kilobytes inline trips this.
const MAX_HANDLER_FUTURE: usize = 8 * 1024;

#[tokio::test]
async fn the_chat_handlers_futures_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::parse("", &|_| None).unwrap();
    cfg.cache.enabled = false;
    cfg.server.data_dir = dir.path().to_owned();
    let state = AppState::new(cfg).await.unwrap();
    let s = || State(state.clone());
    let sizes = [
        (
            "openai",
            size(&switchyard::api::openai::chat_completions(
                s(),
                HeaderMap::new(),
                Body::empty(),
            )),
        ),
        (
            "anthropic",
            size(&switchyard::api::anthropic::messages(
                s(),
                HeaderMap::new(),
                Body::empty(),
            )),
        ),
        (
            "responses",
            size(&switchyard::api::responses::create(
                s(),
                HeaderMap::new(),
                Body::empty(),
            )),
        ),
        (
            "genai",
            size(&switchyard::api::genai::generate(
                s(),
                Path("m:generateContent".to_owned()),
                RawQuery(None),
                HeaderMap::new(),
                Body::empty(),
            )),
        ),
    ];
    for (name, bytes) in sizes {
        eprintln!("{name} handler future: {bytes} bytes");
        assert!(
            bytes <= MAX_HANDLER_FUTURE,
            "the {name} chat handler's future is {bytes} bytes (at most {MAX_HANDLER_FUTURE}): box \
             the stage that grew it"
        );
    }
}

fn size<T>(v: &T) -> usize {
    std::mem::size_of_val(v)
}
