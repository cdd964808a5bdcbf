//! CoAP over TCP (RFC 8323 §3): a byte stream under the connection machine, which does the
//! framing. Generic over the stream, so TLS (a later transport) reuses it unchanged.

use crate::connection::{FrameIo, Inbound};
use bytes::{Bytes, BytesMut};
use coapws_proto::connection::ConnectionError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    async fn recv(&mut self) -> Inbound {
        self.buf.reserve(READ_CHUNK);
        // `read_buf` is cancel-safe: nothing is lost if `select!` drops this future.
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Inbound::Closed(None),
            Ok(_) => Inbound::Data(self.buf.split().freeze()),
            Err(e) => Inbound::Closed(Some(e.to_string())),
        }
    }

    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), String> {
        // Batch: one write for everything queued.
        let result = if frames.len() == 1 {
            self.stream.write_all(&frames[0]).await
        } else {
            let mut all = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for f in &frames {
                all.extend_from_slice(f);
            }
            self.stream.write_all(&all).await
        };
        result.map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())
    }

    async fn close(&mut self, _why: &ConnectionError) {
        let _ = self.stream.shutdown().await;
    }
}
