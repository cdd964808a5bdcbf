//! The transport-independent message: code, token, options, payload.
//!
//! What differs per transport (UDP's version, type and message ID) lives beside the
//! message in the codec that needs it ([`crate::codec::udp::UdpHeader`]).

use crate::code::Code;
use crate::option::{OptionNumber, Options};
use bytes::Bytes;
use std::fmt;

/// A token: 0–8 bytes, or longer with RFC 8974 extended tokens.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub Bytes);

impl Token {
    /// The empty token.
    pub const EMPTY: Token = Token(Bytes::new());

    /// A token from bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Token {
        Token(bytes.into())
    }
    /// A token holding `value` big-endian with leading zero bytes dropped (0 is empty).
    pub fn from_u64(value: u64) -> Token {
        let be = value.to_be_bytes();
        let skip = (value.leading_zeros() / 8) as usize;
        Token(Bytes::copy_from_slice(&be[skip..]))
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True for the empty token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A CoAP message as every transport carries it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Request method, response code, signaling code or 0.00 Empty.
    pub code: Code,
    /// Token matching responses to requests within one connection or endpoint pair.
    pub token: Token,
    /// Options in wire order.
    pub options: Options,
    /// Payload; empty means no payload marker on the wire.
    pub payload: Bytes,
}

impl Default for Code {
    fn default() -> Code {
        Code::EMPTY
    }
}

impl Message {
    /// A message with `code` and nothing else.
    pub fn new(code: Code) -> Message {
        Message {
            code,
            ..Message::default()
        }
    }
    /// A request of `method` for the path segments of `path` (split at `/`).
    pub fn request(method: Code, path: &str) -> Message {
        let mut m = Message::new(method);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            m.options.push(
                OptionNumber::URI_PATH,
                Bytes::copy_from_slice(seg.as_bytes()),
            );
        }
        m
    }
    /// A response with `code` carrying `payload`.
    pub fn response(code: Code, payload: impl Into<Bytes>) -> Message {
        Message {
            code,
            payload: payload.into(),
            ..Message::default()
        }
    }
    /// Builder: sets the token.
    pub fn with_token(mut self, token: Token) -> Message {
        self.token = token;
        self
    }
    /// Builder: sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Message {
        self.payload = payload.into();
        self
    }
    /// Builder: appends an option.
    pub fn with_option(mut self, number: OptionNumber, value: impl Into<Bytes>) -> Message {
        self.options.push(number, value);
        self
    }
    /// Builder: sets a uint option (replacing earlier instances).
    pub fn with_uint_option(mut self, number: OptionNumber, value: u32) -> Message {
        self.options.set_uint(number, value);
        self
    }
    /// Builder: sets Content-Format.
    pub fn with_content_format(self, format: u16) -> Message {
        self.with_uint_option(OptionNumber::CONTENT_FORMAT, u32::from(format))
    }
    /// The payload as text, invalid UTF-8 replaced.
    pub fn payload_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("code", &self.code).field("token", &self.token);
        if !self.options.is_empty() {
            d.field("options", &self.options);
        }
        if !self.payload.is_empty() {
            if self.payload.len() <= 64 && std::str::from_utf8(&self.payload).is_ok() {
                d.field("payload", &self.payload_text());
            } else {
                d.field("payload_len", &self.payload.len());
            }
        }
        d.finish()
    }
}
