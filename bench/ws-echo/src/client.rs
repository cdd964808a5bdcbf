//! Minimal raw WebSocket client: hand-written upgrade request, pre-masked
//! binary frames, exact-length reads. Identical for every server, cheap
//! enough that it is not the bottleneck.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nOrigin: http://localhost\r\n{extra}\r\n"
    )
}

pub const GOOD_EXTRA: &str = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n";

/// Sends `req`, reads the response head. Returns (status, head text, bytes read past the head).
pub async fn handshake(s: &mut TcpStream, req: &str) -> io::Result<(u16, String, Vec<u8>)> {
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 512];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            if buf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed without response"));
            }
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head, buf[end..].to_vec()))
}

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (status, head, rest) = handshake(&mut s, &request(addr, crate::servers::PATH, GOOD_EXTRA)).await?;
    if status != 101 || !head.to_ascii_lowercase().contains("sec-websocket-protocol: coap") || !rest.is_empty() {
        return Err(io::Error::other(format!("bad handshake: {head:?}")));
    }
    Ok(s)
}

/// Client->server frame, masked with a fixed non-zero key.
pub fn masked_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(if fin { 0x80 } else { 0 } | opcode);
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Server->client (unmasked) frame as we expect it back.
pub fn unmasked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n <= 0xffff {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Reads one server frame: (fin, opcode, payload).
pub async fn read_frame(s: &mut TcpStream) -> io::Result<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p).await?;
    Ok((h[0] & 0x80 != 0, h[0] & 0x0f, p))
}

pub struct ConnResult {
    pub rtts_ns: Vec<u32>,
}

/// One connection's ping-pong loop: send one message, await its echo.
/// RTTs are only recorded between `measure_from` and `until`.
pub async fn pingpong(
    mut s: TcpStream,
    size: usize,
    measure_from: Instant,
    until: Instant,
) -> io::Result<ConnResult> {
    let payload: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let out = masked_frame(0x2, true, &payload);
    let expect = unmasked_frame(0x2, &payload);
    let mut inbuf = vec![0u8; expect.len()];
    let mut rtts = Vec::with_capacity(1 << 16);
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        s.write_all(&out).await?;
        s.read_exact(&mut inbuf).await?;
        let t1 = Instant::now();
        if inbuf != expect {
            return Err(io::Error::other("echo mismatch"));
        }
        if t0 >= measure_from {
            rtts.push((t1 - t0).as_nanos().min(u32::MAX as u128) as u32);
        }
    }
    // polite close
    let _ = s.write_all(&masked_frame(0x8, true, &1000u16.to_be_bytes())).await;
    let _ = tokio::time::timeout(Duration::from_millis(200), read_frame(&mut s)).await;
    Ok(ConnResult { rtts_ns: rtts })
}
