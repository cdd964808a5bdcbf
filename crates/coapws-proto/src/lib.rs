//! Sans-IO core of coapws: the CoAP message model and everything that can be decided without
//! a socket or a clock.
//!
//! Contract: deterministic, no networking, no clock read inside (time, where needed, is an
//! argument), no OS randomness (tokens and IDs are chosen by the caller or from a seed). The
//! tokio runtime crate `coapws` wraps this crate.
//!
//! - [`code`], [`option`], [`message`]: the message model.
//! - [`codec`]: UDP (RFC 7252), TCP and WebSocket (RFC 8323) framing, strict decoders.
//! - [`signaling`]: RFC 8323 signaling messages (CSM, Ping, Pong, Release, Abort).
//! - [`connection`]: the RFC 8323 connection machine shared by TCP, TLS and WebSocket.
//! - [`udp`]: the RFC 7252 message layer (retransmission, deduplication, NSTART) for UDP.
//! - [`blockwise`]: block-wise transfer state (RFC 7959, BERT).
//! - [`observe`]: Observe sequence numbers and the client's reordering check (RFC 7641).
//! - [`uri`]: CoAP URIs of every scheme and their mapping to options.
//! - [`content_format`], [`link_format`]: content-format registry and RFC 6690 links.

pub mod blockwise;
pub mod code;
pub mod codec;
pub mod connection;
pub mod content_format;
pub mod link_format;
pub mod message;
pub mod observe;
pub mod option;
pub mod signaling;
mod token_set;
pub mod udp;
pub mod uri;

pub use code::Code;
pub use codec::{DecodeError, DecodeLimits, EncodeError};
pub use message::{Message, Token};
pub use option::{BlockValue, OptionNumber, Options};
