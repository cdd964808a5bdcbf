//! Wire codecs: RFC 7252 UDP ([`udp`]), RFC 8323 TCP ([`tcp`]) and RFC 8323 WebSocket ([`ws`]).
//!
//! The three framings share the token-length and option encoding, which live here. Decoders
//! take [`Bytes`] and hand out slices of it (no copies of tokens, option values or payload).
//! They are strict: every malformed input is rejected with a [`DecodeError`] naming the fault.
//!
//! | malformed input | error |
//! |---|---|
//! | message ends inside the header, token, an option or an extended length | [`DecodeError::Truncated`] |
//! | UDP version other than 1 | [`DecodeError::BadVersion`] |
//! | WebSocket Len nibble other than 0 | [`DecodeError::NonZeroLen`] |
//! | TKL 9–15 without extended tokens; TKL 15 with them (RFC 8974) | [`DecodeError::ReservedTokenLength`] |
//! | extended token longer than the configured limit | [`DecodeError::TokenTooLong`] |
//! | option delta or length nibble 15 outside the 0xFF payload marker | [`DecodeError::OptionNibble15`] |
//! | option number above 65535 | [`DecodeError::OptionNumberOverflow`] |
//! | payload marker followed by no payload | [`DecodeError::EmptyPayload`] |
//! | message larger than the given limit (checked from the header, before buffering) | [`DecodeError::TooLarge`] |
//! | UDP Empty (0.00) message with a token, options or payload (RFC 7252 §4.1) | [`DecodeError::EmptyNotEmpty`] |
//! | TCP: bytes after the message in a buffer meant to hold exactly one | [`DecodeError::TrailingBytes`] |

pub mod tcp;
pub mod udp;
pub mod ws;

use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::{OptionNumber, Options};
use bytes::{BufMut, Bytes, BytesMut};

/// Bounds a decoder enforces on untrusted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest whole message accepted, in bytes (header included).
    pub max_message_size: usize,
    /// Longest token accepted. Up to 8 means RFC 8974 extended tokens are off, and TKL 9–15
    /// is a format error; above 8 allows extended tokens up to this length (at most 65804).
    pub max_token_len: usize,
}

impl DecodeLimits {
    /// Limits with the given maximum message size and 8-byte tokens.
    pub const fn with_max_message_size(max_message_size: usize) -> DecodeLimits {
        DecodeLimits {
            max_message_size,
            max_token_len: 8,
        }
    }
}

impl Default for DecodeLimits {
    /// 1 MiB messages, classic 8-byte tokens.
    fn default() -> DecodeLimits {
        DecodeLimits::with_max_message_size(1 << 20)
    }
}

/// Why bytes are not a valid message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside the named part of the message.
    #[error("message truncated in {0}")]
    Truncated(&'static str),
    /// UDP version field other than 1.
    #[error("unsupported CoAP version {0}")]
    BadVersion(u8),
    /// WebSocket framing with a Len nibble other than 0 (RFC 8323 §4.2).
    #[error("Len nibble {0} where WebSocket framing requires 0")]
    NonZeroLen(u8),
    /// A TKL value that is reserved here: 9–15 without extended tokens, 15 with them.
    #[error("reserved token length nibble {0}")]
    ReservedTokenLength(u8),
    /// An extended token longer than the configured limit.
    #[error("token of {len} bytes exceeds the limit of {limit}")]
    TokenTooLong {
        /// Length the message declared.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// An option delta or length nibble of 15 outside the payload marker (RFC 7252 §3.1).
    #[error("option {0} nibble 15 is reserved")]
    OptionNibble15(&'static str),
    /// Option deltas sum above 65535.
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    /// A payload marker with nothing after it (RFC 7252 §3).
    #[error("payload marker without payload")]
    EmptyPayload,
    /// A message larger than allowed.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size the message has or declares.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A UDP Empty message carrying a token, options or payload.
    #[error("Empty message with content")]
    EmptyNotEmpty,
    /// Bytes after the end of a length-delimited message.
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The token is longer than any framing can carry (65804 bytes).
    #[error("token of {0} bytes is too long to encode")]
    TokenTooLong(usize),
    /// An option value is longer than the option format can carry (65804 bytes).
    #[error("option {number:?} value of {len} bytes is too long to encode")]
    OptionTooLong {
        /// The option.
        number: OptionNumber,
        /// Its value length.
        len: usize,
    },
}

/// Longest token or option value the extended length forms can express.
pub const MAX_EXTENDED_LEN: usize = 65535 + 269;

/// Splits a length into its nibble and extension bytes (shared by TKL, option delta and length).
/// Returns (nibble, extension length in bytes, extension value).
fn split_len(len: usize) -> (u8, usize, u32) {
    if len < 13 {
        (len as u8, 0, 0)
    } else if len < 269 {
        (13, 1, (len - 13) as u32)
    } else {
        (14, 2, (len - 269) as u32)
    }
}

fn put_ext(out: &mut BytesMut, ext_len: usize, value: u32) {
    match ext_len {
        1 => out.put_u8(value as u8),
        2 => out.put_u16(value as u16),
        _ => {}
    }
}

/// Encoded token-length: nibble, extension size, extension value.
pub(crate) fn token_len_parts(token: &Token) -> Result<(u8, usize, u32), EncodeError> {
    if token.len() > MAX_EXTENDED_LEN {
        return Err(EncodeError::TokenTooLong(token.len()));
    }
    Ok(split_len(token.len()))
}

pub(crate) fn put_token_ext(out: &mut BytesMut, parts: (u8, usize, u32)) {
    put_ext(out, parts.1, parts.2);
}

/// A cursor over untrusted input.
pub(crate) struct Reader<'a> {
    pub buf: &'a Bytes,
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes, pos: usize) -> Reader<'a> {
        Reader { buf, pos }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let s = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(s)
    }
    /// Reads the extension for a length nibble (13 → 1 byte, 14 → 2 bytes).
    pub fn ext(&mut self, nibble: u8, what: &'static str) -> Result<usize, DecodeError> {
        Ok(match nibble {
            13 => usize::from(self.u8(what)?) + 13,
            14 => {
                let hi = self.u8(what)?;
                let lo = self.u8(what)?;
                usize::from(u16::from_be_bytes([hi, lo])) + 269
            }
            n => usize::from(n),
        })
    }
}

/// Checks a TKL nibble against the limits; returns the token length once any extension is read.
pub(crate) fn read_token(
    r: &mut Reader<'_>,
    tkl: u8,
    limits: &DecodeLimits,
) -> Result<Token, DecodeError> {
    let len = token_len(r, tkl, limits)?;
    Ok(Token(r.take(len, "token")?))
}

pub(crate) fn token_len(
    r: &mut Reader<'_>,
    tkl: u8,
    limits: &DecodeLimits,
) -> Result<usize, DecodeError> {
    if tkl == 15 || (tkl > 8 && limits.max_token_len <= 8) {
        return Err(DecodeError::ReservedTokenLength(tkl));
    }
    let len = r.ext(tkl, "token length")?;
    if len > limits.max_token_len.max(8) {
        return Err(DecodeError::TokenTooLong {
            len,
            limit: limits.max_token_len,
        });
    }
    Ok(len)
}

/// Decodes token, options and payload (everything after the code byte and, for TCP, the
/// length) into a message.
pub(crate) fn read_message(
    r: &mut Reader<'_>,
    code: Code,
    tkl: u8,
    limits: &DecodeLimits,
) -> Result<Message, DecodeError> {
    let token = read_token(r, tkl, limits)?;
    let (options, payload) = read_body(r)?;
    Ok(Message {
        code,
        token,
        options,
        payload,
    })
}

/// Decodes options and payload from `r` to the end of its buffer.
pub(crate) fn read_body(r: &mut Reader<'_>) -> Result<(Options, Bytes), DecodeError> {
    let mut options = Options::new();
    let mut number: u32 = 0;
    while r.remaining() > 0 {
        let b = r.u8("option header")?;
        if b == 0xff {
            if r.remaining() == 0 {
                return Err(DecodeError::EmptyPayload);
            }
            let payload = r.take(r.remaining(), "payload")?;
            return Ok((options, payload));
        }
        let (dn, ln) = (b >> 4, b & 0x0f);
        if dn == 15 {
            return Err(DecodeError::OptionNibble15("delta"));
        }
        if ln == 15 {
            return Err(DecodeError::OptionNibble15("length"));
        }
        let delta = r.ext(dn, "option delta")?;
        let len = r.ext(ln, "option length")?;
        number += delta as u32;
        if number > u32::from(u16::MAX) {
            return Err(DecodeError::OptionNumberOverflow);
        }
        let value = r.take(len, "option value")?;
        options.push_ordered(OptionNumber(number as u16), value);
    }
    Ok((options, Bytes::new()))
}

/// Encoded size of options, payload marker and payload.
pub(crate) fn body_len(m: &Message) -> Result<usize, EncodeError> {
    let mut len = 0;
    let mut prev = 0u16;
    for (n, v) in m.options.iter() {
        if v.len() > MAX_EXTENDED_LEN {
            return Err(EncodeError::OptionTooLong {
                number: n,
                len: v.len(),
            });
        }
        let (_, dext, _) = split_len(usize::from(n.0 - prev));
        let (_, lext, _) = split_len(v.len());
        len += 1 + dext + lext + v.len();
        prev = n.0;
    }
    if !m.payload.is_empty() {
        len += 1 + m.payload.len();
    }
    Ok(len)
}

/// Writes options, payload marker and payload. [`body_len`] must have succeeded first.
pub(crate) fn put_body(out: &mut BytesMut, m: &Message) {
    let mut prev = 0u16;
    for (n, v) in m.options.iter() {
        let (dn, dext, dval) = split_len(usize::from(n.0 - prev));
        let (ln, lext, lval) = split_len(v.len());
        out.put_u8((dn << 4) | ln);
        put_ext(out, dext, dval);
        put_ext(out, lext, lval);
        out.put_slice(v);
        prev = n.0;
    }
    if !m.payload.is_empty() {
        out.put_u8(0xff);
        out.put_slice(&m.payload);
    }
}
