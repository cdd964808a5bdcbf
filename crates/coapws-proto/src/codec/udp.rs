//! RFC 7252 §3 datagram framing: `Ver | T | TKL`, Code, Message ID, token, options, payload.

use super::{
    DecodeError, DecodeLimits, EncodeError, Reader, body_len, put_body, put_token_ext,
    read_message, token_len_parts,
};
use crate::code::Code;
use crate::message::Message;
use bytes::{BufMut, Bytes, BytesMut};

/// The message-layer type of a datagram (RFC 7252 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Confirmable: retransmitted until acknowledged.
    Confirmable = 0,
    /// Non-confirmable.
    NonConfirmable = 1,
    /// Acknowledgement.
    Acknowledgement = 2,
    /// Reset.
    Reset = 3,
}

impl MessageType {
    fn from_bits(bits: u8) -> MessageType {
        match bits & 3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }
}

/// The UDP-only header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpHeader {
    /// CON, NON, ACK or RST.
    pub mtype: MessageType,
    /// Message ID for deduplication and ACK matching.
    pub message_id: u16,
}

/// The type, Message ID and token of a datagram from its first bytes, without decoding the
/// rest: enough to answer a datagram too large to take. `None` for a bad version or a token
/// longer than 8 bytes (or cut short).
pub fn peek_header(buf: &[u8]) -> Option<(MessageType, u16, crate::message::Token)> {
    let b0 = *buf.first()?;
    if b0 >> 6 != 1 {
        return None;
    }
    let tkl = usize::from(b0 & 0x0f);
    if tkl > 8 || buf.len() < 4 + tkl {
        return None;
    }
    let mid = u16::from_be_bytes([buf[2], buf[3]]);
    let token = crate::message::Token::new(Bytes::copy_from_slice(&buf[4..4 + tkl]));
    Some((MessageType::from_bits(b0 >> 4), mid, token))
}

/// Decodes one datagram.
pub fn decode(buf: &Bytes, limits: &DecodeLimits) -> Result<(UdpHeader, Message), DecodeError> {
    if buf.len() > limits.max_message_size {
        return Err(DecodeError::TooLarge {
            size: buf.len(),
            limit: limits.max_message_size,
        });
    }
    let mut r = Reader::new(buf, 0);
    let b0 = r.u8("header")?;
    let version = b0 >> 6;
    if version != 1 {
        return Err(DecodeError::BadVersion(version));
    }
    let mtype = MessageType::from_bits(b0 >> 4);
    let tkl = b0 & 0x0f;
    let code = Code(r.u8("header")?);
    let hi = r.u8("header")?;
    let lo = r.u8("header")?;
    let header = UdpHeader {
        mtype,
        message_id: u16::from_be_bytes([hi, lo]),
    };
    if code == Code::EMPTY {
        // RFC 7252 §4.1: TKL 0 and nothing after the Message ID.
        if tkl != 0 || r.remaining() != 0 {
            return Err(DecodeError::EmptyNotEmpty);
        }
        return Ok((header, Message::new(code)));
    }
    Ok((header, read_message(&mut r, code, tkl, limits)?))
}

/// Encoded size of `m` in UDP framing.
pub fn encoded_len(m: &Message) -> Result<usize, EncodeError> {
    let tk = token_len_parts(&m.token)?;
    Ok(4 + tk.1 + m.token.len() + body_len(m)?)
}

/// Appends `m` in UDP framing to `out`.
pub fn encode_into(header: &UdpHeader, m: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    let tk = token_len_parts(&m.token)?;
    let len = encoded_len(m)?;
    out.reserve(len);
    out.put_u8(0x40 | ((header.mtype as u8) << 4) | tk.0);
    out.put_u8(m.code.0);
    out.put_u16(header.message_id);
    put_token_ext(out, tk);
    out.put_slice(m.token.as_bytes());
    put_body(out, m);
    Ok(())
}

/// Encodes `m` in UDP framing.
pub fn encode(header: &UdpHeader, m: &Message) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode_into(header, m, &mut out)?;
    Ok(out.freeze())
}
