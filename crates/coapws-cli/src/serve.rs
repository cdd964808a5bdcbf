//! `coapws serve [ROOT]`: the demo site or a file server, on the listeners asked for.
//!
//! Without binding flags: WebSocket on `[::]:8683`. `--bind HOST[:PORT]` follows aiocoap:
//! TCP on PORT (default 5683) and WebSocket on PORT+3000. `--ws ADDR` and `--tcp ADDR` bind
//! exactly (port 0 picks one). Any binding flag replaces the defaults.

use anyhow::{Context, Result, bail};
use clap::Args;
use coapws::proto::link_format::Link;
use coapws::site::files::FileServer;
use coapws::{Endpoint, IncomingRequest, Site};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve the files below ROOT instead of the demo site.
    root: Option<PathBuf>,
    /// Allow PUT and DELETE on the files below ROOT.
    #[arg(long, requires = "root")]
    write: bool,
    /// Bind like aiocoap: TCP on PORT (default 5683), WebSocket on PORT+3000.
    #[arg(long, value_name = "HOST[:PORT]")]
    bind: Option<String>,
    /// Listen for CoAP over WebSockets exactly here (repeatable).
    #[arg(long, value_name = "ADDR")]
    ws: Vec<String>,
    /// Listen for CoAP over TCP exactly here (repeatable).
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<String>,
}

/// Parses `HOST:PORT`, `[V6]:PORT`, or a bare host with `default_port`.
async fn resolve(text: &str, default_port: Option<u16>) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("bad port in {text:?}"))?,
        ),
        _ => (
            text,
            default_port.with_context(|| format!("{text:?} needs a port"))?,
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} resolves to no address"))
}

fn display(scheme: &str, a: SocketAddr) -> String {
    format!("listening on {scheme}://{a}")
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let site = match &args.root {
        None => coapws::site::demo::site(),
        Some(root) => {
            let files = FileServer::new(root)
                .with_context(|| format!("cannot serve {}", root.display()))?
                .writable(args.write);
            Site::new().subtree(
                "/",
                move |req: IncomingRequest| {
                    let files = files.clone();
                    async move { files.handle(req).await }
                },
                vec![Link::new("/").with_param("ct", "40")],
            )
        }
    };
    let endpoint = Endpoint::builder().site(site).build();

    let mut ws = Vec::new();
    let mut tcp = Vec::new();
    for a in &args.ws {
        ws.push(resolve(a, None).await?);
    }
    for a in &args.tcp {
        tcp.push(resolve(a, None).await?);
    }
    if let Some(b) = &args.bind {
        let a = resolve(b, Some(5683)).await?;
        let Some(ws_port) = a.port().checked_add(3000) else {
            bail!(
                "--bind port {} leaves no room for WebSocket at port + 3000",
                a.port()
            );
        };
        tcp.push(a);
        ws.push(SocketAddr::new(a.ip(), ws_port));
    }
    if ws.is_empty() && tcp.is_empty() {
        ws.push("[::]:8683".parse()?);
    }
    for a in ws {
        println!("{}", display("coap+ws", endpoint.listen_ws(a).await?));
    }
    for a in tcp {
        println!("{}", display("coap+tcp", endpoint.listen_tcp(a).await?));
    }
    wait_for_signal().await;
    tracing::info!("shutting down: releasing connections");
    endpoint.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
