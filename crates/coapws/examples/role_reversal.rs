//! Role reversal over one WebSocket: the server asks the client, which has no address anyone
//! could put in a URI, for one of the client's resources.
//!
//! The whole exchange runs in this one program on loopback:
//! 1. a server whose `/sensor-report` handler, on each request, GETs `/temperature` back from
//!    the requesting client through `req.remote`;
//! 2. a client endpoint that serves `/temperature` and POSTs to `/sensor-report`.
//!
//! ```text
//! cargo run -p coapws --example role_reversal
//! ```

use coapws::proto::{Code, Message};
use coapws::{Endpoint, IncomingRequest, Resource, Site};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), coapws::Error> {
    let server_site = Site::new().resource(
        "/sensor-report",
        Resource::new().post(|req: IncomingRequest| async move {
            // The remote of the incoming request leads back over the same connection.
            let ask = Message::request(Code::GET, "/temperature");
            match req.remote.request(ask, Duration::from_secs(5)).await {
                Ok(answer) => Message::response(
                    Code::CHANGED,
                    format!("server read {} from the client", answer.payload_text()),
                ),
                Err(e) => Message::response(Code::BAD_GATEWAY, e.to_string()),
            }
        }),
    );
    let server = Endpoint::builder().site(server_site).build();
    let addr = server
        .listen_ws("127.0.0.1:0".parse().expect("address"))
        .await?;

    let client_site = Site::new().resource(
        "/temperature",
        Resource::new()
            .get(|_req: IncomingRequest| async { Message::response(Code::CONTENT, "21.5 Cel") }),
    );
    let client = Endpoint::builder().site(client_site).build();
    let response = client
        .send(coapws::Request::new(
            Code::POST,
            &format!("coap+ws://{addr}/sensor-report"),
        )?)
        .await?;
    println!("{} {}", response.code(), response.message.payload_text());

    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
