//! `coapws shell`: request lines from stdin (aiocoap-client's `--interactive`), e.g.
//! `get coap+ws://localhost:8683/hello --accept json`, each parsed with the request commands'
//! own arguments and run with endpoints kept for the whole session, so connections are reused
//! from line to line. A prompt on a terminal, none when piped; `quit`, `exit` or the end of
//! input ends it; a line that fails says why and the shell goes on.

use crate::client::ClientArgs;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use coapws::Endpoint;
use coapws::proto::Code;
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `shell` (none yet: every flag goes on the request lines).
#[derive(Args, Debug)]
pub struct ShellArgs {}

/// One line of the shell.
#[derive(Parser, Debug)]
#[command(
    name = "coapws>",
    no_binary_name = true,
    disable_version_flag = true,
    about = "Request lines: a command as `coapws` takes it, without `coapws` (e.g. `get URI \
             --accept json`); `help COMMAND` for its flags"
)]
struct Line {
    #[command(subcommand)]
    command: LineCommand,
}

#[derive(Subcommand, Debug)]
enum LineCommand {
    /// GET a resource.
    Get(ClientArgs),
    /// POST to a resource.
    Post(ClientArgs),
    /// PUT a resource.
    Put(ClientArgs),
    /// DELETE a resource.
    Delete(ClientArgs),
    /// FETCH a resource (RFC 8132).
    Fetch(ClientArgs),
    /// PATCH a resource (RFC 8132).
    Patch(ClientArgs),
    /// iPATCH a resource (RFC 8132).
    Ipatch(ClientArgs),
    /// End the shell (as does the end of input).
    #[command(alias = "exit")]
    Quit,
}

/// What makes two lines' endpoints differ: lines that agree on it share one endpoint (and so
/// its connections).
#[derive(Clone, PartialEq, Eq, Hash)]
struct EndpointKey {
    ca_cert: Vec<std::path::PathBuf>,
    local_addr: Option<std::net::SocketAddr>,
    max_body_size: usize,
    secure: bool,
}

/// Lines of stdin, read on a thread of their own (a plain one: it must not keep the process
/// from exiting while it waits for input).
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let failed = line.is_err();
            if tx.send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

pub async fn run(_args: ShellArgs, verbose: u8) -> Result<ExitCode> {
    crate::init_logging(verbose, "warn");
    let prompt = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut lines = stdin_lines();
    let mut endpoints: HashMap<EndpointKey, Endpoint> = HashMap::new();
    let mut status = ExitCode::SUCCESS;
    loop {
        if prompt {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "coapws> ").and_then(|()| err.flush());
        }
        let line = tokio::select! {
            l = lines.recv() => l,
            // Ctrl-C at the prompt ends the shell (as at a request it ends that request).
            _ = tokio::signal::ctrl_c() => None,
        };
        let line = match line {
            None => break,
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                eprintln!("error: cannot read stdin: {e}");
                status = ExitCode::FAILURE;
                break;
            }
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(words) = shlex::split(line) else {
            eprintln!("error: unbalanced quotes: {line}");
            status = ExitCode::from(2);
            continue;
        };
        let parsed = match Line::try_parse_from(words) {
            Ok(p) => p,
            Err(e) => {
                // Help is not an error; a bad line is a usage error, as for `coapws`.
                let _ = e.print();
                status = if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
                continue;
            }
        };
        let (method, args) = match parsed.command {
            LineCommand::Quit => break,
            LineCommand::Get(a) => (Code::GET, a),
            LineCommand::Post(a) => (Code::POST, a),
            LineCommand::Put(a) => (Code::PUT, a),
            LineCommand::Delete(a) => (Code::DELETE, a),
            LineCommand::Fetch(a) => (Code::FETCH, a),
            LineCommand::Patch(a) => (Code::PATCH, a),
            LineCommand::Ipatch(a) => (Code::IPATCH, a),
        };
        let run = line_run(&mut endpoints, method, &args);
        let result = tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        status = match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", crate::error_text(&e));
                crate::exit_code_of(&e)
            }
        };
    }
    for endpoint in endpoints.values() {
        endpoint.shutdown().await;
    }
    Ok(status)
}

/// One request line, with the session's endpoint for its settings (made on first use).
async fn line_run(
    endpoints: &mut HashMap<EndpointKey, Endpoint>,
    method: Code,
    args: &ClientArgs,
) -> Result<ExitCode> {
    let request = args.request(method, false)?;
    let config = args.config();
    let key = EndpointKey {
        ca_cert: args.common.ca_cert.clone(),
        local_addr: args.common.local_addr,
        max_body_size: config.max_body_size,
        secure: request.uri.scheme.is_secure(),
    };
    let endpoint = match endpoints.get(&key) {
        Some(e) => e.clone(),
        None => {
            let e = args.common.endpoint(config, key.secure)?;
            endpoints.insert(key, e.clone());
            e
        }
    };
    args.perform(&endpoint, request).await
}
