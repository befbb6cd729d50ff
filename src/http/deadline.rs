//! A socket whose writes must make progress: a peer that stops reading (a stalled browser, a
//! scraper that went away without a FIN) fails the connection after [`super::WRITE_TIMEOUT`]
//! instead of holding its buffers and its connection slot for ever. hyper has header-read
//! timeouts but none for writes; this is the other half.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with a deadline on every write, flush and shutdown that cannot complete at once.
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
    /// Started when a write first returns `Pending`; cleared when one completes.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, limit: Duration) -> Deadline<S> {
        Deadline {
            inner,
            limit,
            timer: None,
        }
    }

    /// `result` of a write-side poll, with the deadline applied to `Pending`.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer took nothing for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing: the write fails after the limit (paused time jumps there).
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_after_the_limit() {
        let (_peer, ours) = tokio::io::duplex(16);
        let mut stream = Deadline::new(ours, Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let error = stream.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    /// A slow reader that keeps taking bytes is never cut off, however long the whole write.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_makes_progress_is_served() {
        use tokio::io::AsyncReadExt;
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut stream = Deadline::new(ours, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match peer.read(&mut chunk).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        stream.write_all(&[7u8; 160]).await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), vec![7u8; 160]);
    }
}
