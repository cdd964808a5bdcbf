//! A device behind NAT: it connects out to a Resource Directory over CoAP over WebSockets,
//! registers its resources, and serves them over that one connection (the server reaches it
//! as `EP.DOMAIN` when run with `--rd-proxy-domain DOMAIN`). Stays until Ctrl-C.
//!
//! ```text
//! cargo run --release -- serve --rd-proxy-domain devices.example &
//! cargo run -p coapws --example device -- coap+ws://127.0.0.1:8683 lamp
//! cargo run --release -- get coap+ws://127.0.0.1:8683/state --option 3=lamp.devices.example
//! ```

use coapws::proto::link_format::{self, Link};
use coapws::proto::{Code, Message};
use coapws::{Endpoint, IncomingRequest, Request, Resource, Site};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(rd), Some(ep)) = (args.next(), args.next()) else {
        return Err("usage: device RD_URI EP".into());
    };
    let site = Site::new().resource(
        "/state",
        Resource::new()
            .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "on") })
            .attr("rt", "state"),
    );
    let links = link_format::serialize(&[Link::new("/state").with_param("rt", "state")]);
    let device = Endpoint::builder().site(site).build();
    let register = Request::new(Code::POST, &format!("{rd}/rd?ep={ep}"))?
        .payload(links)
        .content_format(40);
    let answer = device.send(register).await?;
    if answer.code() != Code::CREATED {
        return Err(format!("registration answered {}", answer.code()).into());
    }
    println!("registered");
    tokio::signal::ctrl_c().await?;
    device.shutdown().await;
    Ok(())
}
