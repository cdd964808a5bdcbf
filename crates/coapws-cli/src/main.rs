//! The `coapws` command: a thin shell over the `coapws` library. Parses arguments, runs the
//! chosen command, maps the result to an exit code.

use clap::Parser;

/// CoAP over WebSockets (RFC 8323), with its sibling transports: client and server.
#[derive(Parser, Debug)]
#[command(name = "coapws", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
