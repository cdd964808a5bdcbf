//! The `coapws` command: a thin shell over the `coapws` library. Parses arguments, runs the
//! chosen command, maps the result to an exit code. `anyhow` lives here only.

mod bench;
mod client;
mod cluster;
mod discover;
mod hints;
mod limits;
mod pretty;
mod proxy;
mod serve;
mod shell;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// CoAP over WebSockets (RFC 8323), with its sibling transports: client and server.
#[derive(Parser, Debug)]
#[command(name = "coapws", version, about, long_about = None)]
struct Cli {
    /// Log more: -v shows sent and received messages, -vv everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a CoAP server: a demo site, or a file server for ROOT.
    Serve(serve::ServeArgs),
    /// Run a CoAP forward proxy (RFC 7252 §5.7) on the listeners of `serve`: no site of its
    /// own, every scheme to every scheme, the targets --allow names (loopback without).
    Proxy(serve::ServeArgs),
    /// GET a resource.
    Get(client::ClientArgs),
    /// POST to a resource.
    Post(client::ClientArgs),
    /// PUT a resource.
    Put(client::ClientArgs),
    /// DELETE a resource.
    Delete(client::ClientArgs),
    /// FETCH a resource (RFC 8132).
    Fetch(client::ClientArgs),
    /// PATCH a resource (RFC 8132).
    Patch(client::ClientArgs),
    /// iPATCH a resource (RFC 8132).
    Ipatch(client::ClientArgs),
    /// Load a resource with requests for a while and print requests/s and latencies.
    Bench(bench::BenchArgs),
    /// Show a server's resources (its /.well-known/core) as a tree.
    Discover(discover::DiscoverArgs),
    /// Run request lines from stdin (`get URI --accept json`, any request command's flags),
    /// reusing connections from line to line; `quit` or the end of input ends it
    /// (aiocoap-client's --interactive). A prompt on a terminal; a failed line does not end it.
    Shell(shell::ShellArgs),
    /// Print a shell completion script (e.g. `coapws completions bash > /etc/bash_completion.d/coapws`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `coapws man | man -l -`.
    Man,
}

/// Writes one line to stdout. A closed stdout (a pipe whose reader went away) is not worth
/// dying for: a server keeps serving, a benchmark still ends with its exit status.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn init_logging(verbose: u8, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        1 => EnvFilter::new(format!("{default},coapws::wire=debug")),
        _ => EnvFilter::new("debug"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use coapws::proto::Code;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                init_logging(cli.verbose, "info");
                serve::run(args, false).await
            }
            Command::Proxy(args) => {
                init_logging(cli.verbose, "info");
                serve::run(args, true).await
            }
            Command::Get(a) => client::run(Code::GET, a, cli.verbose).await,
            Command::Post(a) => client::run(Code::POST, a, cli.verbose).await,
            Command::Put(a) => client::run(Code::PUT, a, cli.verbose).await,
            Command::Delete(a) => client::run(Code::DELETE, a, cli.verbose).await,
            Command::Fetch(a) => client::run(Code::FETCH, a, cli.verbose).await,
            Command::Patch(a) => client::run(Code::PATCH, a, cli.verbose).await,
            Command::Ipatch(a) => client::run(Code::IPATCH, a, cli.verbose).await,
            Command::Bench(a) => {
                init_logging(cli.verbose, "warn");
                bench::run(a).await
            }
            Command::Discover(a) => discover::run(a, cli.verbose).await,
            Command::Shell(a) => shell::run(a, cli.verbose).await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "coapws", &mut out);
                std::io::Write::write_all(&mut std::io::stdout(), &out)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Man => {
                use clap::CommandFactory;
                let mut out = Vec::new();
                clap_mangen::Man::new(Cli::command()).render(&mut out)?;
                std::io::Write::write_all(&mut std::io::stdout(), &out)?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            exit_code_of(&e)
        }
    }
}

/// Exit statuses (as curl has its own for each kind of failure; README, "Exit status"):
/// 0 a 2.xx answer; 1 the command itself failed (arguments, files, a listener); 2 usage
/// (clap); 3 a 4.xx answer; 4 a 5.xx answer; 5 no connection (refused, unreachable, name,
/// handshake); 6 no answer in time; 7 the connection or exchange broke off (closed, aborted,
/// Reset, a block-wise transfer that failed).
pub mod exit {
    /// The server answered 4.xx.
    pub const CLIENT_ERROR: u8 = 3;
    /// The server answered 5.xx.
    pub const SERVER_ERROR: u8 = 4;
    /// No connection could be made.
    pub const NO_CONNECTION: u8 = 5;
    /// No answer in time.
    pub const TIMEOUT: u8 = 6;
    /// The connection or the exchange broke off.
    pub const BROKEN: u8 = 7;

    /// The status for a response code that is not 2.xx.
    pub fn of_code(code: coapws::proto::Code) -> std::process::ExitCode {
        std::process::ExitCode::from(if code.class() == 4 {
            CLIENT_ERROR
        } else {
            SERVER_ERROR
        })
    }
}

fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    use coapws::Error as E;
    let error = e
        .downcast_ref::<coapws::Error>()
        .or_else(|| e.downcast_ref::<hints::Hinted>().map(|h| &h.error));
    let code = match error {
        Some(E::Connect { .. } | E::Handshake { .. } | E::HeldOff { .. }) => exit::NO_CONNECTION,
        Some(E::Timeout) => exit::TIMEOUT,
        Some(E::Connection(_) | E::Reset | E::Block(_) | E::Send(_) | E::ObservationEnded) => {
            exit::BROKEN
        }
        _ => match e.downcast_ref::<coapws::ObserveEnd>() {
            Some(coapws::ObserveEnd::Timeout) => exit::TIMEOUT,
            Some(_) => exit::BROKEN,
            None => 1,
        },
    };
    ExitCode::from(code)
}

/// An error and its causes on one line, each cause once: library errors already name their
/// source in their own text, so a cause already said is not said again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}
