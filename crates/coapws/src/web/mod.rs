//! The web front of the WebSocket listeners: every HTTP request that is not the CoAP upgrade
//! at `/.well-known/coap` is answered here, so one port serves a website (a browser console,
//! a device's pages) and CoAP over WebSockets.
//!
//! - `content.rs`: [`WebContent`], static files embedded in the binary or read from a
//!   directory, with content types, ETag and Last-Modified, Cache-Control, HEAD and 304.
//! - `origin.rs`: [`OriginPolicy`], which browser origins may open a CoAP WebSocket
//!   (RFC 6455 §10.2): by default only pages of the same host, besides non-browser clients.

mod content;
mod origin;

pub use content::WebContent;
pub use origin::OriginPolicy;
