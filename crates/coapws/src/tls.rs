//! TLS for `coaps+tcp` and `coaps+ws`, with rustls (no OpenSSL).
//!
//! Servers load a PEM certificate chain and a PKCS#8, RSA or EC private key
//! ([`TlsIdentity`]). Clients verify servers against the system's roots plus any CA files
//! added ([`TlsClientConfig`]), with the server name taken from the URI host. ALPN: `coap` for
//! CoAP over TLS (RFC 8323 §8.2), `http/1.1` for secure WebSockets.
//! A certificate that does not verify is an error that says so; nothing falls back to plain
//! text.

use crate::error::Error;
use coapws_proto::uri::Host;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use tracing::warn;

/// ALPN protocol ID of CoAP over TLS (RFC 8323 §8.2).
pub const ALPN_COAP: &[u8] = b"coap";
/// ALPN protocol ID under secure WebSockets.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::Tls(what.to_string())
}

/// A server's certificate chain and private key.
#[derive(Debug)]
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> TlsIdentity {
        TlsIdentity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, RSA or EC).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, Error> {
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| tls_error(format!("cannot read certificate {}: {e}", cert.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("bad certificate {}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(tls_error(format!("no certificate in {}", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_error(format!("cannot read private key {}: {e}", key.display())))?;
        Ok(TlsIdentity { certs, key })
    }

    /// From DER certificate chain and key (e.g. generated in memory).
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> TlsIdentity {
        TlsIdentity { certs, key }
    }

    /// A server configuration offering `alpn`.
    pub(crate) fn server_config(&self, alpn: &[u8]) -> Result<Arc<ServerConfig>, Error> {
        let mut c = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| tls_error(format!("certificate and key do not fit: {e}")))?;
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    }
}

/// What a client trusts: the system's roots plus added CA certificates.
#[derive(Clone, Debug)]
pub struct TlsClientConfig {
    roots: Arc<RootCertStore>,
}

impl TlsClientConfig {
    /// The system's trust anchors (none if the system store cannot be read; that is logged).
    pub fn system() -> TlsClientConfig {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            warn!(error = %e, "reading the system's certificate store");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            warn!(added, ignored, "some system certificates could not be used");
        }
        TlsClientConfig {
            roots: Arc::new(roots),
        }
    }

    /// Trusts nothing but what is added.
    pub fn empty() -> TlsClientConfig {
        TlsClientConfig {
            roots: Arc::new(RootCertStore::empty()),
        }
    }

    /// Also trusts the CA certificates in a PEM file.
    pub fn add_ca_file(&mut self, path: &Path) -> Result<(), Error> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| tls_error(format!("cannot read CA file {}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("bad CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls_error(format!(
                "no certificate in CA file {}",
                path.display()
            )));
        }
        for c in certs {
            self.add_ca_der(c)?;
        }
        Ok(())
    }

    /// Also trusts one DER CA certificate.
    pub fn add_ca_der(&mut self, cert: CertificateDer<'static>) -> Result<(), Error> {
        Arc::make_mut(&mut self.roots)
            .add(cert)
            .map_err(|e| tls_error(format!("unusable CA certificate: {e}")))
    }

    pub(crate) fn client_config(&self, alpn: &[u8]) -> Result<Arc<ClientConfig>, Error> {
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    }
}

/// The TLS server name for a URI host.
pub(crate) fn server_name(host: &Host) -> Result<ServerName<'static>, Error> {
    Ok(match host {
        Host::Ipv4(a) => ServerName::IpAddress(std::net::IpAddr::V4(*a).into()),
        Host::Ipv6(a) => ServerName::IpAddress(std::net::IpAddr::V6(*a).into()),
        Host::Name(n) => ServerName::try_from(n.clone())
            .map_err(|e| tls_error(format!("{n:?} is not a valid TLS server name: {e}")))?,
    })
}

/// Turns a TLS handshake error into a message that says what failed.
pub(crate) fn describe_handshake_error(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("TLS: server certificate rejected: {c:?}")
        }
        Some(rustls::Error::NoApplicationProtocol) => {
            "TLS: no common application protocol (ALPN)".to_owned()
        }
        Some(other) => format!("TLS: {other}"),
        None => format!("TLS: {e}"),
    }
}
