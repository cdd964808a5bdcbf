//! The proxy flags of `coapws serve` and `coapws proxy`: a forward proxy limited to the
//! targets `--allow` names (loopback only without), reverse proxying by path and by host, the
//! patience and the cache size.

use anyhow::{Context, Result, bail};
use clap::Args;
use coapws::Site;
use coapws::proto::uri::Uri;
use coapws::proxy::{AllowList, Devices, Proxy, ProxyConfig};
use std::sync::Arc;
use std::time::Duration;

/// Proxy flags.
#[derive(Args, Debug, Default)]
pub struct ProxyArgs {
    /// Be a forward proxy too (requests with Proxy-Uri or Proxy-Scheme, RFC 7252 §5.7), for
    /// the targets --allow names (without any, loopback targets only).
    #[arg(long)]
    proxy: bool,
    /// A target the forward proxy may reach: `scheme://host[:port]`, `*` matching anything
    /// (e.g. 'coap://127.0.0.1:*', 'coap+tcp://*.lan'); without a port, the scheme's default.
    /// Repeatable; implies --proxy.
    #[arg(long, value_name = "PATTERN")]
    allow: Vec<String>,
    /// Reverse proxy: requests below PATH go to URI, the rest of their path appended
    /// (e.g. --reverse /garden=coap://[fd00::7]/). Repeatable.
    #[arg(long, value_name = "PATH=URI")]
    reverse: Vec<String>,
    /// Reverse proxy by name: requests whose Uri-Host (or WebSocket Host) is NAME go to URI
    /// (e.g. --reverse-host garden.example=coap://[fd00::7]). Repeatable.
    #[arg(long, value_name = "NAME=URI")]
    reverse_host: Vec<String>,
    /// Seconds a client of the proxy waits at most: an upstream answer not in by then is
    /// answered 5.04 Gateway Timeout.
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=90))]
    proxy_timeout: u64,
    /// Bytes of responses the proxy caches (RFC 7252 §5.6; 0: no cache).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    proxy_cache: usize,
    /// For coaps+tcp and coaps+ws targets: also trust the CA certificates in this PEM file
    /// (besides the system's roots). Repeatable.
    #[arg(long, value_name = "FILE")]
    proxy_ca_cert: Vec<std::path::PathBuf>,
}

impl ProxyArgs {
    /// How long a proxied request may take.
    pub fn patience(&self) -> Duration {
        Duration::from_secs(self.proxy_timeout)
    }
    /// True when any proxying was asked for.
    pub fn any(&self) -> bool {
        self.proxy
            || !self.allow.is_empty()
            || !self.reverse.is_empty()
            || !self.reverse_host.is_empty()
    }
}

fn split_pair<'a>(flag: &str, text: &'a str) -> Result<(&'a str, Uri)> {
    let Some((left, uri)) = text.split_once('=') else {
        bail!("{flag} {text:?}: expected LEFT=URI");
    };
    let uri = Uri::parse(uri).with_context(|| format!("{flag} {text:?}"))?;
    Ok((left, uri))
}

/// `site` with the proxying `args` ask for (and a forward proxy whatever they say when
/// `forward` is set: `coapws proxy`), and requests for `NAME.DOMAIN` sent to the device NAME
/// of `devices` over its own connection. Returns the proxy, if any.
pub fn mount(
    args: &ProxyArgs,
    forward: bool,
    site: Site,
    devices: Option<(&str, Arc<dyn Devices>)>,
) -> Result<(Site, Option<Proxy>)> {
    if !forward && !args.any() && devices.is_none() {
        return Ok((site, None));
    }
    let allow = AllowList::parse(&args.allow).context("--allow")?;
    let config = ProxyConfig {
        allow,
        patience: Duration::from_secs(args.proxy_timeout),
        cache_bytes: args.proxy_cache,
        ..ProxyConfig::default()
    };
    let mut trust = coapws::tls::TlsClientConfig::system();
    for ca in &args.proxy_ca_cert {
        trust
            .add_ca_file(ca)
            .with_context(|| format!("--proxy-ca-cert {}", ca.display()))?;
    }
    let upstream = coapws::Endpoint::builder()
        .config(coapws::EndpointConfig {
            request_timeout: config.patience,
            ..config.client.clone()
        })
        .tls_client(trust)
        .build();
    let proxy = Proxy::with_client(config, upstream);
    let mut site = site;
    if let Some((domain, devices)) = devices {
        tracing::info!(
            domain,
            "devices connected to the directory are reached as NAME.{domain}"
        );
        site = proxy.devices(site, domain, devices);
    }
    if forward || args.proxy || !args.allow.is_empty() {
        site = proxy.forward(site);
        if proxy.config().allow.is_loopback_only() {
            tracing::info!("forward proxy: loopback targets only (name others with --allow)");
        } else {
            let list: Vec<String> = proxy
                .config()
                .allow
                .patterns()
                .iter()
                .map(|p| p.to_string())
                .collect();
            tracing::info!(allow = %list.join(" "), "forward proxy");
        }
    }
    for r in &args.reverse {
        let (path, uri) = split_pair("--reverse", r)?;
        if !path.starts_with('/') {
            bail!("--reverse {r:?}: the path must start with /");
        }
        tracing::info!(path, to = %uri, "reverse proxy");
        site = proxy.reverse(site, path, uri);
    }
    for r in &args.reverse_host {
        let (name, uri) = split_pair("--reverse-host", r)?;
        tracing::info!(host = name, to = %uri, "reverse proxy by host");
        site = proxy.reverse_host(site, name, uri);
    }
    Ok((site, Some(proxy)))
}
