//! CoAP over TCP (RFC 8323 §3): a byte stream under the connection machine, which does the
//! framing. Generic over the stream, so TLS (a later transport) reuses it unchanged.

use crate::connection::{FrameIo, Inbound};
use bytes::{Buf, Bytes, BytesMut};
use coapws_proto::connection::ConnectionError;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Read size per call; the connection machine buffers partial messages itself.
const READ_CHUNK: usize = 16 * 1024;

/// A byte stream carrying TCP-framed CoAP messages.
pub(crate) struct StreamIo<S> {
    stream: S,
    buf: BytesMut,
}

impl<S> StreamIo<S> {
    pub(crate) fn new(stream: S) -> StreamIo<S> {
        StreamIo {
            stream,
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameIo for StreamIo<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        self.buf.reserve(READ_CHUNK);
        // `read_buf` keeps nothing between polls: a fresh one per poll loses nothing.
        let read = self.stream.read_buf(&mut self.buf);
        tokio::pin!(read);
        Poll::Ready(match ready!(read.poll(cx)) {
            Ok(0) => Inbound::Closed(None),
            Ok(_) => Inbound::Data(self.buf.split().freeze()),
            Err(e) => Inbound::Closed(Some(e.to_string())),
        })
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Bytes>,
    ) -> Poll<Result<(), String>> {
        // Batch: one write for everything queued.
        if frames.len() > 1 {
            let mut all = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for f in frames.drain(..) {
                all.extend_from_slice(&f);
            }
            frames.push_back(all.freeze());
        }
        let mut stream = Pin::new(&mut self.stream);
        while let Some(f) = frames.front_mut() {
            let n = ready!(stream.as_mut().poll_write(cx, f)).map_err(|e| e.to_string())?;
            if n == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).to_string()
                ));
            }
            f.advance(n);
            if f.is_empty() {
                frames.pop_front();
            }
        }
        stream.poll_flush(cx).map_err(|e| e.to_string())
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _why: &ConnectionError) -> Poll<()> {
        Pin::new(&mut self.stream).poll_shutdown(cx).map(|_| ())
    }
}
