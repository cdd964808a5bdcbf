//! The bad-input suite: one server listening on WebSocket, TCP and UDP, a healthy client
//! running requests over all three the whole time, and a table of malformed or hostile inputs
//! sent on fresh raw connections (or raw UDP sockets), each with the exact answer the server
//! owes: the Abort (7.05) and its diagnostic and the WebSocket close code or the TCP close for
//! RFC 8323; the HTTP status for the upgrade; RST, 4.xx (Size1 on 4.13) or a silent drop for
//! RFC 7252. At the end the healthy client has seen no error and the server serves a newcomer.
//! Every wait is bounded.

mod common;

use coapws::proto::codec::tcp::StreamDecoder;
use coapws::proto::codec::udp::{self as udp_codec, MessageType, UdpHeader};
use coapws::proto::codec::{tcp as tcp_codec, ws as ws_codec};
use coapws::proto::connection::ConnectionConfig;
use coapws::proto::signaling::Signal;
use coapws::proto::udp::UdpConfig;
use coapws::proto::{BlockValue, Code, Message, OptionNumber, Token};
use coapws::{Endpoint, EndpointConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The bound on one case, whatever it waits for.
const CASE_WAIT: Duration = Duration::from_secs(8);
/// How long "nothing comes" is watched for where that is the expected answer.
const QUIET: Duration = Duration::from_millis(250);
/// The server's Max-Message-Size on the stream transports.
const MAX_MESSAGE: usize = 8192;
/// The server's largest UDP datagram taken.
const MAX_DATAGRAM: usize = 2048;
/// The server's allowance for an HTTP request head (and a TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_millis(600);
/// The server's allowance for a peer's CSM.
const CSM_TIMEOUT: Duration = Duration::from_millis(1500);

fn server_config() -> EndpointConfig {
    EndpointConfig {
        handshake_timeout: HEADER_TIMEOUT,
        connection: ConnectionConfig {
            max_message_size: MAX_MESSAGE as u32,
            csm_timeout: CSM_TIMEOUT,
            ..ConnectionConfig::default()
        },
        udp: UdpConfig {
            max_receive_size: MAX_DATAGRAM,
            ..UdpConfig::default()
        },
        ..EndpointConfig::default()
    }
}

#[derive(Clone, Copy)]
struct Servers {
    ws: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
}

// ---------------------------------------------------------------------------------------------
// The healthy client
// ---------------------------------------------------------------------------------------------

/// A normal client looping GET /hello over WebSocket, TCP and UDP until stopped, counting
/// successes per transport and recording every failure.
struct Healthy {
    stop: Arc<AtomicBool>,
    ok: Arc<[AtomicU64; 3]>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Healthy {
    fn start(s: Servers) -> Healthy {
        let client = Endpoint::client();
        let stop = Arc::new(AtomicBool::new(false));
        let ok: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let errors = Arc::new(Mutex::new(Vec::new()));
        let uris = [
            format!("coap+ws://{}/hello", s.ws),
            format!("coap+tcp://{}/hello", s.tcp),
            format!("coap://{}/hello", s.udp),
        ];
        let tasks = uris
            .into_iter()
            .enumerate()
            .map(|(i, uri)| {
                let (client, stop, ok, errors) =
                    (client.clone(), stop.clone(), ok.clone(), errors.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_secs(5), client.get(&uri)).await {
                            Ok(Ok(r)) if r.code() == Code::CONTENT && !r.payload().is_empty() => {
                                ok[i].fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Ok(r)) => errors.lock().unwrap().push(format!(
                                "{uri}: {} {}",
                                r.code(),
                                r.message.payload_text()
                            )),
                            Ok(Err(e)) => errors.lock().unwrap().push(format!("{uri}: {e}")),
                            Err(_) => errors
                                .lock()
                                .unwrap()
                                .push(format!("{uri}: no answer in 5 s")),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Healthy {
            stop,
            ok,
            errors,
            tasks,
        }
    }

    /// Stops the loops; returns the successes per transport (WS, TCP, UDP) and the errors.
    async fn finish(self) -> ([u64; 3], Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("healthy client stops")
                .expect("healthy client task did not panic");
        }
        let ok = [0, 1, 2].map(|i| self.ok[i].load(Ordering::Relaxed));
        (ok, self.errors.lock().unwrap().clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket frames
// ---------------------------------------------------------------------------------------------

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BIN: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// One WebSocket frame as a client sends it (`masked`) or must not (`!masked`).
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if masked { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        f.push(m | n as u8);
    } else if n < 65536 {
        f.push(m | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if masked {
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A whole binary message in one masked frame.
fn bin(payload: &[u8]) -> Vec<u8> {
    frame(true, OP_BIN, payload, true)
}

/// A server frame: FIN, opcode, payload.
type Frame = (bool, u8, Vec<u8>);

/// A WebSocket connection spoken in raw frames.
struct RawWsConn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawWsConn {
    /// Upgrades a fresh connection (the valid CoAP upgrade request) and checks the 101.
    async fn open(addr: SocketAddr) -> RawWsConn {
        let mut s = common::raw_upgrade_request(addr).await;
        let (head, rest) = read_http_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        RawWsConn { s, buf: rest }
    }

    async fn write(&mut self, bytes: &[u8]) {
        // The server may already have closed (that is what some cases expect).
        let _ = self.s.write_all(bytes).await;
    }

    /// The next server frame; `None` at EOF or reset. Server frames must be unmasked.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buf.is_empty(),
                        "partial frame at close: {:02x?}",
                        self.buf
                    );
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next CoAP message; WebSocket pings and pongs are skipped (and counted in
    /// `pongs`). A close frame is answered and gives `Err(code)`; EOF gives `Err(0)`.
    async fn next_coap(&mut self, pongs: &mut Vec<Vec<u8>>) -> Result<Message, u16> {
        loop {
            match self.next_frame().await {
                Some((true, OP_BIN, p)) => {
                    return Ok(
                        ws_codec::decode(&bytes::Bytes::from(p), &Default::default())
                            .expect("the server sends valid CoAP"),
                    );
                }
                Some((true, OP_PONG, p)) => pongs.push(p),
                Some((true, OP_PING, _)) => {}
                Some((true, OP_CLOSE, p)) => {
                    // Complete the closing handshake so the server closes at once.
                    let echo: Vec<u8> = p.iter().take(2).copied().collect();
                    self.write(&frame(true, OP_CLOSE, &echo, true)).await;
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    return Err(code);
                }
                Some(other) => panic!("unexpected server frame {other:02x?}"),
                None => return Err(0),
            }
        }
    }
}

fn parse_server_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    assert_eq!(b[1] & 0x80, 0, "server frames are unmasked");
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if b.len() < at + len {
        return None;
    }
    Some(((fin, opcode, b[at..at + len].to_vec()), at + len))
}

/// Reads an HTTP response head (through the blank line); returns it and what followed.
/// An empty head means the server closed without answering.
async fn read_http_head(s: &mut (impl AsyncReadExt + Unpin)) -> (String, Vec<u8>) {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..end + 4]).into_owned();
            return (head, all[end + 4..].to_vec());
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&all).into_owned(), Vec::new()),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// What the server owes a stream peer.
#[derive(Clone, Debug)]
enum StreamExpect {
    /// The server's Abort with exactly this diagnostic (and Bad-CSM-Option), then for
    /// WebSocket a close frame with this code, for TCP the close.
    Abort {
        diagnostic: String,
        bad_csm_option: Option<u16>,
        close: u16,
    },
    /// WebSocket only: a close frame with this code and no CoAP message before it (the
    /// WebSocket layer itself refused the frames).
    Close(u16),
    /// A response with this code (and payload, if given) to the token 0x0b; the connection
    /// stays up (a GET /hello on it is answered next). `pong`: a WebSocket Pong with this
    /// payload came too.
    Answer {
        code: Code,
        payload: Option<&'static str>,
        pong: Option<&'static [u8]>,
    },
    /// Nothing: the next CoAP message is the answer to a GET /hello sent after it.
    Ignored,
    /// TCP only: a partial message is waited for (nothing within [`QUIET`]); when we end the
    /// stream, the server closes it without a word.
    Waits,
}

fn abort(diagnostic: &str, close: u16) -> StreamExpect {
    StreamExpect::Abort {
        diagnostic: diagnostic.into(),
        bad_csm_option: None,
        close,
    }
}

fn bad_csm(diagnostic: &str, option: u16) -> StreamExpect {
    StreamExpect::Abort {
        diagnostic: diagnostic.into(),
        bad_csm_option: Some(option),
        close: 1002,
    }
}

fn answer(code: Code, payload: Option<&'static str>) -> StreamExpect {
    StreamExpect::Answer {
        code,
        payload,
        pong: None,
    }
}

#[derive(Clone, Debug)]
enum UdpExpect {
    /// An empty Reset with the datagram's Message ID.
    Rst,
    /// A response of this type and code with the request's Message ID (ACK) or a new one
    /// (NON) and the request's token 0x0b; `size1` if given.
    Answer {
        mtype: MessageType,
        code: Code,
        size1: Option<u32>,
    },
    /// Nothing: the next datagram the peer gets is the answer to a later GET /hello.
    Silent,
}

#[derive(Clone, Debug)]
enum HttpExpect {
    /// This status, and a header line containing this text (case-insensitive) if given.
    Status(u16, Option<&'static str>),
}

#[derive(Clone, Debug)]
enum Action {
    /// On a fresh WebSocket: our CSM first (or not), then these raw bytes (frames).
    Ws {
        csm: bool,
        bytes: Vec<u8>,
        expect: StreamExpect,
    },
    /// On a fresh TCP connection: our CSM first (or not), then these bytes.
    Tcp {
        csm: bool,
        bytes: Vec<u8>,
        expect: StreamExpect,
    },
    /// This HTTP request to the WebSocket listener.
    Http {
        request: Vec<u8>,
        expect: HttpExpect,
    },
    /// A request head sent byte by byte, never finished: the connection is closed within
    /// the header allowance (plus slack), with no upgrade.
    Slowloris,
    /// A TCP peer that sends nothing: the server's CSM, then after the CSM allowance the
    /// Abort, then the close.
    SilentTcp,
    /// This datagram from a fresh UDP socket.
    Udp {
        datagram: Vec<u8>,
        expect: UdpExpect,
    },
}

struct Case {
    name: &'static str,
    action: Action,
}

impl Case {
    fn transport(&self) -> &'static str {
        match self.action {
            Action::Ws { .. } => "ws",
            Action::Tcp { .. } | Action::SilentTcp => "tcp",
            Action::Http { .. } | Action::Slowloris => "http",
            Action::Udp { .. } => "udp",
        }
    }
}

fn ws(name: &'static str, bytes: Vec<u8>, expect: StreamExpect) -> Case {
    Case {
        name,
        action: Action::Ws {
            csm: true,
            bytes,
            expect,
        },
    }
}

/// A WebSocket case of one binary message.
fn ws1(name: &'static str, message: &[u8], expect: StreamExpect) -> Case {
    ws(name, bin(message), expect)
}

fn tcp(name: &'static str, bytes: &[u8], expect: StreamExpect) -> Case {
    Case {
        name,
        action: Action::Tcp {
            csm: true,
            bytes: bytes.to_vec(),
            expect,
        },
    }
}

fn http(name: &'static str, request: &str, expect: HttpExpect) -> Case {
    Case {
        name,
        action: Action::Http {
            request: request.as_bytes().to_vec(),
            expect,
        },
    }
}

fn udp(name: &'static str, datagram: Vec<u8>, expect: UdpExpect) -> Case {
    Case {
        name,
        action: Action::Udp { datagram, expect },
    }
}

/// The valid upgrade request with `extra` header lines (each ending in CRLF), for `path`.
fn upgrade(path: &str, version: &str, protocol: Option<&str>, extra: &str) -> String {
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\
         {protocol}{extra}\r\n"
    )
}

const WK: &str = "/.well-known/coap";
/// What GET /hello of the demo site answers.
const HELLO: &str = "Hello, CoAP over WebSockets!";

/// A request with token 0x0b in WebSocket framing.
fn ws_msg(m: Message) -> Vec<u8> {
    ws_codec::encode(&m.with_token(Token::new(vec![0x0b])))
        .unwrap()
        .to_vec()
}

fn get_hello() -> Message {
    Message::request(Code::GET, "/hello")
}

fn block(num: u32, more: bool, szx: u8) -> Vec<u8> {
    BlockValue { num, more, szx }.encode().to_vec()
}

/// A datagram: `first` byte (version, type, TKL), code, Message ID 0x4242, then `rest`.
fn dgram(first: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut d = vec![first, code, 0x42, 0x42];
    d.extend_from_slice(rest);
    d
}

const CON: u8 = 0x40;
const NON: u8 = 0x50;
const ACK: u8 = 0x60;
const RST: u8 = 0x70;

fn udp_request(mtype: MessageType, m: Message) -> Vec<u8> {
    let header = UdpHeader {
        mtype,
        message_id: 0x4242,
    };
    udp_codec::encode(&header, &m.with_token(Token::new(vec![0x0b])))
        .unwrap()
        .to_vec()
}

fn cases() -> Vec<Case> {
    let fmt = |what: &str| format!("Format error: {what}");
    let big_post =
        |n: usize| ws_msg(Message::request(Code::POST, "/echo").with_payload(vec![b'x'; n]));
    // GET /hello cut into three fragments (binary, continuation, continuation).
    let hello = ws_msg(get_hello());
    let fragmented = [
        frame(false, OP_BIN, &hello[..2], true),
        frame(false, OP_CONT, &hello[2..5], true),
        frame(true, OP_CONT, &hello[5..], true),
    ]
    .concat();
    let with_ping = [
        frame(false, OP_BIN, &hello[..3], true),
        frame(true, OP_PING, b"hi", true),
        frame(true, OP_CONT, &hello[3..], true),
    ]
    .concat();
    let interleaved_data = [
        frame(false, OP_BIN, &hello[..3], true),
        frame(true, OP_BIN, &hello, true),
    ]
    .concat();
    let oversize_fragments = [
        frame(false, OP_BIN, &vec![0u8; 5000], true),
        frame(true, OP_CONT, &vec![0u8; 5000], true),
    ]
    .concat();
    let too_big = format!(
        "message of {} bytes exceeds the limit of {MAX_MESSAGE}",
        MAX_MESSAGE + 1
    );
    let mut too_many_headers = String::new();
    for i in 0..150 {
        too_many_headers.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    let oversize_header = format!("X-Huge: {}\r\n", "a".repeat(500 * 1024));
    let oversize_dgram = |mtype: MessageType, code: Code| {
        let mut m = Message::new(code).with_payload(vec![b'x'; MAX_DATAGRAM + 100]);
        if code.is_request() {
            m.options.push(OptionNumber::URI_PATH, &b"echo"[..]);
        }
        udp_request(mtype, m)
    };
    vec![
        // ---- WebSocket: frames the CoAP layer refuses ----
        ws(
            "ws text frame",
            frame(true, OP_TEXT, b"Hello", true),
            abort("Text frame received", 1003),
        ),
        ws(
            "ws text frame that is not UTF-8",
            frame(true, OP_TEXT, &[0xff, 0xfe, 0x41], true),
            abort("Text frame received", 1003),
        ),
        ws1(
            "ws 0-byte binary message",
            &[],
            abort(&fmt("message truncated in header"), 1007),
        ),
        ws1(
            "ws 1-byte binary message",
            &[0x00],
            abort(&fmt("message truncated in header"), 1007),
        ),
        ws1(
            "ws Len nibble not 0",
            &[0x30, 0x01],
            abort(
                &fmt("Len nibble 3 where WebSocket framing requires 0"),
                1007,
            ),
        ),
        ws1(
            "ws TKL 9 without extended tokens",
            &[0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            abort(&fmt("reserved token length nibble 9"), 1007),
        ),
        ws1(
            "ws TKL 15",
            &[0x0f, 0x01, 1, 2],
            abort(&fmt("reserved token length nibble 15"), 1007),
        ),
        ws1(
            "ws token cut short",
            &[0x04, 0x01, 0xaa],
            abort(&fmt("message truncated in token"), 1007),
        ),
        ws1(
            "ws option delta nibble 15",
            &[0x00, 0x01, 0xf1, 0x00],
            abort(&fmt("option delta nibble 15 is reserved"), 1007),
        ),
        ws1(
            "ws option length nibble 15",
            &[0x00, 0x01, 0xbf, 0x00],
            abort(&fmt("option length nibble 15 is reserved"), 1007),
        ),
        ws1(
            "ws payload marker without payload",
            &[0x01, 0x01, 0x0b, 0xb5, b'h', b'e', b'l', b'l', b'o', 0xff],
            abort(&fmt("payload marker without payload"), 1007),
        ),
        ws1(
            "ws option value past the end",
            &[0x00, 0x01, 0xb5, b'h', b'e'],
            abort(&fmt("message truncated in option value"), 1007),
        ),
        ws1(
            "ws extended option delta cut short (13)",
            &[0x00, 0x01, 0xd0],
            abort(&fmt("message truncated in option delta"), 1007),
        ),
        ws1(
            "ws extended option delta cut short (14)",
            &[0x00, 0x01, 0xe0, 0x01],
            abort(&fmt("message truncated in option delta"), 1007),
        ),
        ws1(
            "ws extended option length cut short",
            &[0x00, 0x01, 0xbd],
            abort(&fmt("message truncated in option length"), 1007),
        ),
        ws1(
            "ws option number above 65535",
            &[0x00, 0x01, 0xe0, 0xff, 0xff],
            abort(&fmt("option number exceeds 65535"), 1007),
        ),
        ws(
            "ws message above Max-Message-Size",
            bin(&big_post(MAX_MESSAGE + 100)),
            abort(&fmt(&too_big), 1009),
        ),
        ws(
            "ws fragments adding up above Max-Message-Size",
            oversize_fragments,
            abort(&fmt(&too_big), 1009),
        ),
        // ---- WebSocket: signaling ----
        Case {
            name: "ws request before CSM",
            action: Action::Ws {
                csm: false,
                bytes: bin(&hello),
                expect: abort("No CSM received first", 1002),
            },
        },
        Case {
            name: "ws unknown critical option in the first CSM",
            action: Action::Ws {
                csm: false,
                bytes: bin(&[0x00, 0xe1, 0xb0]),
                expect: bad_csm(
                    "Bad signaling message: unknown critical option 11 in 7.01 CSM",
                    11,
                ),
            },
        },
        ws1(
            "ws unknown critical option in a second CSM",
            &[0x00, 0xe1, 0xd1, 0x00, 0x00],
            bad_csm(
                "Bad signaling message: unknown critical option 13 in 7.01 CSM",
                13,
            ),
        ),
        ws1(
            "ws CSM Max-Message-Size of 5 bytes",
            &[0x00, 0xe1, 0x25, 1, 2, 3, 4, 5],
            bad_csm(
                "Bad signaling message: bad value for option 2 in 7.01 CSM",
                2,
            ),
        ),
        ws1(
            "ws unassigned signaling code 7.06",
            &[0x00, 0xe6],
            abort(
                "Bad signaling message: unassigned signaling code 7.06",
                1002,
            ),
        ),
        ws1(
            "ws unknown critical option in a Ping",
            &[0x00, 0xe2, 0x30],
            abort(
                "Bad signaling message: unknown critical option 3 in 7.02 Ping",
                1002,
            ),
        ),
        // ---- WebSocket: the WebSocket layer ----
        ws(
            "ws unmasked client frame",
            frame(true, OP_BIN, &hello, false),
            StreamExpect::Close(1002),
        ),
        ws(
            "ws new data frame inside a fragmented message",
            interleaved_data,
            StreamExpect::Close(1002),
        ),
        ws(
            "ws continuation frame without a start",
            frame(true, OP_CONT, &hello, true),
            StreamExpect::Close(1002),
        ),
        ws(
            "ws reserved opcode 3",
            frame(true, 0x3, &hello, true),
            StreamExpect::Close(1002),
        ),
        ws(
            "ws RSV1 bit without an extension",
            {
                let mut f = bin(&hello);
                f[0] |= 0x40;
                f
            },
            StreamExpect::Close(1002),
        ),
        ws(
            "ws fragmented ping",
            frame(false, OP_PING, b"hi", true),
            StreamExpect::Close(1002),
        ),
        // ---- WebSocket: accepted as they are ----
        ws(
            "ws fragmented message is one message",
            fragmented,
            answer(Code::CONTENT, Some(HELLO)),
        ),
        ws(
            "ws ping between fragments",
            with_ping,
            StreamExpect::Answer {
                code: Code::CONTENT,
                payload: Some(HELLO),
                pong: Some(b"hi"),
            },
        ),
        ws1(
            "ws empty CoAP message 00 00",
            &[0x00, 0x00],
            StreamExpect::Ignored,
        ),
        ws1(
            "ws reserved code class 1",
            &[0x00, 0x20],
            StreamExpect::Ignored,
        ),
        ws1(
            "ws response to no request",
            &[0x01, 0x45, 0x77, 0xff, b'x'],
            StreamExpect::Ignored,
        ),
        ws1(
            "ws unknown critical option 65001 in a request",
            &[0x01, 0x01, 0x0b, 0xe0, 0xfc, 0xdc],
            answer(Code::BAD_OPTION, None),
        ),
        ws1(
            "ws Block2 with a huge block number",
            &ws_msg(get_hello().with_option(OptionNumber::BLOCK2, block(0xf_ffff, false, 6))),
            answer(Code::BAD_OPTION, Some("Block2 past the end")),
        ),
        ws1(
            "ws Block1 upload with a gap",
            &ws_msg(
                Message::request(Code::POST, "/echo")
                    .with_option(OptionNumber::BLOCK1, block(3, true, 2))
                    .with_payload(vec![b'x'; 64]),
            ),
            answer(
                Code::REQUEST_ENTITY_INCOMPLETE,
                Some("no upload in progress for this block"),
            ),
        ),
        ws(
            "ws frame header declaring 2^62 bytes",
            {
                let mut f = vec![0x82, 0x80 | 127];
                f.extend_from_slice(&(1u64 << 62).to_be_bytes());
                f.extend_from_slice(&MASK);
                f
            },
            abort(&fmt(&too_big), 1009),
        ),
        ws(
            "ws ping with a 126-byte payload",
            frame(true, OP_PING, &[0u8; 126], true),
            StreamExpect::Close(1002),
        ),
        ws(
            "ws close frame with a 1-byte payload",
            frame(true, OP_CLOSE, &[0x03], true),
            StreamExpect::Close(1002),
        ),
        Case {
            name: "ws half a CSM frame, then silence",
            action: Action::Ws {
                csm: false,
                bytes: bin(&[0x00, 0xe1])[..3].to_vec(),
                expect: abort("No CSM received in time", 1002),
            },
        },
        ws1(
            "ws Block2 option of 4 bytes",
            &ws_msg(get_hello().with_option(OptionNumber::BLOCK2, vec![0, 0, 0, 6])),
            answer(Code::BAD_OPTION, None),
        ),
        ws1(
            "ws Uri-Path not UTF-8",
            &ws_msg(Message::new(Code::GET).with_option(OptionNumber::URI_PATH, vec![0xff, 0xfe])),
            answer(Code::NOT_FOUND, Some("")),
        ),
        ws1(
            "ws Uri-Host twice",
            &ws_msg(
                get_hello()
                    .with_option(OptionNumber::URI_HOST, &b"a"[..])
                    .with_option(OptionNumber::URI_HOST, &b"b"[..]),
            ),
            answer(Code::BAD_OPTION, None),
        ),
        ws1(
            "ws empty Uri-Host",
            &ws_msg(get_hello().with_option(OptionNumber::URI_HOST, &b""[..])),
            answer(Code::BAD_OPTION, None),
        ),
        ws(
            "ws close frame with reserved code 999",
            frame(true, OP_CLOSE, &999u16.to_be_bytes(), true),
            StreamExpect::Close(1002),
        ),
        // ---- TCP ----
        tcp(
            "tcp Len 13 with its extension byte missing",
            &[0xd0],
            StreamExpect::Waits,
        ),
        tcp(
            "tcp Len 14 with one of two extension bytes",
            &[0xe0, 0x00],
            StreamExpect::Waits,
        ),
        tcp(
            "tcp Len 15 with two of four extension bytes",
            &[0xf0, 0x00, 0x00],
            StreamExpect::Waits,
        ),
        tcp("tcp 1 byte then the end", &[0x00], StreamExpect::Waits),
        tcp(
            "tcp huge declared length (Len 15)",
            &[0xf0, 0xff, 0xff, 0xff, 0xff, 0x01],
            abort(
                &fmt(&format!(
                    "message of {} bytes exceeds the limit of {MAX_MESSAGE}",
                    5 + 1 + 0xffff_ffffusize + 65805
                )),
                0,
            ),
        ),
        tcp(
            "tcp declared length just above Max-Message-Size",
            &[0xe0, 0x1e, 0xf4, 0x02],
            abort(
                &fmt(&format!(
                    "message of {} bytes exceeds the limit of {MAX_MESSAGE}",
                    3 + 1 + 0x1ef4 + 269
                )),
                0,
            ),
        ),
        tcp(
            "tcp TKL 9 without extended tokens",
            &[0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            abort(&fmt("reserved token length nibble 9"), 0),
        ),
        tcp(
            "tcp option delta nibble 15",
            &[0x20, 0x01, 0xf1, 0x00],
            abort(&fmt("option delta nibble 15 is reserved"), 0),
        ),
        tcp(
            "tcp option length nibble 15",
            &[0x20, 0x01, 0xbf, 0x00],
            abort(&fmt("option length nibble 15 is reserved"), 0),
        ),
        tcp(
            "tcp payload marker without payload",
            &[0x11, 0x01, 0x0b, 0xff],
            abort(&fmt("payload marker without payload"), 0),
        ),
        tcp(
            "tcp option value past the end of the message",
            &[0x20, 0x01, 0xb5, b'h'],
            abort(&fmt("message truncated in option value"), 0),
        ),
        tcp(
            "tcp extended option delta cut short",
            &[0x10, 0x01, 0xd0],
            abort(&fmt("message truncated in option delta"), 0),
        ),
        Case {
            name: "tcp request before CSM",
            action: Action::Tcp {
                csm: false,
                bytes: tcp_codec::encode(&get_hello().with_token(Token::new(vec![0x0b])))
                    .unwrap()
                    .to_vec(),
                expect: abort("No CSM received first", 0),
            },
        },
        Case {
            name: "tcp unknown critical option in the first CSM",
            action: Action::Tcp {
                csm: false,
                bytes: vec![0x10, 0xe1, 0xb0],
                expect: bad_csm(
                    "Bad signaling message: unknown critical option 11 in 7.01 CSM",
                    11,
                ),
            },
        },
        tcp(
            "tcp unassigned signaling code 7.09",
            &[0x00, 0xe9],
            abort("Bad signaling message: unassigned signaling code 7.09", 0),
        ),
        tcp(
            "tcp unknown critical option 65001 in a request",
            &[0x31, 0x01, 0x0b, 0xe0, 0xfc, 0xdc],
            answer(Code::BAD_OPTION, None),
        ),
        tcp(
            "tcp empty message 00 00",
            &[0x00, 0x00],
            StreamExpect::Ignored,
        ),
        Case {
            name: "tcp silent peer (no CSM)",
            action: Action::SilentTcp,
        },
        // ---- HTTP upgrade ----
        http(
            "http wrong path",
            &upgrade("/coap", "13", Some("coap"), ""),
            HttpExpect::Status(404, None),
        ),
        http(
            "http no subprotocol",
            &upgrade(WK, "13", None, ""),
            HttpExpect::Status(400, None),
        ),
        http(
            "http wrong subprotocol",
            &upgrade(WK, "13", Some("mqtt"), ""),
            HttpExpect::Status(400, None),
        ),
        http(
            "http WebSocket version 8",
            &upgrade(WK, "8", Some("coap"), ""),
            HttpExpect::Status(426, Some("sec-websocket-version: 13")),
        ),
        http(
            "http no Upgrade headers",
            "GET /.well-known/coap HTTP/1.1\r\nHost: localhost\r\n\r\n",
            HttpExpect::Status(426, Some("upgrade: websocket")),
        ),
        http(
            "http bad Sec-WebSocket-Key",
            &upgrade(WK, "13", Some("coap"), "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            HttpExpect::Status(400, None),
        ),
        http(
            "http POST upgrade",
            &upgrade(WK, "13", Some("coap"), "").replacen("GET", "POST", 1),
            HttpExpect::Status(405, Some("allow: get")),
        ),
        http(
            "http foreign Origin",
            &upgrade(WK, "13", Some("coap"), "Origin: https://evil.example\r\n"),
            HttpExpect::Status(403, None),
        ),
        http(
            "http too many headers",
            &upgrade(WK, "13", Some("coap"), &too_many_headers),
            HttpExpect::Status(431, None),
        ),
        http(
            "http oversize header",
            &upgrade(WK, "13", Some("coap"), &oversize_header),
            HttpExpect::Status(431, None),
        ),
        http(
            "http garbage (a TLS ClientHello)",
            "\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\u{0}\u{0}\u{a1}\u{3}\u{3}\r\n\r\n",
            HttpExpect::Status(400, None),
        ),
        http(
            "http no Host header",
            &upgrade(WK, "13", Some("coap"), "").replace("Host: localhost\r\n", ""),
            HttpExpect::Status(400, None),
        ),
        http(
            "http HTTP/1.0 upgrade",
            &upgrade(WK, "13", Some("coap"), "").replacen("HTTP/1.1", "HTTP/1.0", 1),
            HttpExpect::Status(426, None),
        ),
        Case {
            name: "http slowloris",
            action: Action::Slowloris,
        },
        // ---- UDP ----
        udp("udp empty datagram", Vec::new(), UdpExpect::Silent),
        udp("udp 1-byte datagram", vec![CON], UdpExpect::Silent),
        udp(
            "udp version 2 CON",
            dgram(0x80, 0x01, &[]),
            UdpExpect::Silent,
        ),
        udp(
            "udp version 0 CON",
            dgram(0x00, 0x01, &[]),
            UdpExpect::Silent,
        ),
        udp(
            "udp TKL 9 CON",
            dgram(CON | 9, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            UdpExpect::Rst,
        ),
        udp(
            "udp TKL 9 NON",
            dgram(NON | 9, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            UdpExpect::Silent,
        ),
        udp(
            "udp option delta nibble 15 CON",
            dgram(CON, 0x01, &[0xf1, 0]),
            UdpExpect::Rst,
        ),
        udp(
            "udp option length nibble 15 NON",
            dgram(NON, 0x01, &[0xbf, 0]),
            UdpExpect::Silent,
        ),
        udp(
            "udp payload marker without payload CON",
            dgram(CON, 0x01, &[0xff]),
            UdpExpect::Rst,
        ),
        udp(
            "udp option past the end CON",
            dgram(CON, 0x01, &[0xb5, b'h']),
            UdpExpect::Rst,
        ),
        udp(
            "udp empty CON (CoAP ping)",
            dgram(CON, 0x00, &[]),
            UdpExpect::Rst,
        ),
        udp("udp empty NON", dgram(NON, 0x00, &[]), UdpExpect::Silent),
        udp(
            "udp empty CON with a token",
            dgram(CON | 1, 0x00, &[0xaa]),
            UdpExpect::Rst,
        ),
        udp(
            "udp ACK for an unknown Message ID",
            dgram(ACK, 0x00, &[]),
            UdpExpect::Silent,
        ),
        udp(
            "udp RST for an unknown Message ID",
            dgram(RST, 0x00, &[]),
            UdpExpect::Silent,
        ),
        udp(
            "udp RST carrying a response",
            dgram(RST | 1, 0x45, &[0x0b]),
            UdpExpect::Silent,
        ),
        udp(
            "udp ACK carrying a request",
            dgram(ACK | 1, 0x01, &[0x0b]),
            UdpExpect::Silent,
        ),
        udp(
            "udp CON response to no request",
            dgram(CON | 1, 0x45, &[0x0b, 0xff, b'x']),
            UdpExpect::Rst,
        ),
        udp(
            "udp NON response to no request",
            dgram(NON | 1, 0x45, &[0x0b, 0xff, b'x']),
            UdpExpect::Rst,
        ),
        udp(
            "udp signaling code 7.01 CON",
            dgram(CON, 0xe1, &[]),
            UdpExpect::Rst,
        ),
        udp(
            "udp reserved code class 1 NON",
            dgram(NON, 0x20, &[]),
            UdpExpect::Silent,
        ),
        udp(
            "udp oversize CON request",
            oversize_dgram(MessageType::Confirmable, Code::POST),
            UdpExpect::Answer {
                mtype: MessageType::Acknowledgement,
                code: Code::REQUEST_ENTITY_TOO_LARGE,
                size1: Some(MAX_DATAGRAM as u32),
            },
        ),
        udp(
            "udp oversize NON request",
            oversize_dgram(MessageType::NonConfirmable, Code::POST),
            UdpExpect::Answer {
                mtype: MessageType::NonConfirmable,
                code: Code::REQUEST_ENTITY_TOO_LARGE,
                size1: Some(MAX_DATAGRAM as u32),
            },
        ),
        udp(
            "udp oversize CON response",
            oversize_dgram(MessageType::Confirmable, Code::CONTENT),
            UdpExpect::Rst,
        ),
        udp(
            "udp unknown critical option in a CON request",
            udp_request(
                MessageType::Confirmable,
                get_hello().with_option(OptionNumber(65001), &b""[..]),
            ),
            UdpExpect::Answer {
                mtype: MessageType::Acknowledgement,
                code: Code::BAD_OPTION,
                size1: None,
            },
        ),
        udp(
            "udp unknown critical option in a NON request",
            udp_request(
                MessageType::NonConfirmable,
                get_hello().with_option(OptionNumber(65001), &b""[..]),
            ),
            UdpExpect::Answer {
                mtype: MessageType::NonConfirmable,
                code: Code::BAD_OPTION,
                size1: None,
            },
        ),
        udp(
            "udp Block2 with a huge block number",
            udp_request(
                MessageType::Confirmable,
                get_hello().with_option(OptionNumber::BLOCK2, block(0xf_ffff, false, 6)),
            ),
            UdpExpect::Answer {
                mtype: MessageType::Acknowledgement,
                code: Code::BAD_OPTION,
                size1: None,
            },
        ),
        udp(
            "udp Block1 upload with a gap",
            udp_request(
                MessageType::Confirmable,
                Message::request(Code::POST, "/echo")
                    .with_option(OptionNumber::BLOCK1, block(5, true, 2))
                    .with_payload(vec![b'x'; 64]),
            ),
            UdpExpect::Answer {
                mtype: MessageType::Acknowledgement,
                code: Code::REQUEST_ENTITY_INCOMPLETE,
                size1: None,
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

async fn run(case: &Case, s: Servers) -> Result<(), String> {
    match &case.action {
        Action::Ws { csm, bytes, expect } => run_ws(s.ws, *csm, bytes, expect).await,
        Action::Tcp { csm, bytes, expect } => run_tcp(s.tcp, *csm, bytes, expect).await,
        Action::Http { request, expect } => run_http(s.ws, request, expect).await,
        Action::Slowloris => slowloris(s.ws).await,
        Action::SilentTcp => silent_tcp(s.tcp).await,
        Action::Udp { datagram, expect } => run_udp(s.udp, datagram, expect).await,
    }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

async fn run_ws(
    addr: SocketAddr,
    csm: bool,
    bytes: &[u8],
    expect: &StreamExpect,
) -> Result<(), String> {
    let mut c = RawWsConn::open(addr).await;
    let mut pongs = Vec::new();
    if csm {
        c.write(&bin(&[0x00, 0xe1])).await;
    }
    let first = c.next_coap(&mut pongs).await;
    check!(
        matches!(&first, Ok(m) if m.code == Code::CSM),
        "the server's CSM first, got {first:?}"
    );
    c.write(bytes).await;
    match expect {
        StreamExpect::Abort {
            diagnostic,
            bad_csm_option,
            close,
        } => {
            let got = c.next_coap(&mut pongs).await;
            let m = got.map_err(|code| format!("closed ({code}) without an Abort"))?;
            check_abort(&m, diagnostic, *bad_csm_option)?;
            let code = c.next_coap(&mut pongs).await;
            check!(
                code == Err(*close),
                "close code {close} after the Abort, got {code:?}"
            );
            let end = c.next_frame().await;
            check!(end.is_none(), "nothing after the close: {end:?}");
        }
        StreamExpect::Close(close) => {
            let code = c.next_coap(&mut pongs).await;
            check!(
                code == Err(*close),
                "close code {close} and no message, got {code:?}"
            );
        }
        StreamExpect::Answer {
            code,
            payload,
            pong,
        } => {
            let r = c.next_coap(&mut pongs).await;
            let r = r.map_err(|close| format!("closed ({close}) instead of an answer"))?;
            check_answer(&r, *code, *payload)?;
            if let Some(p) = pong {
                check!(pongs == [p.to_vec()], "a Pong {p:02x?}, got {pongs:02x?}");
            }
            ws_still_serves(&mut c).await?;
        }
        StreamExpect::Ignored => ws_still_serves(&mut c).await?,
        StreamExpect::Waits => unreachable!("TCP only"),
    }
    Ok(())
}

/// GET /hello (token 0x0c) on `c`: the next CoAP message is its 2.05.
async fn ws_still_serves(c: &mut RawWsConn) -> Result<(), String> {
    let m = get_hello().with_token(Token::new(vec![0x0c]));
    c.write(&bin(&ws_codec::encode(&m).unwrap())).await;
    let r = c.next_coap(&mut Vec::new()).await;
    check!(
        matches!(&r, Ok(r) if r.code == Code::CONTENT && r.token.as_bytes() == [0x0c]),
        "the connection still serves: GET /hello got {r:?}"
    );
    Ok(())
}

fn check_abort(m: &Message, diagnostic: &str, bad_csm_option: Option<u16>) -> Result<(), String> {
    check!(m.code == Code::ABORT, "an Abort, got {m:?}");
    match Signal::parse(m) {
        Ok(Signal::Abort {
            bad_csm_option: b,
            diagnostic: d,
        }) => {
            check!(
                d == diagnostic,
                "Abort diagnostic {d:?}, expected {diagnostic:?}"
            );
            check!(
                b == bad_csm_option,
                "Bad-CSM-Option {b:?}, expected {bad_csm_option:?}"
            );
        }
        other => return Err(format!("not a valid Abort: {other:?}")),
    }
    Ok(())
}

fn check_answer(r: &Message, code: Code, payload: Option<&str>) -> Result<(), String> {
    check!(
        r.code == code && r.token.as_bytes() == [0x0b],
        "{code} to token 0b, got {} {:?} to {}",
        r.code,
        r.payload_text(),
        r.token
    );
    if let Some(p) = payload {
        check!(
            r.payload_text() == p,
            "payload {p:?}, got {:?}",
            r.payload_text()
        );
    } else {
        check!(!r.payload.is_empty(), "a diagnostic payload with {code}");
    }
    Ok(())
}

/// A raw CoAP-over-TCP connection: bytes in, messages out.
struct RawTcp {
    s: TcpStream,
    d: StreamDecoder,
}

impl RawTcp {
    /// The next message; `None` at EOF or reset (nothing partial may be left).
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.d.next_message().expect("the server sends valid CoAP") {
                return Some(m);
            }
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert_eq!(self.d.buffered(), 0, "partial message at close");
                    return None;
                }
                Ok(n) => self.d.push(&chunk[..n]),
            }
        }
    }
}

async fn run_tcp(
    addr: SocketAddr,
    csm: bool,
    bytes: &[u8],
    expect: &StreamExpect,
) -> Result<(), String> {
    let mut c = RawTcp {
        s: TcpStream::connect(addr).await.unwrap(),
        d: StreamDecoder::new(Default::default()),
    };
    if csm {
        c.s.write_all(&[0x00, 0xe1]).await.unwrap();
    }
    let first = c.next().await;
    check!(
        first.as_ref().is_some_and(|m| m.code == Code::CSM),
        "the server's CSM first, got {first:?}"
    );
    let _ = c.s.write_all(bytes).await;
    match expect {
        StreamExpect::Abort {
            diagnostic,
            bad_csm_option,
            ..
        } => {
            let m = c.next().await.ok_or("closed without an Abort")?;
            check_abort(&m, diagnostic, *bad_csm_option)?;
            let end = c.next().await;
            check!(end.is_none(), "the close after the Abort, got {end:?}");
        }
        StreamExpect::Answer { code, payload, .. } => {
            let r = c.next().await.ok_or("closed instead of an answer")?;
            check_answer(&r, *code, *payload)?;
            tcp_still_serves(&mut c).await?;
        }
        StreamExpect::Ignored => tcp_still_serves(&mut c).await?,
        StreamExpect::Waits => {
            let early = tokio::time::timeout(QUIET, c.next()).await;
            check!(
                early.is_err(),
                "a partial message is waited for, got {early:?}"
            );
            c.s.shutdown().await.unwrap();
            let end = c.next().await;
            check!(
                end.is_none(),
                "closed without a word after our end, got {end:?}"
            );
        }
        StreamExpect::Close(_) => unreachable!("WebSocket only"),
    }
    Ok(())
}

async fn tcp_still_serves(c: &mut RawTcp) -> Result<(), String> {
    let m = get_hello().with_token(Token::new(vec![0x0c]));
    c.s.write_all(&tcp_codec::encode(&m).unwrap())
        .await
        .unwrap();
    let r = c.next().await;
    check!(
        matches!(&r, Some(r) if r.code == Code::CONTENT && r.token.as_bytes() == [0x0c]),
        "the connection still serves: GET /hello got {r:?}"
    );
    Ok(())
}

async fn silent_tcp(addr: SocketAddr) -> Result<(), String> {
    let since = Instant::now();
    let mut c = RawTcp {
        s: TcpStream::connect(addr).await.unwrap(),
        d: StreamDecoder::new(Default::default()),
    };
    let first = c.next().await;
    check!(
        first.as_ref().is_some_and(|m| m.code == Code::CSM),
        "the server's CSM first, got {first:?}"
    );
    let m = c.next().await.ok_or("closed without an Abort")?;
    check_abort(&m, "No CSM received in time", None)?;
    let took = since.elapsed();
    check!(
        took >= CSM_TIMEOUT - Duration::from_millis(100),
        "aborted after {took:?}, before the CSM allowance"
    );
    check!(c.next().await.is_none(), "the close after the Abort");
    Ok(())
}

async fn run_http(addr: SocketAddr, request: &[u8], expect: &HttpExpect) -> Result<(), String> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Written alongside the reading: the server may answer (and close) before it has read all.
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let (head, _) = read_http_head(&mut rd).await;
    writer.abort();
    match expect {
        HttpExpect::Status(status, header) => {
            check!(
                head.starts_with(&format!("HTTP/1.1 {status} "))
                    || head.starts_with(&format!("HTTP/1.0 {status} ")),
                "HTTP {status}, got {head:?}"
            );
            if let Some(h) = header {
                check!(
                    head.to_ascii_lowercase().contains(h),
                    "a header {h:?} in {head:?}"
                );
            }
        }
    }
    Ok(())
}

async fn slowloris(addr: SocketAddr) -> Result<(), String> {
    let since = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = upgrade(WK, "13", Some("coap"), "");
    let mut got = Vec::new();
    // One byte every 50 ms, never the last: the whole head would take seconds.
    for b in head.as_bytes()[..head.len() - 2].iter() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let took = since.elapsed();
    let text = String::from_utf8_lossy(&got);
    check!(
        !text.contains(" 101 "),
        "no upgrade for a slow head: {text}"
    );
    check!(
        took >= HEADER_TIMEOUT - Duration::from_millis(100) && took < HEADER_TIMEOUT * 4,
        "closed after {took:?}, header allowance {HEADER_TIMEOUT:?}"
    );
    Ok(())
}

async fn run_udp(addr: SocketAddr, datagram: &[u8], expect: &UdpExpect) -> Result<(), String> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(datagram, addr).await.unwrap();
    match expect {
        UdpExpect::Rst => {
            let (h, m) = recv_udp(&sock).await;
            check!(
                h.mtype == MessageType::Reset
                    && h.message_id == 0x4242
                    && m == Message::new(Code::EMPTY),
                "an empty RST with MID 0x4242, got {h:?} {m:?}"
            );
        }
        UdpExpect::Answer { mtype, code, size1 } => {
            let (h, m) = recv_udp(&sock).await;
            check!(
                h.mtype == *mtype && m.code == *code && m.token.as_bytes() == [0x0b],
                "{mtype:?} {code} to token 0b, got {h:?} {} {:?} to {}",
                m.code,
                m.payload_text(),
                m.token
            );
            check!(
                (h.message_id == 0x4242) == (*mtype == MessageType::Acknowledgement),
                "an ACK has the request's MID, a NON its own: {h:?}"
            );
            let got = m.options.get_uint(OptionNumber::SIZE1);
            check!(got == *size1, "Size1 {size1:?}, got {got:?}");
        }
        UdpExpect::Silent => {}
    }
    // Nothing else comes: the next datagram is the answer to a GET /hello.
    let header = UdpHeader {
        mtype: MessageType::Confirmable,
        message_id: 0x5151,
    };
    let m = get_hello().with_token(Token::new(vec![0x0c]));
    sock.send_to(&udp_codec::encode(&header, &m).unwrap(), addr)
        .await
        .unwrap();
    let (h, r) = recv_udp(&sock).await;
    check!(
        h.mtype == MessageType::Acknowledgement && h.message_id == 0x5151,
        "nothing but the ACK to a later GET, got {h:?} {r:?}"
    );
    if r.code == Code::EMPTY {
        // Acknowledged first, answered separately (a loaded machine).
        let (_, r2) = recv_udp(&sock).await;
        check!(r2.code == Code::CONTENT, "GET /hello answered, got {r2:?}");
    } else {
        check!(
            r.code == Code::CONTENT && r.token.as_bytes() == [0x0c],
            "GET /hello answered, got {r:?}"
        );
    }
    Ok(())
}

async fn recv_udp(sock: &UdpSocket) -> (UdpHeader, Message) {
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    udp_codec::decode(
        &bytes::Bytes::copy_from_slice(&buf[..n]),
        &Default::default(),
    )
    .expect("the server sends valid CoAP")
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_suite_over_websocket_tcp_and_udp() {
    let server = Endpoint::builder()
        .config(server_config())
        .site(common::test_site())
        .build();
    let any = "127.0.0.1:0".parse().unwrap();
    let s = Servers {
        ws: server.listen_ws(any).await.unwrap(),
        tcp: server.listen_tcp(any).await.unwrap(),
        udp: server.listen_udp(any).await.unwrap(),
    };
    let healthy = Healthy::start(s);
    // The healthy client is under way on all three before the first bad case.
    common::wait_until("the healthy client got going", || {
        healthy.ok.iter().all(|n| n.load(Ordering::Relaxed) > 0)
    })
    .await;

    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case name {:?} twice", c.name);
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let t = Instant::now();
        let outcome = tokio::time::timeout(CASE_WAIT, run(case, s)).await;
        let verdict = match outcome {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => {
                failures.push(format!("{} [{}]: {e}", case.name, case.transport()));
                format!("FAILED: {e}")
            }
            Err(_) => {
                failures.push(format!(
                    "{} [{}]: no outcome within {CASE_WAIT:?}",
                    case.name,
                    case.transport()
                ));
                "HUNG".to_string()
            }
        };
        println!(
            "{:>4} {:<52} {:>6.0?} {verdict}",
            case.transport(),
            case.name,
            t.elapsed()
        );
    }
    let (ok, errors) = healthy.finish().await;
    let per = |t: &str| cases.iter().filter(|c| c.transport() == t).count();
    println!(
        "{} cases (ws {}, tcp {}, http {}, udp {}) in {:?}; healthy client: ws {} tcp {} udp {} requests, {} errors",
        cases.len(),
        per("ws"),
        per("tcp"),
        per("http"),
        per("udp"),
        started.elapsed(),
        ok[0],
        ok[1],
        ok[2],
        errors.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 40, "at least 40 cases, have {}", cases.len());
    for t in ["ws", "tcp", "http", "udp"] {
        assert!(per(t) >= 8, "at least 8 {t} cases, have {}", per(t));
    }
    assert!(
        errors.is_empty(),
        "the healthy client saw errors:\n{}",
        errors.join("\n")
    );
    assert!(
        ok.iter().all(|&n| n >= 50) && ok.iter().sum::<u64>() >= 300,
        "the healthy client kept going on every transport: {ok:?}"
    );
    // And a newcomer is served on every transport.
    let fresh = Endpoint::client();
    for uri in [
        format!("coap+ws://{}/hello", s.ws),
        format!("coap+tcp://{}/hello", s.tcp),
        format!("coap://{}/hello", s.udp),
    ] {
        let r = tokio::time::timeout(common::WAIT, fresh.get(&uri))
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT, "{uri}");
    }
}
