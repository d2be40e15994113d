//! The chat handlers' futures stay small. A future is copied whole each time a layer above wraps
//! it (the handler's span, axum's and hyper's wrappers, the task), so a handler whose future holds
//! the request's stages inline costs every request: the chat handler's future was 52 KB before
//! the pipeline's was boxed (docs/performance.md, eleventh slice), and copying it was about 3 % of
//! the CPU. Each handler now boxes the future of its request once (twelfth slice), so its own
//! future is its arguments and a pointer.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use switchyard::app::AppState;
use switchyard::config::Config;

/// Today's handlers are about 1.1 KB (debug build); one that holds its request's future inline
/// (about 15 KB) trips this.
const MAX_HANDLER_FUTURE: usize = 2 * 1024;

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
                axum::extract::Request::new(Body::empty()),
            )),
        ),
        (
            "anthropic",
            size(&switchyard::api::anthropic::messages(
                s(),
                axum::extract::Request::new(Body::empty()),
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
             the future it awaits"
        );
    }
}

fn size<T>(v: &T) -> usize {
    std::mem::size_of_val(v)
}
