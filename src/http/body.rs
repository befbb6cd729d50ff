//! The response body of every route: a whole text, or a stream (server-sent events).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A stream body: yields chunks until it ends; never fails (a stream that cannot go on ends).
pub type Stream = Pin<Box<dyn http_body::Body<Data = Bytes, Error = Infallible> + Send>>;

/// A response body.
pub struct Body(Kind);

enum Kind {
    /// Sent with `Content-Length`.
    Full(Option<Bytes>),
    /// Sent chunked, as long as the stream yields.
    Stream(Stream),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body(Kind::Full(Some(bytes.into())))
    }

    pub fn empty() -> Body {
        Body(Kind::Full(None))
    }

    pub fn stream(stream: Stream) -> Body {
        Body(Kind::Stream(stream))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(stream) => stream.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(stream) => stream.size_hint(),
        }
    }
}
