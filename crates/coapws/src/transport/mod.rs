//! Transports under the connection driver: each turns a socket into a
//! [`crate::connection::FrameIo`]: WebSocket in [`ws`] (with the HTTP side of the WebSocket
//! server: path, subprotocol, version and origin checks), TCP and TLS streams in [`tcp`].

pub mod tcp;
pub mod ws;
