//! The tokio runtime layer of coapws: transports, connection pool, token layer, endpoint and
//! server site, around the sans-IO core in [`coapws_proto`] (re-exported as [`proto`]).
//!
//! - [`endpoint`]: [`Endpoint`], client and server at once; [`Request`], [`Response`]. Its
//!   listening side (accept loops, TLS handshakes, connection limit) is in `listener.rs`.
//! - [`site`]: [`Site`] and [`Resource`], the server side; the file server and demo site.
//! - [`observe`]: [`Observation`] (client) and [`Observable`] (server), RFC 7641.
//! - [`transfer`]: [`Endpoint::send`]'s whole transfer: block-wise both ways, from memory
//!   or a file, with [`transfer::Progress`].
//! - [`web`]: the website on the WebSocket port ([`web::WebContent`]) and the browser origin
//!   policy ([`web::OriginPolicy`]).
//! - [`remote`]: [`Remote`], the other end, with role reversal over its connection.
//! - [`connection`]: the per-connection task (token layer, driver of the RFC 8323 machine).
//! - [`pool`]: connections by origin. [`transport`]: WebSocket and TCP; [`tls`]: TLS for both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapws::Error> {
//! let endpoint = coapws::Endpoint::client();
//! let response = endpoint.get("coap+ws://127.0.0.1:8683/hello").await?;
//! println!("{} {}", response.code(), response.message.payload_text());
//! # Ok(()) }
//! ```

pub mod connection;
mod dispatch;
pub mod endpoint;
pub mod error;
mod exchange;
mod listener;
mod net;
pub mod observe;
pub mod pool;
pub mod remote;
pub mod site;
pub mod tls;
pub mod transfer;
pub mod transport;
pub mod web;

pub use coapws_proto as proto;
pub use endpoint::{Endpoint, EndpointBuilder, EndpointConfig, Request, Response};
pub use error::Error;
pub use observe::{Observable, Observation, ObserveEnd};
pub use remote::{Remote, Side};
pub use site::{IncomingRequest, Resource, Site};
