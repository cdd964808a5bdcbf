//! RFC 8323 §4.2 WebSocket framing: `Len=0 | TKL`, Code, token, options, payload.
//!
//! One CoAP message per WebSocket message; the WebSocket layer delimits it, so the Len
//! nibble must be 0.

use super::{
    DecodeError, DecodeLimits, EncodeError, Reader, body_len, put_body, put_token_ext,
    read_message, token_len_parts,
};
use crate::code::Code;
use crate::message::Message;
use bytes::{BufMut, Bytes, BytesMut};

/// Decodes the payload of one binary WebSocket message.
pub fn decode(buf: &Bytes, limits: &DecodeLimits) -> Result<Message, DecodeError> {
    if buf.len() > limits.max_message_size {
        return Err(DecodeError::TooLarge {
            size: buf.len(),
            limit: limits.max_message_size,
        });
    }
    let mut r = Reader::new(buf, 0);
    let b0 = r.u8("header")?;
    if b0 >> 4 != 0 {
        return Err(DecodeError::NonZeroLen(b0 >> 4));
    }
    let code = Code(r.u8("header")?);
    read_message(&mut r, code, b0 & 0x0f, limits)
}

/// Encoded size of `m` in WebSocket framing.
pub fn encoded_len(m: &Message) -> Result<usize, EncodeError> {
    let tk = token_len_parts(&m.token)?;
    Ok(2 + tk.1 + m.token.len() + body_len(m)?)
}

/// Appends `m` in WebSocket framing to `out`.
pub fn encode_into(m: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let tk = token_len_parts(&m.token)?;
    out.reserve(encoded_len(m)?);
    out.put_u8(tk.0);
    out.put_u8(m.code.0);
    put_token_ext(out, tk);
    out.put_slice(m.token.as_bytes());
    put_body(out, m);
    Ok(())
}

/// Encodes `m` in WebSocket framing.
pub fn encode(m: &Message) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode_into(m, &mut out)?;
    Ok(out.freeze())
}
