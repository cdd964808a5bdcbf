//! `coapws get|post|put|delete|fetch|patch|ipatch URI`: one request, payload to stdout.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use coapws::proto::Code;
use coapws::proto::Message;
use coapws::proto::Token;
use coapws::proto::content_format::ContentFormat;
use coapws::tls::TlsClientConfig;
use coapws::{Endpoint, EndpointConfig, IncomingRequest, Request, Resource, Site};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of the request commands.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The resource, e.g. coap+ws://localhost:8683/hello (a default `coapws serve`; without a
    /// port coap+ws means 80, coap and coap+tcp 5683)
    uri: String,
    /// Payload: TEXT, @FILE to read it from a file (sent block by block), or @- for stdin.
    #[arg(long)]
    payload: Option<String>,
    /// Write the payload to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the response code and options (by name) before the payload.
    #[arg(short = 'i', long)]
    include: bool,
    /// Write the payload's bytes as they are, also to a terminal (where it is otherwise shown
    /// by Content-Format: JSON indented, CBOR as diagnostic notation, link-format one link per
    /// line; binary refused).
    #[arg(long)]
    raw: bool,
    /// Say nothing on stderr about a non-2.xx answer (the exit status tells it).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Content-Format of the payload: a number or a name (e.g. 0, text/plain, json).
    #[arg(long)]
    content_format: Option<String>,
    /// Accept: the content format wanted, a number or a name.
    #[arg(long)]
    accept: Option<String>,
    /// No-Response bits (RFC 7967): 2 suppresses 2.xx, 8 4.xx, 16 5.xx.
    #[arg(long)]
    no_response: Option<u8>,
    /// Over UDP (coap://), send the request Non-confirmable.
    #[arg(long)]
    non: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Largest block to use both ways, in bytes (16, 32, …, 1024): the response is asked for in
    /// Block2 pieces of at most that size, and uploads go in Block1 pieces no larger (libcoap's
    /// -b). Without it, blocks are as large as the peer takes (BERT where it may).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(16..=1024))]
    block_size: Option<u16>,
    /// Largest response body taken, in bytes (block-wise transfers stop with an error beyond
    /// it).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_body_size: usize,
    /// Observe the resource (RFC 7641): print each notification's payload on its own line
    /// until the observation ends or Ctrl-C, which deregisters.
    #[arg(long)]
    observe: bool,
    /// With --observe: run CMD (with `sh -c`) for each notification, its payload on CMD's
    /// stdin, instead of printing it (aiocoap-client's --observe-exec). One at a time; CMD's
    /// exit status does not end the observation.
    #[arg(long, value_name = "CMD", requires = "observe")]
    observe_exec: Option<String>,
    /// The request's token, 1 to 8 bytes in hex (e.g. cafe0042), instead of one the connection
    /// picks (libcoap's -T, which takes text). Refused while another request has it.
    #[arg(long, value_name = "HEX", value_parser = token_arg)]
    token: Option<Token>,
    /// Send the request COUNT times (1 to 255), a second apart, printing each answer (libcoap's
    /// -G): one connection for all. The exit status is the last answer's.
    #[arg(long, value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..), conflicts_with = "observe")]
    repeat: u8,
}

/// Client flags shared by the request commands, `bench` and `discover`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Also trust the CA certificates in this PEM file (besides the system's roots).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Seconds to wait for each response.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Send the request to this forward proxy (e.g. coap+ws://proxy:8683), naming the URI in
    /// Proxy-Scheme, Uri-Host, Uri-Port, Uri-Path and Uri-Query (RFC 7252 §5.7.2; what
    /// aiocoap-client sends, and all aiocoap-proxy takes).
    #[arg(long, value_name = "PROXY")]
    pub proxy: Option<String>,
    /// With --proxy: name the URI whole in one Proxy-Uri option instead.
    #[arg(long, requires = "proxy")]
    pub proxy_uri: bool,
    /// Any option, as NUMBER=VALUE (repeatable): VALUE is a uint when all digits, bytes when
    /// 0x followed by hex digits, else text; NUMBER= alone is an empty option.
    #[arg(long = "option", value_name = "NUMBER=VALUE")]
    pub options: Vec<String>,
    /// Over coap+tcp, coaps+tcp, coap+ws and coaps+ws: send a CoAP Ping after SECS without
    /// hearing from the server, and give the connection up when none is answered within as
    /// long again (libcoap's -K; for long observations through NATs).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub keepalive: Option<u64>,
    /// Hop-Limit (RFC 8768; 1 to 255): how many proxies the request may pass (libcoap's -H).
    /// Without it none is sent, and proxies assume 16.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub hop_limit: Option<u8>,
    /// Never send Uri-Host or Uri-Port (libcoap's -U): the server assumes its own name, as if
    /// the URI had its address. (With --proxy they name the target, so not with it.)
    #[arg(long, conflicts_with = "proxy")]
    pub no_uri_host: bool,
    /// The local address (and port) to send from, e.g. 192.0.2.7, 0.0.0.0:5000 or
    /// [::1]:5000 (libcoap's -a and -p): UDP sockets and TCP connections are bound to it, and
    /// only servers of its family (IPv4, IPv6) are reached.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = local_addr_arg)]
    pub local_addr: Option<SocketAddr>,
}

impl CommonArgs {
    /// A request of `method` for `uri` with these flags: through the proxy if one is given,
    /// with the extra options and the timeout.
    pub fn request(&self, method: Code, uri: &str) -> Result<Request> {
        let mut request = match &self.proxy {
            Some(proxy) => {
                use coapws::proto::OptionNumber;
                let target = coapws::proto::uri::Uri::parse(uri)?;
                let mut r = Request::new(method, proxy)?;
                if self.proxy_uri {
                    r = r.option(OptionNumber::PROXY_URI, target.to_string().into_bytes());
                } else {
                    r = r.option(OptionNumber::PROXY_SCHEME, target.scheme.to_string());
                    // Every Uri-* option, host and port included: they name the target.
                    for (n, v) in target.request_options_to(None, 0).iter() {
                        r.options.push(n, v.clone());
                    }
                }
                r
            }
            None => Request::new(method, uri)?,
        };
        if let Some(n) = self.hop_limit {
            use coapws::proto::OptionNumber;
            request
                .options
                .set_uint(OptionNumber::HOP_LIMIT, u32::from(n));
        }
        if self.no_uri_host {
            request = request.without_uri_host();
        }
        for o in &self.options {
            let (number, value) = option_arg(o)?;
            request.options.push(number, value);
        }
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            anyhow::bail!("--timeout must be a positive number of seconds");
        }
        Ok(request.timeout(Duration::from_secs_f64(self.timeout)))
    }

    /// A client endpoint for `scheme` with these flags; it answers `/whoami` when the server
    /// asks back (role reversal: the demo's `/ask-back`).
    pub fn endpoint(&self, mut config: EndpointConfig, secure: bool) -> Result<Endpoint> {
        config.client_bind = self.local_addr;
        config.connection.keepalive = self.keepalive.map(Duration::from_secs);
        let whoami = Resource::new().get(|_r: IncomingRequest| async {
            Message::response(
                Code::CONTENT,
                format!("coapws {} client", env!("CARGO_PKG_VERSION")),
            )
            .with_content_format(ContentFormat::TEXT_PLAIN.0)
        });
        let mut builder = Endpoint::builder()
            .config(config)
            .site(Site::new().resource("/whoami", whoami));
        if secure {
            let mut trust = TlsClientConfig::system();
            for ca in &self.ca_cert {
                trust.add_ca_file(ca)?;
            }
            builder = builder.tls_client(trust);
        }
        Ok(builder.build())
    }
}

/// `--token HEX`: 1 to 8 bytes (`0x` may lead).
fn token_arg(arg: &str) -> Result<Token, String> {
    let hex = arg.strip_prefix("0x").unwrap_or(arg);
    if hex.is_empty()
        || hex.len() > 16
        || hex.len() % 2 != 0
        || !hex.bytes().all(|c| c.is_ascii_hexdigit())
    {
        return Err("expected 1 to 8 bytes in hex, e.g. cafe0042".into());
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
        .collect();
    Ok(Token::new(bytes))
}

/// `--local-addr ADDR[:PORT]`: an IP address alone means any port.
fn local_addr_arg(arg: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = arg.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip = arg
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(arg);
    ip.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| "expected an IP address, optionally with :PORT (e.g. 0.0.0.0:5000)".into())
}

/// `NUMBER=VALUE` of `--option`.
fn option_arg(arg: &str) -> Result<(coapws::proto::OptionNumber, Bytes)> {
    let (n, v) = arg
        .split_once('=')
        .with_context(|| format!("--option {arg:?}: expected NUMBER=VALUE"))?;
    let n: u16 = n
        .trim()
        .parse()
        .with_context(|| format!("--option {arg:?}: {n:?} is not an option number"))?;
    let value = if let Some(hex) = v.strip_prefix("0x") {
        if hex.len() % 2 != 0 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            anyhow::bail!("--option {arg:?}: bad hex");
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
            .collect::<Vec<u8>>()
    } else if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
        let x: u32 = v
            .parse()
            .with_context(|| format!("--option {arg:?}: uint too large"))?;
        let b = x.to_be_bytes();
        b[b.iter().position(|&c| c != 0).unwrap_or(4)..].to_vec()
    } else {
        v.as_bytes().to_vec()
    };
    Ok((coapws::proto::OptionNumber(n), Bytes::from(value)))
}

fn content_format(arg: &str) -> Result<u16> {
    Ok(ContentFormat::parse_arg(arg)
        .with_context(|| format!("bad content format {arg:?}"))?
        .0)
}

pub async fn run(method: Code, args: ClientArgs, verbose: u8) -> Result<ExitCode> {
    crate::init_logging(verbose, "warn");
    let request = args.request(method, true)?;
    let endpoint = args
        .common
        .endpoint(args.config(), request.uri.scheme.is_secure())?;
    let result = args.perform(&endpoint, request).await;
    endpoint.shutdown().await;
    result
}

impl ClientArgs {
    /// The request these arguments describe. `stdin`: whether `--payload @-` may read stdin
    /// (not in the shell, whose stdin holds its commands).
    pub fn request(&self, method: Code, stdin: bool) -> Result<Request> {
        let args = self;
        let mut request = args.common.request(method, &args.uri)?;
        if let Some(p) = &args.payload {
            request = match p.strip_prefix('@') {
                Some("-") if !stdin => {
                    anyhow::bail!("--payload @-: stdin holds the shell's commands here")
                }
                Some("-") => {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                        .context("cannot read the payload from stdin")?;
                    request.payload(body)
                }
                // Read block by block as the upload goes, never whole.
                Some(file) => {
                    std::fs::metadata(file)
                        .with_context(|| format!("cannot read payload file {file}"))?;
                    request.payload_file(file)
                }
                None => request.payload(Bytes::copy_from_slice(p.as_bytes())),
            };
        }
        if let Some(cf) = &args.content_format {
            request = request.content_format(content_format(cf)?);
        }
        if let Some(b) = args.block_size {
            request = request.block_size(usize::from(b));
        }
        if let Some(a) = &args.accept {
            request = request.accept(content_format(a)?);
        }
        if args.non {
            if request.uri.scheme.is_reliable() {
                anyhow::bail!(
                    "--non is for coap:// (UDP) only: {} has no message types",
                    request.uri.scheme
                );
            }
            request = request.non();
        }
        if let Some(bits) = args.no_response {
            request = request.no_response(bits);
        }
        if let Some(t) = &args.token {
            request = request.with_token(t.clone());
        }
        Ok(request)
    }

    /// The endpoint settings of these arguments (a client that does not linger).
    pub fn config(&self) -> EndpointConfig {
        let mut config = EndpointConfig::default();
        // A one-shot client should not linger: the server closes on our Release at once.
        config.connection.release_timeout = Duration::from_millis(500);
        config.max_body_size = self.max_body_size;
        // Nobody listening on a UDP port is then an error at once, as over TCP.
        config.udp_connected_clients = true;
        config
    }

    /// Sends `request` with `endpoint` (observing it, or `--repeat` times) and prints the
    /// answers; the exit status of the (last) answer.
    pub async fn perform(&self, endpoint: &Endpoint, request: Request) -> Result<ExitCode> {
        if self.observe {
            return observe(endpoint, request, self.observe_exec.as_deref()).await;
        }
        let mut status = ExitCode::SUCCESS;
        for i in 0..self.repeat {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            status = self.once(endpoint, request.clone()).await?;
        }
        Ok(status)
    }

    /// One request and its answer, printed.
    async fn once(&self, endpoint: &Endpoint, mut request: Request) -> Result<ExitCode> {
        let args = self;
        // A progress bar on a terminal's stderr, for transfers that go block-wise.
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(progress_bar);
        if let Some(bar) = &bar {
            let bar = bar.clone();
            request = request.on_progress(coapws::transfer::Progress::new(move |done, total| {
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
            }));
        }
        let uri = request.uri.clone();
        let result = endpoint.send(request).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let response = match result {
            Ok(r) => r,
            Err(coapws::Error::NoResponse) => return Ok(ExitCode::SUCCESS),
            Err(
                e @ coapws::Error::Block(coapws::proto::blockwise::BlockError::TooLarge { .. }),
            ) => {
                anyhow::bail!("{e} (raise it with --max-body-size)")
            }
            Err(e) => return Err(crate::hints::request_error(e, &uri)),
        };
        let m = &response.message;
        if args.include {
            // Coloured by class on a terminal that has colour (NO_COLOR turns it off).
            let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none()
                && std::env::var("TERM").is_ok_and(|t| t != "dumb");
            let code = m.code.to_string();
            let mut head = if colour {
                let c = match m.code.class() {
                    2 => "32",
                    4 => "33",
                    _ => "31",
                };
                format!("\x1b[1;{c}m{code}\x1b[0m")
            } else {
                code
            };
            for (n, v) in m.options.iter() {
                let line = format!("{n}: {}", coapws::proto::option::value_text(n, v));
                if colour {
                    head.push_str(&format!("\n\x1b[2m{line}\x1b[0m"));
                } else {
                    head.push('\n');
                    head.push_str(&line);
                }
            }
            crate::say(&head);
        }
        if m.code.is_success() {
            match &args.output {
                Some(file) => std::fs::write(file, &m.payload)
                    .with_context(|| format!("cannot write {}", file.display()))?,
                None => {
                    let mut out = std::io::stdout().lock();
                    if std::io::IsTerminal::is_terminal(&out) && !args.raw {
                        let shown =
                            crate::pretty::for_terminal(&m.payload, m.options.content_format())
                                .map_err(|why| {
                                    anyhow::anyhow!("{why}: use -o FILE, a pipe, or --raw")
                                })?;
                        out.write_all(shown.as_bytes())?;
                        // The prompt should not follow the payload on its line.
                        if !shown.ends_with('\n') {
                            out.write_all(b"\n")?;
                        }
                    } else {
                        out.write_all(&m.payload)?;
                    }
                    out.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        } else {
            if !args.quiet {
                if m.payload.is_empty() {
                    eprintln!("{}", m.code);
                } else {
                    eprintln!("{}: {}", m.code, m.payload_text());
                }
            }
            Ok(crate::exit::of_code(m.code))
        }
    }
}

/// `--observe`: one line per notification on stdout (or `exec` run with it on its stdin),
/// until the end or Ctrl-C.
async fn observe(endpoint: &Endpoint, request: Request, exec: Option<&str>) -> Result<ExitCode> {
    use coapws::ObserveEnd;
    let mut observation = endpoint.observe(request).await?;
    let mut first = true;
    // One Ctrl-C listener for the whole run: once tokio handles SIGINT, a signal that comes
    // while no listener exists (between two notifications) would be lost.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = tokio::select! {
            n = observation.next() => n,
            _ = &mut ctrl_c => {
                // Deregister before leaving (RFC 7641 §3.6); the answer does not matter.
                let _ = observation.cancel().await;
                return Ok(ExitCode::SUCCESS);
            }
        };
        match next {
            Ok(n) => {
                first = false;
                deliver(&n.message.payload, exec).await?;
            }
            Err(ObserveEnd::Deregistered(r)) => {
                // A resource that is not observable answers once, without Observe.
                if first {
                    deliver(&r.message.payload, exec).await?;
                    eprintln!("the resource is not observable: answered once");
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(ObserveEnd::Ended(r)) => {
                let m = &r.message;
                if m.payload.is_empty() {
                    eprintln!("{}", m.code);
                } else {
                    eprintln!("{}: {}", m.code, m.payload_text());
                }
                return Ok(crate::exit::of_code(m.code));
            }
            Err(end) => return Err(end.into()),
        }
    }
}

/// A notification's payload: printed on its own line, or given to `sh -c CMD` on its stdin
/// (`--observe-exec`), waiting for CMD to finish. CMD's exit status is only logged; that it
/// cannot be started at all is an error.
async fn deliver(payload: &Bytes, exec: Option<&str>) -> Result<()> {
    let Some(cmd) = exec else {
        return print_line(payload);
    };
    let (cmd, payload) = (cmd.to_owned(), payload.clone());
    let status = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin (or stops early) is fine.
            match stdin.write_all(&payload) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        child.wait()
    })
    .await?
    .context("--observe-exec: cannot run sh")?;
    if !status.success() {
        tracing::info!(%status, "--observe-exec command failed; observing on");
    }
    Ok(())
}

fn print_line(payload: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(payload)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
