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

/// A message on one line as people read it: code, token, options by name with their values
/// decoded (text, numbers, Block as NUM/M/SIZE), and the payload (text when short, else its
/// size). What `Message::summary` gives; `-v` logs use it.
pub struct Summary<'a>(&'a Message);

impl Message {
    /// This message on one line, for logs.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::option::ValueFormat;
        let m = self.0;
        write!(f, "{}", m.code)?;
        if !m.token.is_empty() {
            write!(f, " token {}", m.token)?;
        }
        for (n, v) in m.options.iter() {
            let name = n
                .info()
                .map_or_else(|| format!("Option{}", n.0), |i| i.name.to_owned());
            let text = crate::option::value_text(n, v);
            match n.info().map(|i| i.format) {
                Some(ValueFormat::String) => write!(f, " {name}:{text:?}")?,
                _ if text.is_empty() => write!(f, " {name}")?,
                _ => write!(f, " {name}:{text}")?,
            }
        }
        if !m.payload.is_empty() {
            match std::str::from_utf8(&m.payload) {
                Ok(t) if t.len() <= 64 => write!(f, " payload {t:?}")?,
                _ => write!(f, " payload {} bytes", m.payload.len())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use crate::option::BlockValue;

    #[test]
    fn a_message_on_one_line() {
        let m = Message::request(Code::GET, "/sensors/temp")
            .with_token(Token::new(vec![0x1a]))
            .with_uint_option(OptionNumber::OBSERVE, 0)
            .with_option(
                OptionNumber::BLOCK2,
                BlockValue {
                    num: 3,
                    more: true,
                    szx: 6,
                }
                .encode(),
            )
            .with_option(OptionNumber::ETAG, vec![0xab, 0xcd]);
        // Options in wire order: ETag (4), Observe (6), Uri-Path (11), Block2 (23).
        assert_eq!(
            m.summary().to_string(),
            "0.01 GET token 1a ETag:0xabcd Observe:0 Uri-Path:\"sensors\" Uri-Path:\"temp\" Block2:3/1/1024"
        );
        let r = Message::response(Code::CONTENT, "21.5");
        assert_eq!(r.summary().to_string(), "2.05 Content payload \"21.5\"");
    }
}
