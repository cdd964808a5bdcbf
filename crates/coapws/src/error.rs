//! The error type of the runtime crate: what a request, a connection attempt or a listener
//! can end with. Cloneable, so one failure can be handed to every request that shared it.

use coapws_proto::blockwise::BlockError;
use coapws_proto::connection::{ConnectionError, SendError};
use coapws_proto::uri::{Scheme, UriError};
use std::sync::Arc;

/// Everything that can go wrong in the runtime layer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URI is not a CoAP URI.
    #[error("invalid URI: {0}")]
    Uri(#[from] UriError),
    /// This endpoint has no transport for the scheme.
    #[error("scheme {0} is not supported by this endpoint")]
    UnsupportedScheme(Scheme),
    /// Name resolution or TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The host:port tried.
        addr: String,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The WebSocket (or TLS) handshake failed.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The host:port tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection ended while the request was pending.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The connection refused to send the message.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A request carrying No-Response got no response in the wait allowed for it, as it may
    /// have asked for.
    #[error("no response (the request carried No-Response)")]
    NoResponse,
    /// A block-wise transfer broke off.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A UDP message could not be sent (e.g. larger than a datagram may be).
    #[error(transparent)]
    Datagram(#[from] coapws_proto::udp::UdpSendError),
    /// The peer answered the request with a Reset (UDP).
    #[error("the peer answered with Reset")]
    Reset,
    /// No response within the request's timeout.
    #[error("request timed out")]
    Timeout,
    /// The remote has no URI: it is a client that connected to us (e.g. over WebSocket). Reach
    /// it with [`crate::Endpoint::request_to`] instead.
    #[error("remote {0} has no URI: it is a client connected to this endpoint")]
    NoUri(String),
    /// TLS material could not be loaded or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The endpoint was shut down.
    #[error("endpoint shut down")]
    Shutdown,
    /// The server released its connection asking us to wait before reconnecting (Hold-Off,
    /// RFC 8323 §5.5), and that time has not passed.
    #[error("{origin} asked to wait {secs} s more before reconnecting (Release with Hold-Off)")]
    HeldOff {
        /// The origin.
        origin: String,
        /// Seconds still to wait.
        secs: u64,
    },
    /// A request body could not be read from its file.
    #[error("cannot read {path}: {source}")]
    Body {
        /// The file.
        path: String,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The observation has ended already (its ending was reported before).
    #[error("the observation has ended")]
    ObservationEnded,
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
}

impl Error {
    pub(crate) fn connect(addr: impl Into<String>, e: std::io::Error) -> Error {
        Error::Connect {
            addr: addr.into(),
            source: Arc::new(e),
        }
    }
    /// True when the request failed because its connection ended.
    pub fn is_connection_closed(&self) -> bool {
        matches!(self, Error::Connection(_))
    }
}
