//! `coapws discover URI`: the target's `/.well-known/core` (RFC 6690) as a tree of its
//! resources, each with the attributes a user looks for (rt, if, ct, obs, sz, title).

use anyhow::Result;
use clap::Args;
use coapws::EndpointConfig;
use coapws::proto::Code;
use coapws::proto::link_format::{self, Link};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Arguments of `discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// The server, e.g. coap+ws://localhost:8683 (any path is replaced by /.well-known/core)
    uri: String,
    #[command(flatten)]
    common: crate::client::CommonArgs,
}

/// Resources by path segment; a node is a resource when a link names it.
#[derive(Default)]
struct Node {
    link: Option<Link>,
    children: BTreeMap<String, Node>,
}

const SHOWN: [&str; 6] = ["rt", "if", "ct", "obs", "sz", "title"];

fn attributes(link: &Link) -> String {
    let mut out = Vec::new();
    for name in SHOWN {
        for (k, v) in link.params.iter().filter(|(k, _)| k == name) {
            out.push(match v {
                Some(v) if name == "title" => format!("{k}=\"{v}\""),
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
        }
    }
    out.join(" ")
}

fn print(node: &Node, prefix: &str, out: &mut Vec<String>) {
    let n = node.children.len();
    for (i, (name, child)) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        let attrs = child.link.as_ref().map(attributes).unwrap_or_default();
        let branch = if last { "└── " } else { "├── " };
        out.push(
            format!("{prefix}{branch}{name}  {attrs}")
                .trim_end()
                .to_owned(),
        );
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        print(child, &deeper, out);
    }
}

pub async fn run(args: DiscoverArgs, verbose: u8) -> Result<ExitCode> {
    crate::init_logging(verbose, "warn");
    let mut base = coapws::proto::uri::Uri::parse(&args.uri)?;
    base.path = vec![".well-known".into(), "core".into()];
    base.query.clear();
    let request = args.common.request(Code::GET, &base.to_string())?;
    let endpoint = args
        .common
        .endpoint(EndpointConfig::default(), request.uri.scheme.is_secure())?;
    let result = endpoint.send(request).await;
    endpoint.shutdown().await;
    let response = result?;
    if !response.code().is_success() {
        eprintln!("{}: {}", response.code(), response.message.payload_text());
        return Ok(ExitCode::FAILURE);
    }
    let links = link_format::parse(&response.message.payload_text())?;
    let mut root = Node::default();
    let mut elsewhere = Vec::new();
    for link in links {
        // Links to other servers are listed after the tree, as they are.
        if !link.target.starts_with('/') {
            elsewhere.push(link);
            continue;
        }
        let mut node = &mut root;
        for seg in link.target.split('/').filter(|s| !s.is_empty()) {
            node = node.children.entry(seg.to_owned()).or_default();
        }
        node.link = Some(link);
    }
    let mut out = vec!["/".to_owned()];
    print(&root, "", &mut out);
    for l in elsewhere {
        out.push(
            format!("{}  {}", l.target, attributes(&l))
                .trim_end()
                .to_owned(),
        );
    }
    crate::say(&out.join("\n"));
    Ok(ExitCode::SUCCESS)
}
