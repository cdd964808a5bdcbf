//! The tokio runtime layer of coapws: transports, connection pool, token layer, endpoint and
//! server site, around the sans-IO core in [`coapws_proto`].

pub use coapws_proto as proto;
