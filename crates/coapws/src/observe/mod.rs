//! Observe (RFC 7641; over reliable transports RFC 8323 appendix A): a client follows a
//! resource's state through notifications, a server pushes them.
//!
//! - `client.rs`: [`crate::Endpoint::observe`] and [`Observation`], a stream of
//!   notifications that ends with a typed [`ObserveEnd`] and deregisters when dropped.
//! - `observable.rs`: [`Observable`], the change signal an application holds;
//! - `server.rs`: the observer table and tasks the dispatcher runs for every registration.
//!
//! The transports carry more than one response per token for this: their waiting-request
//! entry is a feed (see `exchange.rs`), and they keep the token until the observation ends.

mod client;
pub(crate) mod observable;
mod server;

pub use client::{Observation, ObserveEnd};
pub use observable::Observable;
pub(crate) use server::{ObserveConfig, Observers, Render, log_refused};
