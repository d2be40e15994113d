//! A response body that holds a value (a guard) until the body ends or is dropped: how the edge
//! learns that an answer, streams included, is over.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::{Frame, SizeHint};

/// `inner`, holding `held` until it is dropped.
pub struct Holding<G> {
    inner: Body,
    _held: G,
}

impl<G> Holding<G> {
    /// Wraps `inner`.
    pub fn new(inner: Body, held: G) -> Self {
        Self { inner, _held: held }
    }
}

impl<G: Unpin> hyper::body::Body for Holding<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
