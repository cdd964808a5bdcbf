//! CoAP over TCP (RFC 8323 §3): a byte stream under the connection machine, which does the
//! framing. Generic over the stream, so TLS (a later transport) reuses it unchanged.

use crate::connection::{FrameIo, FrameReader, FrameWriter, Inbound};
use bytes::{Bytes, BytesMut};
use coapws_proto::connection::ConnectionError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

/// Read size per call; the connection machine buffers partial messages itself.
const READ_CHUNK: usize = 16 * 1024;

/// A byte stream carrying TCP-framed CoAP messages.
pub(crate) struct StreamIo<S> {
    stream: S,
}

impl<S> StreamIo<S> {
    pub(crate) fn new(stream: S) -> StreamIo<S> {
        StreamIo { stream }
    }
}

/// The reading half: chunks of the stream, framed by the connection machine.
pub(crate) struct StreamReader<S> {
    read: ReadHalf<S>,
    buf: BytesMut,
}

/// The writing half.
pub(crate) struct StreamWriter<S> {
    write: WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameIo for StreamIo<S> {
    type Reader = StreamReader<S>;
    type Writer = StreamWriter<S>;
    fn split(self) -> (StreamReader<S>, StreamWriter<S>) {
        let (read, write) = tokio::io::split(self.stream);
        (
            StreamReader {
                read,
                buf: BytesMut::new(),
            },
            StreamWriter { write },
        )
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameReader for StreamReader<S> {
    async fn recv(&mut self) -> Inbound {
        self.buf.reserve(READ_CHUNK);
        // `read_buf` is cancel-safe: nothing is lost if `select!` drops this future.
        match self.read.read_buf(&mut self.buf).await {
            Ok(0) => Inbound::Closed(None),
            Ok(_) => Inbound::Data(self.buf.split().freeze()),
            Err(e) => Inbound::Closed(Some(e.to_string())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameWriter for StreamWriter<S> {
    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), String> {
        // Batch: one write for everything queued.
        let result = if frames.len() == 1 {
            self.write.write_all(&frames[0]).await
        } else {
            let mut all = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for f in &frames {
                all.extend_from_slice(f);
            }
            self.write.write_all(&all).await
        };
        result.map_err(|e| e.to_string())?;
        self.write.flush().await.map_err(|e| e.to_string())
    }

    async fn close(&mut self, _why: &ConnectionError) {
        let _ = self.write.shutdown().await;
    }
}
