//! Process-wide metrics in the Prometheus / OpenMetrics text format (the `prometheus-client`
//! crate), names prefixed `coapws_`: connections by transport, requests and responses,
//! bytes, connection endings by kind, pending requests, observations, block-wise transfers.
//! Every endpoint of the process counts into the same set; [`encode`] renders it, and
//! `coapws serve --metrics ADDR` serves it at `/metrics`.

use coapws_proto::code::Code;
use coapws_proto::connection::ConnectionError;
use coapws_proto::uri::Scheme;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// A transport, as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Transport {
    coap_ws,
    coaps_ws,
    coap_tcp,
    coaps_tcp,
    coap,
}

impl From<Scheme> for Transport {
    fn from(s: Scheme) -> Transport {
        match s {
            Scheme::CoapWs => Transport::coap_ws,
            Scheme::CoapsWs => Transport::coaps_ws,
            Scheme::CoapTcp => Transport::coap_tcp,
            Scheme::CoapsTcp => Transport::coaps_tcp,
            _ => Transport::coap,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ByTransport {
    transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ByCode {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ByKind {
    kind: &'static str,
}

/// Counters of one transport, held by a connection or socket task (clones share the counts).
pub(crate) struct LinkMetrics {
    pub(crate) requests_in: Counter,
    pub(crate) requests_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
}

impl LinkMetrics {
    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }
    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }
}

/// The metrics.
pub(crate) struct Metrics {
    connections: Family<ByTransport, Gauge>,
    opened: Family<ByTransport, Counter>,
    endings: Family<ByKind, Counter>,
    requests_in: Family<ByTransport, Counter>,
    requests_out: Family<ByTransport, Counter>,
    responses: Family<ByCode, Counter>,
    /// `responses`' counters by code byte, looked up in the family once each: the response
    /// path adds to an atomic without formatting a label or taking the family's lock.
    response_counters: Box<[OnceLock<Counter>]>,
    bytes_in: Family<ByTransport, Counter>,
    bytes_out: Family<ByTransport, Counter>,
    pub(crate) pending: Gauge,
    pub(crate) observations: Gauge,
    blocks: Family<ByKind, Counter>,
    registry: Registry,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The metrics as Prometheus / OpenMetrics text.
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &get().registry);
    out
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            connections: Family::default(),
            opened: Family::default(),
            endings: Family::default(),
            requests_in: Family::default(),
            requests_out: Family::default(),
            responses: Family::default(),
            response_counters: (0..=u8::MAX).map(|_| OnceLock::new()).collect(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            pending: Gauge::default(),
            observations: Gauge::default(),
            blocks: Family::default(),
            registry: Registry::with_prefix("coapws"),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "RFC 8323 connections open now",
            m.connections.clone(),
        );
        r.register(
            "connections_opened",
            "RFC 8323 connections opened",
            m.opened.clone(),
        );
        r.register(
            "connection_endings",
            "How connections ended, by kind",
            m.endings.clone(),
        );
        r.register(
            "requests_received",
            "Requests received",
            m.requests_in.clone(),
        );
        r.register("requests_sent", "Requests sent", m.requests_out.clone());
        r.register(
            "responses_sent",
            "Responses sent, by code",
            m.responses.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes received (CoAP frames and datagrams)",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes sent (CoAP frames and datagrams)",
            m.bytes_out.clone(),
        );
        r.register(
            "pending_requests",
            "Requests sent and waiting for their response",
            m.pending.clone(),
        );
        r.register(
            "observations",
            "Observers registered with this process's sites",
            m.observations.clone(),
        );
        r.register(
            "block_transfers",
            "Block-wise transfers served, by direction",
            m.blocks.clone(),
        );
        m
    }

    fn t(scheme: Scheme) -> ByTransport {
        ByTransport {
            transport: scheme.into(),
        }
    }

    pub(crate) fn connection_opened(&self, scheme: Scheme) {
        self.opened.get_or_create(&Self::t(scheme)).inc();
        self.connections.get_or_create(&Self::t(scheme)).inc();
    }

    pub(crate) fn connection_closed(&self, scheme: Scheme, why: &ConnectionError) {
        self.connections.get_or_create(&Self::t(scheme)).dec();
        let kind = match why {
            ConnectionError::Aborted(_) => "aborted",
            ConnectionError::PeerAborted(_) => "peer_aborted",
            ConnectionError::PeerReleased => "peer_released",
            ConnectionError::Released => "released",
            ConnectionError::TransportClosed => "transport_closed",
        };
        self.endings.get_or_create(&ByKind { kind }).inc();
    }

    pub(crate) fn response_sent(&self, code: Code) {
        self.response_counters[usize::from(code.0)]
            .get_or_init(|| {
                let code = format!("{}.{:02}", code.class(), code.detail());
                self.responses.get_or_create(&ByCode { code }).clone()
            })
            .inc();
    }

    /// The counters of one connection's (or UDP socket's) transport, looked up once: the
    /// per-message path then only adds to atomics.
    pub(crate) fn link(&self, scheme: Scheme) -> LinkMetrics {
        let t = Self::t(scheme);
        LinkMetrics {
            requests_in: self.requests_in.get_or_create(&t).clone(),
            requests_out: self.requests_out.get_or_create(&t).clone(),
            bytes_in: self.bytes_in.get_or_create(&t).clone(),
            bytes_out: self.bytes_out.get_or_create(&t).clone(),
        }
    }

    pub(crate) fn block_transfer(&self, kind: &'static str) {
        self.blocks.get_or_create(&ByKind { kind }).inc();
    }
}

/// Serves [`encode`] over HTTP/1.1 at `GET /metrics` on `addr` (other paths: 404), for a
/// Prometheus server to scrape; returns the bound address. The listener runs until the
/// process ends.
pub async fn serve(addr: std::net::SocketAddr) -> Result<std::net::SocketAddr, crate::Error> {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Response, StatusCode, header};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::net::listen_error(addr, e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::net::listen_error(addr, e))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut r = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from(encode())));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        Response::new(Full::new(Bytes::from_static(b"only /metrics here\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *r.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(r)
                },
            );
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}
