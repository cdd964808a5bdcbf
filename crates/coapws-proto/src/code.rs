//! Message codes (RFC 7252 §3, §12.1; RFC 8323 §5 for the 7.xx signaling class).
//!
//! A [`Code`] is an open newtype over the code byte, so codes this crate does not name
//! still round-trip; constants name the registered ones.

use std::fmt;

/// A CoAP code: three bits of class, five bits of detail, written `c.dd`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

/// What a code means in a message, by its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeKind {
    /// 0.00: the empty message.
    Empty,
    /// 0.01–0.31: a request method.
    Request,
    /// 2.xx, 4.xx and 5.xx: a response.
    Response,
    /// 7.xx: a signaling message (reliable transports only).
    Signaling,
    /// Classes 1, 3 and 6: reserved.
    Reserved,
}

impl Code {
    /// Builds a code from class (0–7) and detail (0–31).
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x07) << 5) | (detail & 0x1f))
    }
    /// The class, 0–7.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }
    /// The detail, 0–31.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }
    /// Which kind of message this code makes.
    pub const fn kind(self) -> CodeKind {
        match self.class() {
            0 if self.0 == 0 => CodeKind::Empty,
            0 => CodeKind::Request,
            2 | 4 | 5 => CodeKind::Response,
            7 => CodeKind::Signaling,
            _ => CodeKind::Reserved,
        }
    }
    /// True for 0.01–0.31.
    pub const fn is_request(self) -> bool {
        matches!(self.kind(), CodeKind::Request)
    }
    /// True for 2.xx, 4.xx, 5.xx.
    pub const fn is_response(self) -> bool {
        matches!(self.kind(), CodeKind::Response)
    }
    /// True for 7.xx.
    pub const fn is_signaling(self) -> bool {
        matches!(self.kind(), CodeKind::Signaling)
    }
    /// True when a response of this code is suppressed by a No-Response option of value
    /// `bits` (RFC 7967 §2: 2 suppresses 2.xx, 8 4.xx, 16 5.xx). A 2.31 Continue belongs to a
    /// Block1 upload, not to the response: never suppressed.
    pub const fn is_suppressed_by(self, bits: u8) -> bool {
        if self.0 == Code::CONTINUE.0 {
            return false;
        }
        match self.class() {
            2 => bits & 2 != 0,
            4 => bits & 8 != 0,
            5 => bits & 16 != 0,
            _ => false,
        }
    }
    /// True for 2.xx.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }
    /// True for 4.xx.
    pub const fn is_client_error(self) -> bool {
        self.class() == 4
    }
    /// True for 5.xx.
    pub const fn is_server_error(self) -> bool {
        self.class() == 5
    }

    /// The registered name of this code, if it has one.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(c, _)| *c == self).map(|(_, n)| *n)
    }

    /// Parses a method name (case-insensitive): GET, POST, PUT, DELETE, FETCH, PATCH, iPATCH.
    pub fn from_method_name(name: &str) -> Option<Code> {
        [
            Code::GET,
            Code::POST,
            Code::PUT,
            Code::DELETE,
            Code::FETCH,
            Code::PATCH,
            Code::IPATCH,
        ]
        .into_iter()
        .find(|c| c.name().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = ($c:literal, $d:literal, $text:literal);)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code::new($c, $d);)*
        }
        const NAMES: &[(Code, &str)] = &[$((Code::$name, $text),)*];
    };
}

codes! {
    /// 0.00 Empty.
    EMPTY = (0, 0, "Empty");
    /// 0.01 GET.
    GET = (0, 1, "GET");
    /// 0.02 POST.
    POST = (0, 2, "POST");
    /// 0.03 PUT.
    PUT = (0, 3, "PUT");
    /// 0.04 DELETE.
    DELETE = (0, 4, "DELETE");
    /// 0.05 FETCH (RFC 8132).
    FETCH = (0, 5, "FETCH");
    /// 0.06 PATCH (RFC 8132).
    PATCH = (0, 6, "PATCH");
    /// 0.07 iPATCH (RFC 8132).
    IPATCH = (0, 7, "iPATCH");
    /// 2.01 Created.
    CREATED = (2, 1, "Created");
    /// 2.02 Deleted.
    DELETED = (2, 2, "Deleted");
    /// 2.03 Valid.
    VALID = (2, 3, "Valid");
    /// 2.04 Changed.
    CHANGED = (2, 4, "Changed");
    /// 2.05 Content.
    CONTENT = (2, 5, "Content");
    /// 2.31 Continue (RFC 7959).
    CONTINUE = (2, 31, "Continue");
    /// 4.00 Bad Request.
    BAD_REQUEST = (4, 0, "Bad Request");
    /// 4.01 Unauthorized.
    UNAUTHORIZED = (4, 1, "Unauthorized");
    /// 4.02 Bad Option.
    BAD_OPTION = (4, 2, "Bad Option");
    /// 4.03 Forbidden.
    FORBIDDEN = (4, 3, "Forbidden");
    /// 4.04 Not Found.
    NOT_FOUND = (4, 4, "Not Found");
    /// 4.05 Method Not Allowed.
    METHOD_NOT_ALLOWED = (4, 5, "Method Not Allowed");
    /// 4.06 Not Acceptable.
    NOT_ACCEPTABLE = (4, 6, "Not Acceptable");
    /// 4.08 Request Entity Incomplete (RFC 7959).
    REQUEST_ENTITY_INCOMPLETE = (4, 8, "Request Entity Incomplete");
    /// 4.09 Conflict (RFC 8132).
    CONFLICT = (4, 9, "Conflict");
    /// 4.12 Precondition Failed.
    PRECONDITION_FAILED = (4, 12, "Precondition Failed");
    /// 4.13 Request Entity Too Large.
    REQUEST_ENTITY_TOO_LARGE = (4, 13, "Request Entity Too Large");
    /// 4.15 Unsupported Content-Format.
    UNSUPPORTED_CONTENT_FORMAT = (4, 15, "Unsupported Content-Format");
    /// 4.22 Unprocessable Entity (RFC 8132).
    UNPROCESSABLE_ENTITY = (4, 22, "Unprocessable Entity");
    /// 4.29 Too Many Requests (RFC 8516).
    TOO_MANY_REQUESTS = (4, 29, "Too Many Requests");
    /// 5.00 Internal Server Error.
    INTERNAL_SERVER_ERROR = (5, 0, "Internal Server Error");
    /// 5.01 Not Implemented.
    NOT_IMPLEMENTED = (5, 1, "Not Implemented");
    /// 5.02 Bad Gateway.
    BAD_GATEWAY = (5, 2, "Bad Gateway");
    /// 5.03 Service Unavailable.
    SERVICE_UNAVAILABLE = (5, 3, "Service Unavailable");
    /// 5.04 Gateway Timeout.
    GATEWAY_TIMEOUT = (5, 4, "Gateway Timeout");
    /// 5.05 Proxying Not Supported.
    PROXYING_NOT_SUPPORTED = (5, 5, "Proxying Not Supported");
    /// 5.08 Hop Limit Reached (RFC 8768).
    HOP_LIMIT_REACHED = (5, 8, "Hop Limit Reached");
    /// 7.01 CSM (RFC 8323 §5.3).
    CSM = (7, 1, "CSM");
    /// 7.02 Ping (RFC 8323 §5.4).
    PING = (7, 2, "Ping");
    /// 7.03 Pong (RFC 8323 §5.4).
    PONG = (7, 3, "Pong");
    /// 7.04 Release (RFC 8323 §5.5).
    RELEASE = (7, 4, "Release");
    /// 7.05 Abort (RFC 8323 §5.6).
    ABORT = (7, 5, "Abort");
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())?;
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_response_bits_suppress_their_classes_but_never_continue() {
        assert!(Code::CONTENT.is_suppressed_by(2));
        assert!(!Code::CONTENT.is_suppressed_by(8 | 16));
        assert!(Code::NOT_FOUND.is_suppressed_by(8));
        assert!(Code::INTERNAL_SERVER_ERROR.is_suppressed_by(16));
        assert!(!Code::CONTINUE.is_suppressed_by(2 | 8 | 16));
        assert!(!Code::NOT_FOUND.is_suppressed_by(0));
    }

    #[test]
    fn class_detail_and_display() {
        assert_eq!(Code::CONTENT.0, 0x45);
        assert_eq!(Code::CSM.0, 0xe1);
        assert_eq!(Code::ABORT.0, 0xe5);
        assert_eq!(Code::CONTENT.to_string(), "2.05 Content");
        assert_eq!(Code(0x3f).to_string(), "1.31");
        assert_eq!(Code(0x3f).kind(), CodeKind::Reserved);
        assert_eq!(Code::EMPTY.kind(), CodeKind::Empty);
        assert!(Code::IPATCH.is_request());
        assert_eq!(Code::from_method_name("ipatch"), Some(Code::IPATCH));
        assert_eq!(Code::from_method_name("BREW"), None);
    }
}
