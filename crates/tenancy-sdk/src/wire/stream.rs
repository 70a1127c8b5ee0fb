//! The I/O half of the splice: an `AsyncRead + AsyncWrite` wrapper that runs the socket's
//! bytes through the [`Machine`](super::machine::Machine).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framer::{FrameError, Framer};
use super::machine::Reader;
use super::Splice;

/// The socket of a tenant connection: inserts queued openings, filters their replies.
#[derive(Debug)]
pub(crate) struct SpliceStream<S> {
    inner: S,
    splice: Arc<Splice>,
    /// Bytes accepted from tokio-postgres (with an opening in front) not yet on the socket.
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already on the socket.
    wpos: usize,
    /// Bytes written so far, which may end mid-message.
    out: Framer,
    /// Bytes read so far.
    inn: Reader,
}

impl<S> SpliceStream<S> {
    pub(super) fn new(inner: S, splice: Arc<Splice>) -> Self {
        SpliceStream {
            inner,
            splice,
            wbuf: Vec::new(),
            wpos: 0,
            out: Framer::default(),
            inn: Reader::default(),
        }
    }
}

fn invalid(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncWrite + Unpin> SpliceStream<S> {
    /// Writes `wbuf` to the socket until it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SpliceStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut s = this.splice.lock();
        if !s.armed {
            drop(s);
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if s.write(&mut this.out, buf, &mut this.wbuf)
            .map_err(invalid)?
        {
            drop(s);
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        drop(s);
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        let c = this.out.count(&buf[..n]).map_err(invalid)?;
        if c.syncs > 0 || c.copy_fail.is_some() {
            this.splice.lock().wrote(c);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SpliceStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                return Poll::Ready(Ok(())); // end of stream
            }
            let kept = this
                .splice
                .lock()
                .read(&mut this.inn, &mut buf.filled_mut()[before..after])
                .map_err(invalid)?;
            buf.set_filled(before + kept);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
            // Everything read was an inserted statement's reply: read on.
        }
    }
}
