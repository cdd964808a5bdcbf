//! `coaps+tcp` and `coaps+ws` over loopback with a CA made in the test: requests both ways,
//! a certificate that does not verify, and ALPN enforcement.

mod common;

use coapws::proto::{Code, Message};
use coapws::{Endpoint, Error, IncomingRequest, Resource, Site};
use common::*;
use std::sync::Arc;

async fn tls_server(pki: &Pki) -> (Endpoint, std::net::SocketAddr, std::net::SocketAddr) {
    let ep = Endpoint::builder().site(test_site()).build();
    let tls = ep
        .listen_tls("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    let wss = ep
        .listen_wss("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    (ep, tls, wss)
}

#[tokio::test]
async fn requests_over_both_secure_schemes() {
    let pki = pki();
    let (_server, tls, wss) = tls_server(&pki).await;
    let client = Endpoint::builder().tls_client(trusting(&pki)).build();
    for base in [
        format!("coaps+tcp://127.0.0.1:{}", tls.port()),
        format!("coaps+ws://localhost:{}", wss.port()),
        format!("coaps+tcp://localhost:{}", tls.port()),
    ] {
        let r = client
            .get(&format!("{base}/hello"))
            .await
            .unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(r.code(), Code::CONTENT, "{base}");
        let r = client.get(&format!("{base}/big")).await.unwrap();
        assert_eq!(r.payload().len(), 100 * 1024, "{base}");
    }
    assert_eq!(client.connection_count(), 3);
}

#[tokio::test]
async fn untrusted_certificate_is_a_clear_error() {
    let pki = pki();
    let other = common::pki();
    let (_server, tls, wss) = tls_server(&pki).await;
    let client = Endpoint::builder().tls_client(trusting(&other)).build();
    for u in [
        format!("coaps+tcp://127.0.0.1:{}/hello", tls.port()),
        format!("coaps+ws://127.0.0.1:{}/hello", wss.port()),
    ] {
        let err = client.get(&u).await.unwrap_err();
        match &err {
            Error::Handshake { reason, .. } => {
                assert!(reason.contains("certificate"), "{reason}")
            }
            other => panic!("{u}: {other:?}"),
        }
    }
    // The system roots do not know our CA.
    let system = Endpoint::client();
    let err = system
        .get(&format!("coaps+tcp://127.0.0.1:{}/hello", tls.port()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Handshake { reason, .. } if reason.contains("UnknownIssuer")),
        "{err:?}"
    );
}

/// A trusted certificate that does not carry the name the client asked for: the handshake
/// fails and says so. The server listens on 127.0.0.1 with a certificate for `localhost`
/// only; the same client reaches it by `localhost`, so the name is the only thing wrong.
#[tokio::test]
async fn a_certificate_without_the_name_is_refused_naming_the_mismatch() {
    let pki = pki_for(&["localhost"]);
    let (_server, tls, wss) = tls_server(&pki).await;
    let client = Endpoint::builder().tls_client(trusting(&pki)).build();
    for (scheme, port) in [("coaps+tcp", tls.port()), ("coaps+ws", wss.port())] {
        let r = client
            .get(&format!("{scheme}://localhost:{port}/hello"))
            .await
            .unwrap_or_else(|e| panic!("{scheme} by the certificate's name: {e}"));
        assert_eq!(r.code(), Code::CONTENT, "{scheme} by name");
        let err = client
            .get(&format!("{scheme}://127.0.0.1:{port}/hello"))
            .await
            .unwrap_err();
        match &err {
            Error::Handshake { reason, .. } => assert!(
                reason.contains("NotValidForName"),
                "{scheme}: the error names the mismatch: {reason}"
            ),
            other => panic!("{scheme} by 127.0.0.1: expected a handshake error, got {other:?}"),
        }
    }
    assert_eq!(
        client.connection_count(),
        2,
        "only the two connections by name are up"
    );
}

async fn raw_tls(
    addr: std::net::SocketAddr,
    pki: &Pki,
    alpn: Vec<Vec<u8>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

#[tokio::test]
async fn alpn_is_required_off_port_5684() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let (_server, tls, _) = tls_server(&pki).await;
    // Without ALPN: the handshake may finish, but the server closes without a CSM.
    let outcome = match raw_tls(tls, &pki, vec![]).await {
        Err(_) => 0,
        Ok(mut s) => {
            let mut buf = [0u8; 64];
            let _ = s.write_all(&[0x00, 0xe1]).await;
            tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap_or(0)
        }
    };
    assert_eq!(outcome, 0, "no CoAP for a client without ALPN");
    // A wrong protocol: the handshake fails with the server's no_application_protocol alert.
    let err = raw_tls(tls, &pki, vec![b"h2".to_vec()]).await.unwrap_err();
    assert!(
        err.to_string().contains("NoApplicationProtocol"),
        "a wrong ALPN fails the handshake on ALPN: {err}"
    );
    // With ALPN coap: the server's CSM arrives.
    let mut s = raw_tls(tls, &pki, vec![b"coap".to_vec()]).await.unwrap();
    s.write_all(&[0x00, 0xe1]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 2 && buf[1] == 0xe1, "CSM: {:02x?}", &buf[..n]);
}

#[tokio::test]
async fn sni_is_the_default_uri_host_and_role_reversal_works_over_tls() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let site = Site::new().resource(
        "/who",
        Resource::new().get(move |req: IncomingRequest| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(
                    req.remote
                        .local_host_info()
                        .map(|(h, p)| (h.to_string(), p)),
                );
                let ask = Message::request(Code::GET, "/name");
                match req.remote.request(ask, WAIT).await {
                    Ok(a) => Message::response(Code::CONTENT, a.payload),
                    Err(e) => Message::response(Code::BAD_GATEWAY, e.to_string()),
                }
            }
        }),
    );
    let pki = pki();
    let server = Endpoint::builder().site(site).build();
    let tls = server
        .listen_tls("127.0.0.1:0".parse().unwrap(), &pki.identity)
        .await
        .unwrap();
    let client = Endpoint::builder()
        .tls_client(trusting(&pki))
        .site(Site::new().resource(
            "/name",
            Resource::new().get(|_r: IncomingRequest| async {
                Message::response(Code::CONTENT, "tls-client")
            }),
        ))
        .build();
    let r = client
        .get(&format!("coaps+tcp://localhost:{}/who", tls.port()))
        .await
        .unwrap();
    assert_eq!(r.message.payload_text(), "tls-client");
    assert_eq!(
        rx.recv().await.unwrap(),
        Some(("localhost".to_string(), tls.port()))
    );
}
