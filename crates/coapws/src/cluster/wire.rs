//! CoAP messages as NATS payloads: the RFC 8323 TCP framing of the message (its token empty:
//! tokens are per hop), and a header saying what the NATS message is.

use bytes::Bytes;
use coapws_proto::codec::{DecodeLimits, tcp};
use coapws_proto::message::{Message, Token};

/// The header naming what a NATS message of the cluster carries.
pub(crate) const KIND: &str = "Coapws-Kind";
/// A request to answer once.
pub(crate) const REQUEST: &str = "request";
/// A registration of an observation: notifications follow on the reply subject.
pub(crate) const OBSERVE: &str = "observe";
/// A notification of an observation.
pub(crate) const NOTIFICATION: &str = "notification";
/// The last word of an observation (a 2.xx without Observe, or an error).
pub(crate) const END: &str = "end";
/// Still there (both ends of an observation say it while it lasts).
pub(crate) const ALIVE: &str = "alive";
/// The observer is done (deregistration).
pub(crate) const CANCEL: &str = "cancel";

/// `m` as a payload (its token left out).
pub(crate) fn encode(m: &Message) -> Result<Bytes, coapws_proto::codec::EncodeError> {
    let mut m = m.clone();
    m.token = Token::default();
    tcp::encode(&m)
}

/// A payload as a message, at most `max` bytes.
pub(crate) fn decode(
    payload: &Bytes,
    max: usize,
) -> Result<Message, coapws_proto::codec::DecodeError> {
    tcp::decode(payload, &DecodeLimits::with_max_message_size(max))
}

/// The kind header of `m`.
pub(crate) fn kind(m: &async_nats::Message) -> Option<&str> {
    m.headers.as_ref()?.get(KIND).map(|v| v.as_str())
}

/// Headers saying `kind`.
pub(crate) fn headers(kind: &str) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(KIND, kind);
    h
}
