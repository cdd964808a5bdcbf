//! RFC 8323 §3.2 TCP framing: `Len | TKL`, extended length, Code, token, options, payload.
//!
//! Len counts options, payload marker and payload (not the header or token). [`decode`] takes
//! exactly one message; [`StreamDecoder`] takes arbitrary chunks of a byte stream and yields
//! whole messages, rejecting an oversize message from its header, before buffering it.

use super::{
    DecodeError, DecodeLimits, EncodeError, Reader, body_len, put_body, put_token_ext,
    read_message, token_len, token_len_parts,
};
use crate::code::Code;
use crate::message::Message;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Extended length of the Len nibble: (nibble, extension bytes, extension value).
fn len_parts(len: usize) -> (u8, usize, u32) {
    if len < 13 {
        (len as u8, 0, 0)
    } else if len < 269 {
        (13, 1, (len - 13) as u32)
    } else if len < 65805 {
        (14, 2, (len - 269) as u32)
    } else {
        (15, 4, (len - 65805) as u32)
    }
}

/// Reads `Len | TKL` and the length extension; returns (body length, TKL nibble).
fn read_len(r: &mut Reader<'_>) -> Result<(usize, u8), DecodeError> {
    let b0 = r.u8("header")?;
    let (ln, tkl) = (b0 >> 4, b0 & 0x0f);
    let len = match ln {
        15 => {
            let mut v = 0usize;
            for _ in 0..4 {
                v = (v << 8) | usize::from(r.u8("length")?);
            }
            v + 65805
        }
        n => r.ext(n, "length")?,
    };
    Ok((len, tkl))
}

/// The total size of the message at the start of `buf` once enough of its header is there
/// (`Ok(None)` until then). Fails as soon as the header shows the message is malformed or
/// larger than `limits.max_message_size`.
pub fn frame_size(buf: &[u8], limits: &DecodeLimits) -> Result<Option<usize>, DecodeError> {
    // Copy at most the header (≤ 1 + 4 + 1 + 2 bytes) to reuse the Reader on Bytes.
    let head = Bytes::copy_from_slice(&buf[..buf.len().min(8)]);
    let mut r = Reader::new(&head, 0);
    let attempt = (|| {
        let (len, tkl) = read_len(&mut r)?;
        // The body length alone may already exceed the limit: say so before the code byte.
        let at_least = r.pos + 1 + len;
        if at_least > limits.max_message_size {
            return Err(DecodeError::TooLarge {
                size: at_least,
                limit: limits.max_message_size,
            });
        }
        r.u8("header")?;
        let tlen = token_len(&mut r, tkl, limits)?;
        Ok::<usize, DecodeError>(r.pos + tlen + len)
    })();
    match attempt {
        Ok(size) if size > limits.max_message_size => Err(DecodeError::TooLarge {
            size,
            limit: limits.max_message_size,
        }),
        Ok(size) => Ok(Some(size)),
        Err(DecodeError::Truncated(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decodes a buffer that holds exactly one TCP-framed message.
pub fn decode(buf: &Bytes, limits: &DecodeLimits) -> Result<Message, DecodeError> {
    let size = frame_size(buf, limits)?.ok_or(DecodeError::Truncated("header"))?;
    if buf.len() < size {
        return Err(DecodeError::Truncated("message"));
    }
    if buf.len() > size {
        return Err(DecodeError::TrailingBytes(buf.len() - size));
    }
    let mut r = Reader::new(buf, 0);
    let (_, tkl) = read_len(&mut r)?;
    let code = Code(r.u8("header")?);
    read_message(&mut r, code, tkl, limits)
}

/// Encoded size of `m` in TCP framing.
pub fn encoded_len(m: &Message) -> Result<usize, EncodeError> {
    let tk = token_len_parts(&m.token)?;
    let body = body_len(m)?;
    Ok(2 + len_parts(body).1 + tk.1 + m.token.len() + body)
}

/// Appends `m` in TCP framing to `out`.
pub fn encode_into(m: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let tk = token_len_parts(&m.token)?;
    let body = body_len(m)?;
    let (ln, lext, lval) = len_parts(body);
    out.reserve(2 + lext + tk.1 + m.token.len() + body);
    out.put_u8((ln << 4) | tk.0);
    match lext {
        1 => out.put_u8(lval as u8),
        2 => out.put_u16(lval as u16),
        4 => out.put_u32(lval),
        _ => {}
    }
    out.put_u8(m.code.0);
    put_token_ext(out, tk);
    out.put_slice(m.token.as_bytes());
    put_body(out, m);
    Ok(())
}

/// Encodes `m` in TCP framing.
pub fn encode(m: &Message) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode_into(m, &mut out)?;
    Ok(out.freeze())
}

/// Splits whole messages off the front of `buf`; `Ok(None)` when more bytes are needed.
/// Suitable as the body of a `tokio_util` decoder.
pub fn decode_from(
    buf: &mut BytesMut,
    limits: &DecodeLimits,
) -> Result<Option<Message>, DecodeError> {
    match frame_size(buf, limits)? {
        Some(size) if buf.len() >= size => {
            let frame = buf.split_to(size).freeze();
            decode(&frame, limits).map(Some)
        }
        Some(size) => {
            // Grow with the data that arrives, not with what a header announces.
            buf.reserve((size - buf.len()).min(16 * 1024));
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Reassembles TCP-framed messages from arbitrary chunks of a byte stream.
///
/// Memory is bounded: a header announcing more than `max_message_size` fails at once, so the
/// buffer never holds more than one message plus the last chunk pushed.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: BytesMut,
    limits: DecodeLimits,
    failed: bool,
}

impl StreamDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: DecodeLimits) -> StreamDecoder {
        StreamDecoder {
            buf: BytesMut::new(),
            limits,
            failed: false,
        }
    }
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
    /// Changes the limits (a new CSM of ours, or extended tokens switched on).
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.limits = limits;
    }
    /// The next whole message, `Ok(None)` when more bytes are needed. After an error the
    /// stream cannot be resynchronised: every later call returns the same error kind.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Truncated("stream after a format error"));
        }
        let r = decode_from(&mut self.buf, &self.limits);
        if r.is_err() {
            self.failed = true;
            self.buf.clear();
        } else if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // Give back a large buffer once a large message has passed.
            self.buf = BytesMut::new();
        }
        r
    }
    /// Drops buffered bytes (used when the stream ends).
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}
