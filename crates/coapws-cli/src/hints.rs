//! Hints for the mistakes a new user makes most, appended to the error they cause: a port
//! already taken by another server, a certificate from a CA the system does not know, a refused
//! connection to a port the URI only implied.

use coapws::Error;
use coapws::proto::uri::Uri;

/// A request's error, with a hint where one helps.
pub fn request_error(e: Error, uri: &Uri) -> anyhow::Error {
    let text = e.to_string();
    let hint = match &e {
        Error::Handshake { reason, .. } if reason.contains("UnknownIssuer") => Some(
            "the server's certificate comes from a CA this machine does not trust: \
             add it with --ca-cert FILE"
                .to_owned(),
        ),
        // coap+ws:// means port 80 (coaps+ws:// 443), where `serve` does not listen.
        Error::Connect { .. }
            if uri.port.is_none() && uri.scheme.is_websocket() && text.contains("refused") =>
        {
            Some(format!(
                "the URI names no port, so {} means port {}; `coapws serve` listens on {} \
                 by default (e.g. {}://{}:{}/…)",
                uri.scheme,
                uri.scheme.default_port(),
                serve_port(uri),
                uri.scheme,
                uri.host.authority_form(),
                serve_port(uri)
            ))
        }
        _ => None,
    };
    match hint {
        Some(hint) => Hinted { error: e, hint }.into(),
        None => e.into(),
    }
}

/// An error with a hint on its own line after it.
#[derive(Debug)]
pub struct Hinted {
    /// The error.
    pub error: Error,
    hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nhint: {}", self.error, self.hint)
    }
}

impl std::error::Error for Hinted {}

/// Where a default `coapws serve` listens for `uri`'s scheme.
fn serve_port(uri: &Uri) -> u16 {
    if uri.scheme.is_secure() { 8684 } else { 8683 }
}

/// A listener's error, with a hint where one helps.
pub fn listen_error(e: Error) -> anyhow::Error {
    match &e {
        Error::Listen { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => Hinted {
            error: e,
            hint: "another server holds that port; choose others with --ws, --tcp, --udp \
                   (port 0 picks a free one) or --bind HOST:PORT"
                .to_owned(),
        }
        .into(),
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn refused(addr: &str) -> Error {
        Error::Connect {
            addr: addr.into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    #[test]
    fn an_implied_websocket_port_is_named() {
        let uri = Uri::parse("coap+ws://localhost/hello").unwrap();
        let e = request_error(refused("localhost:80"), &uri).to_string();
        assert!(e.contains("coap+ws means port 80"), "{e}");
        assert!(e.contains("coap+ws://localhost:8683/"), "{e}");
        // An explicit port, or a scheme whose default is serve's, gets no hint.
        let uri = Uri::parse("coap+ws://localhost:80/hello").unwrap();
        assert!(
            !request_error(refused("localhost:80"), &uri)
                .to_string()
                .contains("hint")
        );
        let uri = Uri::parse("coap+tcp://localhost/hello").unwrap();
        assert!(
            !request_error(refused("localhost:5683"), &uri)
                .to_string()
                .contains("hint")
        );
    }

    #[test]
    fn an_unknown_issuer_suggests_ca_cert() {
        let uri = Uri::parse("coaps+ws://localhost/hello").unwrap();
        let e = Error::Handshake {
            addr: "localhost:443".into(),
            reason: "TLS: server certificate rejected: UnknownIssuer".into(),
        };
        let e = request_error(e, &uri).to_string();
        assert!(e.contains("--ca-cert"), "{e}");
    }

    #[test]
    fn a_port_in_use_suggests_the_binding_flags() {
        let e = Error::Listen {
            addr: "[::]:8683".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::AddrInUse)),
        };
        let e = listen_error(e).to_string();
        assert!(e.contains("--ws, --tcp, --udp"), "{e}");
    }
}
