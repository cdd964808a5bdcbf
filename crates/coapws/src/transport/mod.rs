//! Transports under the connection driver: each turns a socket into a
//! frame transport for the connection driver: WebSocket in [`ws`] (with the HTTP side of the WebSocket
//! server: path, subprotocol, version and origin checks), TCP and TLS streams in [`tcp`], and
//! UDP sockets in [`udp`] (which drive the RFC 7252 message layer themselves).

pub mod tcp;
pub mod udp;
pub mod ws;
