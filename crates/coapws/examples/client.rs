//! A CoAP-over-WebSockets client: GET and POST against `coapws serve`.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run -p coapws --example client    # in another
//! ```

use coapws::proto::Code;
use coapws::{Endpoint, Request};

#[tokio::main]
async fn main() -> Result<(), coapws::Error> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "coap+ws://localhost:8683".into());
    let endpoint = Endpoint::client();

    let hello = endpoint.get(&format!("{base}/hello")).await?;
    println!("{} {}", hello.code(), hello.message.payload_text());

    // Both requests share the one pooled connection.
    let echo = endpoint
        .send(
            Request::new(Code::POST, &format!("{base}/echo"))?
                .payload("ping")
                .content_format(0),
        )
        .await?;
    println!("{} {}", echo.code(), echo.message.payload_text());

    // Release the connection politely.
    endpoint.shutdown().await;
    Ok(())
}
