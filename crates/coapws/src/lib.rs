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
//! - [`rd`]: [`rd::ResourceDirectory`], a CoRE Resource Directory (RFC 9176) to mount on a
//!   [`Site`], which keeps the connections of endpoints that registered over one.
//! - [`proxy`]: [`proxy::Proxy`], forward and reverse proxy (RFC 7252 §5.7) with a cache and
//!   relayed observations, and the way to devices that connected to us.
//! - [`connection`]: the per-connection task (token layer, driver of the RFC 8323 machine);
//!   `link.rs`: the handles other tasks reach it (and UDP sockets) through.
//! - [`pool`]: connections by origin. [`transport`]: WebSocket, TCP and UDP; [`tls`]: TLS.
//!
//! # The five common jobs
//!
//! GET a resource (any scheme: `coap://`, `coap+tcp://`, `coaps+tcp://`, `coap+ws://`,
//! `coaps+ws://`; large bodies come block-wise on their own):
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapws::Error> {
//! let endpoint = coapws::Endpoint::client();
//! let response = endpoint.get("coap+ws://127.0.0.1:8683/hello").await?;
//! println!("{} {}", response.code(), response.message.payload_text());
//! # Ok(()) }
//! ```
//!
//! Observe a resource (RFC 7641) until it ends; dropping the observation deregisters:
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapws::Error> {
//! use coapws::{Endpoint, Request};
//! let endpoint = Endpoint::client();
//! let mut time = endpoint.observe(Request::get("coap://127.0.0.1/time")?).await?;
//! loop {
//!     match time.next().await {
//!         Ok(n) => println!("{}", n.message.payload_text()),
//!         Err(end) => break println!("{end}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Serve a resource, observable, on every transport:
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapws::Error> {
//! use coapws::proto::{Code, Message};
//! use coapws::{Endpoint, IncomingRequest, Observable, Resource, Site};
//! let temperature = Observable::new();
//! let site = Site::new().resource(
//!     "/temp",
//!     Resource::new()
//!         .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "21.5") })
//!         .observable(&temperature),
//! );
//! let server = Endpoint::builder().site(site).build();
//! server.listen_ws("[::]:8683".parse().unwrap()).await?;
//! server.listen_udp("[::]:5683".parse().unwrap()).await?;
//! temperature.notify(); // every observer gets a fresh rendering
//! # Ok(()) }
//! ```
//!
//! Role reversal: a server asks the client that connected to it (which has no URI) over the
//! same connection:
//!
//! ```no_run
//! use coapws::proto::{Code, Message};
//! use coapws::{IncomingRequest, Resource};
//! use std::time::Duration;
//! let ask = Resource::new().get(|req: IncomingRequest| async move {
//!     let question = Message::request(Code::GET, "/whoami");
//!     match req.remote.request(question, Duration::from_secs(5)).await {
//!         Ok(answer) => Message::response(Code::CONTENT, answer.payload),
//!         Err(e) => Message::response(Code::BAD_GATEWAY, e.to_string()),
//!     }
//! });
//! ```
//!
//! Go through a forward proxy (RFC 7252 §5.7.2): send to the proxy, name the target in
//! Proxy-Uri:
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapws::Error> {
//! use coapws::proto::OptionNumber;
//! use coapws::{Endpoint, Request};
//! let endpoint = Endpoint::client();
//! let via_proxy = Request::get("coap+ws://proxy.example:8683")?
//!     .option(OptionNumber::PROXY_URI, "coap://[fd00::7]/sensors/temp");
//! let response = endpoint.send(via_proxy).await?;
//! # let _ = response; Ok(()) }
//! ```

pub mod cluster;
pub mod connection;
mod dispatch;
pub mod endpoint;
pub mod error;
mod exchange;
mod link;
mod listener;
pub mod metrics;
mod net;
pub mod observe;
pub mod pool;
pub mod proxy;
mod queue;
pub mod rd;
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
pub use site::{HostMatch, IncomingRequest, Resource, Site};
