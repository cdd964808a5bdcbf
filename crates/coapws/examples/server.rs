//! A CoAP-over-WebSockets server with two resources, on `[::]:8683` (or the address given).
//!
//! ```text
//! cargo run -p coapws --example server -- 127.0.0.1:8683
//! cargo run --release -- get coap+ws://127.0.0.1:8683/counter
//! ```

use coapws::proto::{Code, Message};
use coapws::{Endpoint, IncomingRequest, Resource, Site};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[tokio::main]
async fn main() -> Result<(), coapws::Error> {
    let counter = Arc::new(AtomicU64::new(0));
    let site = Site::new()
        .resource(
            "/greeting",
            Resource::new()
                .get(|req: IncomingRequest| async move {
                    Message::response(Code::CONTENT, format!("hello, {}", req.remote.peer_addr()))
                })
                .attr("rt", "greeting"),
        )
        .resource(
            "/counter",
            Resource::new().get(move |_req: IncomingRequest| {
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                async move { Message::response(Code::CONTENT, n.to_string()) }
            }),
        );
    let endpoint = Endpoint::builder().site(site).build();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "[::]:8683".into())
        .parse()
        .expect("an address such as 127.0.0.1:8683");
    let bound = endpoint.listen_ws(addr).await?;
    println!("listening on coap+ws://{bound}");
    let _ = tokio::signal::ctrl_c().await;
    endpoint.shutdown().await; // sends Release to every client
    Ok(())
}
