//! Why the resource directory refused a request, and the response that says so.

use coapws_proto::code::Code;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;

/// A request the resource directory refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RdError {
    /// Malformed request: a missing or invalid parameter or payload (4.00).
    #[error("{0}")]
    BadRequest(String),
    /// The payload, or the number of links in it, is over a limit (4.13). `size1` is the
    /// largest payload accepted, sent in Size1 (RFC 7959 §4) when it is the size that was over.
    #[error("{what} over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// The payload size limit, when that is what was exceeded.
        size1: Option<usize>,
    },
    /// A payload that is not `application/link-format` (4.15).
    #[error("registrations are application/link-format (40), not {0}")]
    UnsupportedFormat(ContentFormat),
    /// The directory holds as many registrations as it may (5.03, try again after `retry`
    /// seconds).
    #[error("the resource directory is full")]
    Full {
        /// Seconds to wait, sent as Max-Age.
        retry: u32,
    },
    /// No such registration (4.04): unknown id, expired or removed.
    #[error("no such registration")]
    NotFound,
}

impl RdError {
    /// A malformed request, with a diagnostic.
    pub(crate) fn bad(text: impl Into<String>) -> RdError {
        RdError::BadRequest(text.into())
    }
    /// The response code.
    pub fn code(&self) -> Code {
        match self {
            RdError::BadRequest(_) => Code::BAD_REQUEST,
            RdError::TooLarge { .. } => Code::REQUEST_ENTITY_TOO_LARGE,
            RdError::UnsupportedFormat(_) => Code::UNSUPPORTED_CONTENT_FORMAT,
            RdError::Full { .. } => Code::SERVICE_UNAVAILABLE,
            RdError::NotFound => Code::NOT_FOUND,
        }
    }
    /// The response: the code, a plain-text diagnostic, and Size1 or Max-Age where they apply.
    pub fn to_message(&self) -> Message {
        let mut m = Message::response(self.code(), self.to_string())
            .with_content_format(ContentFormat::TEXT_PLAIN.0);
        match self {
            RdError::TooLarge {
                size1: Some(limit), ..
            } => {
                let v = u32::try_from(*limit).unwrap_or(u32::MAX);
                m = m.with_uint_option(OptionNumber::SIZE1, v);
            }
            RdError::Full { retry } => m = m.with_uint_option(OptionNumber::MAX_AGE, *retry),
            _ => {}
        }
        m
    }
}
