//! CoAP URIs of every scheme (RFC 7252 §6, RFC 8323 §8): parsing, composing, and the mapping
//! to and from the Uri-Host, Uri-Port, Uri-Path and Uri-Query options.
//!
//! A [`Uri`] holds *decoded* components: path segments and query items are exactly the values
//! that travel in Uri-Path and Uri-Query options. [`Uri::parse`] decodes percent-encoding and
//! resolves dot-segments; [`Display`](fmt::Display) encodes again, so that parsing what is
//! displayed gives the same `Uri` back. Nothing here panics on any input.

use crate::option::{OptionNumber, Options, decode_uint, encode_uint};
use bytes::Bytes;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a URI, host or set of URI options was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The text does not start with a syntactically valid scheme followed by `:`.
    #[error("not an absolute URI: no scheme")]
    MissingScheme,
    /// The scheme is not one of the CoAP schemes.
    #[error(
        "unsupported scheme {0:?} (expected coap, coaps, coap+tcp, coaps+tcp, coap+ws or coaps+ws)"
    )]
    UnknownScheme(String),
    /// The scheme is not followed by `//` and an authority.
    #[error("URI has no authority (expected \"//host\" after the scheme)")]
    MissingAuthority,
    /// The host is empty.
    #[error("URI has an empty host")]
    EmptyHost,
    /// The authority has a user-information part (`user@host`), which CoAP URIs do not allow.
    #[error("user information is not allowed in a CoAP URI")]
    UserInfo,
    /// A bracketed IP literal that is not a valid IPv6 address (zone IDs and IPvFuture are not
    /// supported), or text after the closing bracket that is not a port.
    #[error("invalid IP literal {0:?}")]
    InvalidIpLiteral(String),
    /// The port is not a decimal number up to 65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The URI has a fragment (`#...`), which CoAP URIs do not allow.
    #[error("fragments are not allowed in a CoAP URI")]
    Fragment,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding in the {component}")]
    InvalidPercentEncoding {
        /// The URI component: "host", "path" or "query".
        component: &'static str,
    },
    /// A character that the component does not allow unencoded.
    #[error("character {ch:?} is not allowed in the {component}")]
    InvalidCharacter {
        /// The offending character.
        ch: char,
        /// The URI component: "host", "path" or "query".
        component: &'static str,
    },
    /// Percent-decoded text or an option value that is not UTF-8.
    #[error("the {component} is not valid UTF-8")]
    InvalidUtf8 {
        /// The URI component: "host", "path" or "query".
        component: &'static str,
    },
    /// A Uri-Path option whose value is `.` or `..` (RFC 7252 §5.10.1 forbids them).
    #[error("Uri-Path option is a dot-segment")]
    DotSegment,
    /// An option value that cannot be interpreted (e.g. a Uri-Port longer than 2 bytes).
    #[error("invalid {0} option value")]
    InvalidOption(OptionNumber),
}

/// The six CoAP URI schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `coap`: CoAP over UDP.
    Coap,
    /// `coaps`: CoAP over DTLS.
    Coaps,
    /// `coap+tcp`: CoAP over TCP (RFC 8323).
    CoapTcp,
    /// `coaps+tcp`: CoAP over TLS (RFC 8323).
    CoapsTcp,
    /// `coap+ws`: CoAP over WebSockets (RFC 8323).
    CoapWs,
    /// `coaps+ws`: CoAP over secure WebSockets (RFC 8323).
    CoapsWs,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 6] = [
        Scheme::Coap,
        Scheme::Coaps,
        Scheme::CoapTcp,
        Scheme::CoapsTcp,
        Scheme::CoapWs,
        Scheme::CoapsWs,
    ];

    /// The scheme name in lowercase, e.g. `coap+ws`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Coap => "coap",
            Scheme::Coaps => "coaps",
            Scheme::CoapTcp => "coap+tcp",
            Scheme::CoapsTcp => "coaps+tcp",
            Scheme::CoapWs => "coap+ws",
            Scheme::CoapsWs => "coaps+ws",
        }
    }

    /// Parses a scheme name, ignoring ASCII case.
    pub fn parse(name: &str) -> Result<Scheme, UriError> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UriError::UnknownScheme(name.to_owned()))
    }

    /// The port used when a URI gives none: 5683 (coap, coap+tcp), 5684 (coaps, coaps+tcp),
    /// 80 (coap+ws), 443 (coaps+ws).
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Coap | Scheme::CoapTcp => 5683,
            Scheme::Coaps | Scheme::CoapsTcp => 5684,
            Scheme::CoapWs => 80,
            Scheme::CoapsWs => 443,
        }
    }

    /// True for the schemes secured by DTLS or TLS.
    pub const fn is_secure(self) -> bool {
        matches!(self, Scheme::Coaps | Scheme::CoapsTcp | Scheme::CoapsWs)
    }

    /// True for the reliable transports (TCP, TLS and WebSockets).
    pub const fn is_reliable(self) -> bool {
        !matches!(self, Scheme::Coap | Scheme::Coaps)
    }

    /// True for `coap+ws` and `coaps+ws`.
    pub const fn is_websocket(self) -> bool {
        matches!(self, Scheme::CoapWs | Scheme::CoapsWs)
    }
}

impl FromStr for Scheme {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Scheme, UriError> {
        Scheme::parse(s)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host of a URI: a registered name or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A registered name, percent-decoded and in ASCII lowercase (e.g. `example.com`).
    Name(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets in a URI).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses the host component as written in a URI: `[v6]`, dotted IPv4 or a reg-name with
    /// percent-encoding. A reg-name that decodes to an IP address is taken as that address.
    pub fn parse(text: &str) -> Result<Host, UriError> {
        if text.is_empty() {
            return Err(UriError::EmptyHost);
        }
        if text.starts_with('[') {
            return parse_ip_literal(text);
        }
        if let Ok(a) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(a));
        }
        let name = percent_decode(text, is_reg_name_char, "host")?;
        Host::from_option_value(&name)
    }

    /// Parses an authority `host[:port]` (as in a URI or an HTTP `Host` header). An empty port
    /// after `:` counts as absent.
    pub fn parse_with_port(authority: &str) -> Result<(Host, Option<u16>), UriError> {
        let (host_text, port_text) = if authority.starts_with('[') {
            match authority.find(']') {
                Some(end) => {
                    let (h, rest) = authority.split_at(end + 1);
                    match rest.strip_prefix(':') {
                        Some(p) => (h, Some(p)),
                        None if rest.is_empty() => (h, None),
                        None => return Err(UriError::InvalidIpLiteral(authority.to_owned())),
                    }
                }
                None => return Err(UriError::InvalidIpLiteral(authority.to_owned())),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host = Host::parse(host_text)?;
        let port = match port_text {
            None | Some("") => None,
            Some(p) => Some(parse_port(p)?),
        };
        Ok((host, port))
    }

    /// Interprets a Uri-Host option value (already decoded, RFC 7252 §6.5): `[v6]`, a bare
    /// IPv6 or IPv4 address, or else a name, which is lowercased (ASCII only).
    pub fn from_option_value(value: &str) -> Result<Host, UriError> {
        if value.is_empty() {
            return Err(UriError::EmptyHost);
        }
        if value.starts_with('[') {
            return parse_ip_literal(value);
        }
        if let Ok(a) = value.parse::<IpAddr>() {
            return Ok(a.into());
        }
        Ok(Host::Name(value.to_ascii_lowercase()))
    }

    /// True for IPv4 and IPv6 addresses.
    pub fn is_ip_literal(&self) -> bool {
        !matches!(self, Host::Name(_))
    }

    /// The host as written in a URI authority: IPv6 in brackets, names percent-encoded where
    /// needed.
    pub fn authority_form(&self) -> String {
        match self {
            Host::Name(n) => {
                let mut s = String::with_capacity(n.len());
                percent_encode_into(&mut s, n, is_reg_name_char);
                s
            }
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => format!("[{a}]"),
        }
    }

    /// The value of a Uri-Host option naming this host: the name, dotted IPv4, or IPv6 in
    /// brackets (the IP-literal form of RFC 3986).
    pub fn option_value(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => format!("[{a}]"),
        }
    }
}

/// Shows the decoded name or the address, IPv6 without brackets; see [`Host::authority_form`].
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv4(a) => a.fmt(f),
            Host::Ipv6(a) => a.fmt(f),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(a: IpAddr) -> Host {
        match a {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl From<Ipv4Addr> for Host {
    fn from(a: Ipv4Addr) -> Host {
        Host::Ipv4(a)
    }
}

impl From<Ipv6Addr> for Host {
    fn from(a: Ipv6Addr) -> Host {
        Host::Ipv6(a)
    }
}

/// A CoAP URI with decoded components.
///
/// `path` holds Uri-Path values and `query` Uri-Query values. An empty path and the path `/`
/// are the same resource and both parse to no segments; a trailing slash gives a last empty
/// segment (`/a/` is `["a", ""]`), as in RFC 7252 §6.4.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Uri {
    /// The scheme.
    pub scheme: Scheme,
    /// The host.
    pub host: Host,
    /// The port as written; `None` when the URI gives none (see [`Uri::port_or_default`]).
    pub port: Option<u16>,
    /// Decoded path segments.
    pub path: Vec<String>,
    /// Decoded query items (the parts between `&`).
    pub query: Vec<String>,
}

impl Uri {
    /// A URI for the root resource of `host` with the default port.
    pub fn new(scheme: Scheme, host: Host) -> Uri {
        Uri {
            scheme,
            host,
            port: None,
            path: Vec::new(),
            query: Vec::new(),
        }
    }

    /// Parses an absolute CoAP URI (RFC 7252 §6.4 steps 1–4 and 8–9 of the decomposition).
    ///
    /// The scheme must be a CoAP scheme (any case); the authority must have a non-empty host
    /// and no user information; a fragment is an error. Path segments and query items are
    /// percent-decoded and must be UTF-8. Characters outside RFC 3986 `pchar` (path) or
    /// `pchar / "/" / "?"` (query) must be percent-encoded. Dot-segments are removed (RFC 3986
    /// §5.2.4); a segment counts as a dot-segment when it *decodes* to `.` or `..`, so `%2E%2E`
    /// never reaches Uri-Path.
    pub fn parse(text: &str) -> Result<Uri, UriError> {
        let (scheme_text, rest) = text.split_once(':').ok_or(UriError::MissingScheme)?;
        if !is_scheme_syntax(scheme_text) {
            return Err(UriError::MissingScheme);
        }
        let scheme = Scheme::parse(scheme_text)?;
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        let rest = rest.strip_prefix("//").ok_or(UriError::MissingAuthority)?;
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(UriError::UserInfo);
        }
        let (host, port) = Host::parse_with_port(authority)?;
        let (path, query) = parse_path_and_query(path_and_query)?;
        Ok(Uri {
            scheme,
            host,
            port,
            path,
            query,
        })
    }

    /// The port, or the scheme's default port when the URI gives none.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// `host[:port]` with IPv6 in brackets; the port is left out when it is the default.
    pub fn authority(&self) -> String {
        let mut s = self.host.authority_form();
        match self.port {
            Some(p) if p != self.scheme.default_port() => {
                s.push(':');
                s.push_str(&p.to_string());
            }
            _ => {}
        }
        s
    }

    /// The percent-encoded path, `/` when there are no segments (e.g. `/a/b`, `/a%2Fb`).
    pub fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            s.push('/');
            percent_encode_into(&mut s, seg, is_pchar);
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }

    /// A copy with path and query replaced by `reference`, a percent-encoded `path[?query]`
    /// (the leading `/` is optional; without `?` the query becomes empty).
    pub fn with_path(&self, reference: &str) -> Result<Uri, UriError> {
        if reference.contains('#') {
            return Err(UriError::Fragment);
        }
        let (path, query) = if reference.starts_with('/') || reference.starts_with('?') {
            parse_path_and_query(reference)?
        } else {
            parse_path_and_query(&format!("/{reference}"))?
        };
        Ok(Uri {
            path,
            query,
            ..self.clone()
        })
    }

    /// The URL of the WebSocket endpoint for `coap+ws`/`coaps+ws` URIs (RFC 8323 §8.3):
    /// `ws://authority/.well-known/coap` or `wss://...`, the port left out when it is 80/443.
    /// `None` for the other schemes.
    pub fn websocket_url(&self) -> Option<String> {
        let prefix = match self.scheme {
            Scheme::CoapWs => "ws://",
            Scheme::CoapsWs => "wss://",
            _ => return None,
        };
        Some(format!("{prefix}{}/.well-known/coap", self.authority()))
    }

    /// The Uri-* options of a request sent straight to this URI's host and port.
    ///
    /// This is RFC 7252 §6.4 (and RFC 8323 §8) with the destination being the URI's own host
    /// and port: Uri-Port is never needed (the destination port is the URI's port), and
    /// Uri-Host is added only for a reg-name on UDP, DTLS, TCP and TLS. On WebSockets the
    /// HTTP `Host` header already carries the authority and is the default Uri-Host (RFC 8323
    /// §8.5), so no Uri-Host is added. Use [`Uri::request_options_to`] when the request goes
    /// elsewhere (a proxy, or a connection whose defaults differ).
    ///
    /// Option lengths are not checked here (a segment over 255 bytes makes an invalid
    /// Uri-Path); see [`Options::check`].
    pub fn request_options(&self) -> Options {
        let implied_host = if self.scheme.is_websocket() || self.host.is_ip_literal() {
            Some(&self.host)
        } else {
            None
        };
        self.request_options_to(implied_host, self.port_or_default())
    }

    /// The Uri-* options of a request sent to an endpoint that, without options, would assume
    /// host `default_host` (`None`: no name is implied, only the destination address) and port
    /// `default_port`. Uri-Host is added when the host differs from `default_host`, Uri-Port
    /// when the port differs from `default_port`, then one Uri-Path per segment and one
    /// Uri-Query per item.
    pub fn request_options_to(&self, default_host: Option<&Host>, default_port: u16) -> Options {
        let mut o = Options::new();
        if default_host != Some(&self.host) {
            o.push(OptionNumber::URI_HOST, self.host.option_value());
        }
        let port = self.port_or_default();
        if port != default_port {
            o.push(OptionNumber::URI_PORT, encode_uint(u32::from(port)));
        }
        for seg in &self.path {
            o.push(
                OptionNumber::URI_PATH,
                Bytes::copy_from_slice(seg.as_bytes()),
            );
        }
        for item in &self.query {
            o.push(
                OptionNumber::URI_QUERY,
                Bytes::copy_from_slice(item.as_bytes()),
            );
        }
        o
    }

    /// Reconstructs a request's URI on the receiving side (RFC 7252 §6.5, RFC 8323 §8).
    ///
    /// `default_host` and `default_port` are what the transport implies: the destination IP
    /// address and port, the TLS SNI name, or the WebSocket `Host` header. Uri-Host and
    /// Uri-Port override them. The port is stored as `None` when it is the scheme's default.
    /// A single empty Uri-Path is the same as none and gives no segments. Uri-Path values `.`
    /// and `..`, values that are not UTF-8 and a Uri-Port longer than 2 bytes are errors.
    pub fn from_options(
        scheme: Scheme,
        default_host: &Host,
        default_port: u16,
        options: &Options,
    ) -> Result<Uri, UriError> {
        let host = match options.get(OptionNumber::URI_HOST) {
            Some(v) => Host::from_option_value(utf8(v, "host")?)?,
            None => default_host.clone(),
        };
        let port = match options.get(OptionNumber::URI_PORT) {
            Some(v) if v.len() <= 2 => decode_uint(v)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(UriError::InvalidOption(OptionNumber::URI_PORT))?,
            Some(_) => return Err(UriError::InvalidOption(OptionNumber::URI_PORT)),
            None => default_port,
        };
        let mut path = Vec::new();
        for v in options.get_all(OptionNumber::URI_PATH) {
            let seg = utf8(v, "path")?;
            if seg == "." || seg == ".." {
                return Err(UriError::DotSegment);
            }
            path.push(seg.to_owned());
        }
        if path.len() == 1 && path[0].is_empty() {
            path.clear();
        }
        let mut query = Vec::new();
        for v in options.get_all(OptionNumber::URI_QUERY) {
            query.push(utf8(v, "query")?.to_owned());
        }
        Ok(Uri {
            scheme,
            host,
            port: (port != scheme.default_port()).then_some(port),
            path,
            query,
        })
    }
}

impl FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

/// Composes the URI with percent-encoding; the port is shown whenever it is `Some`.
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host.authority_form())?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(&self.path_string())?;
        for (i, item) in self.query.iter().enumerate() {
            let mut s = String::with_capacity(item.len() + 1);
            s.push(if i == 0 { '?' } else { '&' });
            percent_encode_into(&mut s, item, |b| is_query_char(b) && b != b'&');
            f.write_str(&s)?;
        }
        Ok(())
    }
}

fn utf8<'a>(v: &'a [u8], component: &'static str) -> Result<&'a str, UriError> {
    std::str::from_utf8(v).map_err(|_| UriError::InvalidUtf8 { component })
}

fn parse_ip_literal(text: &str) -> Result<Host, UriError> {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(Host::Ipv6)
        .ok_or_else(|| UriError::InvalidIpLiteral(text.to_owned()))
}

fn parse_port(text: &str) -> Result<u16, UriError> {
    let bad = || UriError::InvalidPort(text.to_owned());
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 5 {
        return Err(bad());
    }
    if digits.is_empty() {
        return Ok(0);
    }
    digits.parse::<u16>().map_err(|_| bad())
}

/// Splits `path-abempty [ "?" query ]` into decoded segments and items.
fn parse_path_and_query(text: &str) -> Result<(Vec<String>, Vec<String>), UriError> {
    let (path_text, query_text) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let mut path: Vec<String> = Vec::new();
    if let Some(segments) = path_text.strip_prefix('/') {
        let mut iter = segments.split('/').peekable();
        while let Some(raw) = iter.next() {
            let seg = percent_decode(raw, is_pchar, "path")?;
            let last = iter.peek().is_none();
            match seg.as_str() {
                "." => {}
                ".." => {
                    path.pop();
                }
                _ => {
                    path.push(seg);
                    continue;
                }
            }
            // A dot-segment at the end leaves a trailing slash (RFC 3986 §5.2.4).
            if last {
                path.push(String::new());
            }
        }
    } else if !path_text.is_empty() {
        // Only reachable through `with_path`; `Uri::parse` always splits at `/` or `?`.
        return Err(UriError::MissingAuthority);
    }
    if path.len() == 1 && path[0].is_empty() {
        path.clear();
    }
    let mut query = Vec::new();
    if let Some(q) = query_text.filter(|q| !q.is_empty()) {
        for raw in q.split('&') {
            query.push(percent_decode(raw, is_query_char, "query")?);
        }
    }
    Ok((path, query))
}

fn is_scheme_syntax(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_reg_name_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b)
}

fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@'
}

fn is_query_char(b: u8) -> bool {
    is_pchar(b) || b == b'/' || b == b'?'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; every other byte must satisfy `allowed`. The result must be UTF-8.
fn percent_decode(
    text: &str,
    allowed: fn(u8) -> bool,
    component: &'static str,
) -> Result<String, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(UriError::InvalidPercentEncoding { component }),
            }
            i += 3;
        } else if b.is_ascii() && allowed(b) {
            out.push(b);
            i += 1;
        } else {
            // Only ASCII has been consumed so far, so `i` is on a character boundary.
            let ch = text
                .get(i..)
                .and_then(|t| t.chars().next())
                .unwrap_or('\u{FFFD}');
            return Err(UriError::InvalidCharacter { ch, component });
        }
    }
    String::from_utf8(out).map_err(|_| UriError::InvalidUtf8 { component })
}

/// Appends `text`, percent-encoding (uppercase hex) every byte that is not ASCII in `keep`.
fn percent_encode_into(out: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii() && keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(n: &str) -> Host {
        Host::Name(n.to_owned())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn opts(o: &Options) -> Vec<(u16, Vec<u8>)> {
        o.iter().map(|(n, v)| (n.0, v.to_vec())).collect()
    }

    #[test]
    fn schemes() {
        for s in Scheme::ALL {
            assert_eq!(Scheme::parse(s.as_str()), Ok(s));
            assert_eq!(s.as_str().to_uppercase().parse::<Scheme>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        let ports: Vec<u16> = Scheme::ALL.iter().map(|s| s.default_port()).collect();
        assert_eq!(ports, [5683, 5684, 5683, 5684, 80, 443]);
        assert!(Scheme::CoapsWs.is_secure() && Scheme::CoapsWs.is_websocket());
        assert!(!Scheme::CoapTcp.is_secure() && Scheme::CoapTcp.is_reliable());
        assert!(!Scheme::Coaps.is_reliable() && !Scheme::CoapTcp.is_websocket());
        assert_eq!(
            Scheme::parse("http"),
            Err(UriError::UnknownScheme("http".into()))
        );
    }

    #[test]
    fn basic_parse() {
        let u = Uri::parse("coap://Example.COM:61616/a/b?x=1&y").unwrap();
        assert_eq!(u.scheme, Scheme::Coap);
        assert_eq!(u.host, name("example.com"));
        assert_eq!(u.port, Some(61616));
        assert_eq!(u.path, strings(&["a", "b"]));
        assert_eq!(u.query, strings(&["x=1", "y"]));
        assert_eq!(u.to_string(), "coap://example.com:61616/a/b?x=1&y");
        assert_eq!(u.authority(), "example.com:61616");
        assert_eq!(u.path_string(), "/a/b");

        let u = Uri::parse("COAPS+TCP://h").unwrap();
        assert_eq!(u.scheme, Scheme::CoapsTcp);
        assert_eq!(u.port, None);
        assert_eq!(u.port_or_default(), 5684);
        assert!(u.path.is_empty() && u.query.is_empty());
        assert_eq!(u.to_string(), "coaps+tcp://h/");
    }

    #[test]
    fn path_shapes() {
        let path = |s: &str| Uri::parse(s).unwrap().path;
        assert!(path("coap://h").is_empty());
        assert!(path("coap://h/").is_empty());
        assert!(path("coap://h?q").is_empty());
        assert_eq!(path("coap://h/a/"), strings(&["a", ""]));
        assert_eq!(path("coap://h//"), strings(&["", ""]));
        assert_eq!(path("coap://h/a/./b/../c"), strings(&["a", "c"]));
        assert_eq!(path("coap://h/a/b/.."), strings(&["a", ""]));
        assert_eq!(path("coap://h/a/."), strings(&["a", ""]));
        assert!(path("coap://h/..").is_empty());
        assert!(path("coap://h/../../").is_empty());
        assert_eq!(path("coap://h/%2E%2E/%2e/x"), strings(&["x"]));
        assert_eq!(path("coap://h/a//.."), strings(&["a", ""]));
        let q = |s: &str| Uri::parse(s).unwrap().query;
        assert!(q("coap://h/?").is_empty());
        assert_eq!(q("coap://h/?&"), strings(&["", ""]));
        assert_eq!(q("coap://h/?a=/b?c"), strings(&["a=/b?c"]));
    }

    #[test]
    fn percent_encoding_both_ways() {
        let u = Uri::parse("coap://h/a%2Fb").unwrap();
        assert_eq!(u.path, strings(&["a/b"]));
        assert_eq!(u.to_string(), "coap://h/a%2Fb");

        let u = Uri::parse("coap://h/%E3%81%93%E3%82%93?%26=%3f&b%20c").unwrap();
        assert_eq!(u.path, strings(&["こん"]));
        assert_eq!(u.query, strings(&["&=?", "b c"]));
        assert_eq!(u.to_string(), "coap://h/%E3%81%93%E3%82%93?%26=?&b%20c");

        // RFC 7252 Appendix B, example 5.
        let mut u = Uri::new(Scheme::Coap, Host::Ipv4(Ipv4Addr::new(198, 51, 100, 1)));
        u.port = Some(61616);
        u.path = strings(&["", "/", "", ""]);
        u.query = strings(&["//", "?&"]);
        assert_eq!(u.to_string(), "coap://198.51.100.1:61616//%2F//?//&?%26");
        assert_eq!(Uri::parse(&u.to_string()), Ok(u));

        // Names decode and lowercase; odd characters encode back.
        let u = Uri::parse("coap://A%2Db%25c.example/").unwrap();
        assert_eq!(u.host, name("a-b%c.example"));
        assert_eq!(u.host.to_string(), "a-b%c.example");
        assert_eq!(u.authority(), "a-b%25c.example");
    }

    #[test]
    fn ip_literals() {
        let u = Uri::parse("coap://[2001:db8::2:1]:5683/x").unwrap();
        let a: Ipv6Addr = "2001:db8::2:1".parse().unwrap();
        assert_eq!(u.host, Host::Ipv6(a));
        assert_eq!(u.host.to_string(), "2001:db8::2:1");
        assert_eq!(u.host.authority_form(), "[2001:db8::2:1]");
        assert_eq!(u.port, Some(5683));
        assert_eq!(u.authority(), "[2001:db8::2:1]");
        assert_eq!(u.to_string(), "coap://[2001:db8::2:1]:5683/x");
        let u = Uri::parse("coap+tcp://[::1]").unwrap();
        assert_eq!(u.host, Host::Ipv6(Ipv6Addr::LOCALHOST));
        let u = Uri::parse("coap://192.0.2.1:/").unwrap();
        assert_eq!(u.host, Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(u.port, None);
        // A name that decodes to an address is that address.
        assert_eq!(
            Uri::parse("coap://1%2E2.3.4/").unwrap().host,
            Host::Ipv4(Ipv4Addr::new(1, 2, 3, 4))
        );
        // Not dotted-decimal IPv4: a name.
        assert_eq!(Uri::parse("coap://1.2.3/").unwrap().host, name("1.2.3"));
    }

    #[test]
    fn bad_inputs() {
        let err = |s: &str| Uri::parse(s).unwrap_err();
        assert_eq!(err(""), UriError::MissingScheme);
        assert_eq!(err("//h/a"), UriError::MissingScheme);
        assert_eq!(err("[::1]:5683/a"), UriError::MissingScheme);
        assert_eq!(err("1coap://h"), UriError::MissingScheme);
        assert_eq!(err("http://h/"), UriError::UnknownScheme("http".into()));
        assert_eq!(err("coap:/h/a"), UriError::MissingAuthority);
        assert_eq!(err("coap:h"), UriError::MissingAuthority);
        assert_eq!(err("coap://h/a#f"), UriError::Fragment);
        assert_eq!(err("coap://h/#"), UriError::Fragment);
        assert_eq!(err("coap:///a"), UriError::EmptyHost);
        assert_eq!(err("coap://:5683/a"), UriError::EmptyHost);
        assert_eq!(err("coap://u@h/"), UriError::UserInfo);
        assert_eq!(err("coap://h:x/"), UriError::InvalidPort("x".into()));
        assert_eq!(
            err("coap://h:65536/"),
            UriError::InvalidPort("65536".into())
        );
        assert_eq!(err("coap://h:-1/"), UriError::InvalidPort("-1".into()));
        assert_eq!(err("coap://h:1:2/"), UriError::InvalidPort("1:2".into()));
        assert_eq!(
            err("coap://h:99999999999999999999/"),
            UriError::InvalidPort("99999999999999999999".into())
        );
        assert_eq!(Uri::parse("coap://h:000080/").unwrap().port, Some(80));
        assert!(matches!(err("coap://[::1/"), UriError::InvalidIpLiteral(_)));
        assert!(matches!(err("coap://[zz]/"), UriError::InvalidIpLiteral(_)));
        assert!(matches!(
            err("coap://[fe80::1%25eth0]/"),
            UriError::InvalidIpLiteral(_)
        ));
        assert!(matches!(
            err("coap://[::1]x/"),
            UriError::InvalidIpLiteral(_)
        ));
        assert_eq!(
            err("coap://h/%"),
            UriError::InvalidPercentEncoding { component: "path" }
        );
        assert_eq!(
            err("coap://h/%4"),
            UriError::InvalidPercentEncoding { component: "path" }
        );
        assert_eq!(
            err("coap://h/%zz"),
            UriError::InvalidPercentEncoding { component: "path" }
        );
        assert_eq!(
            err("coap://h/?%g0"),
            UriError::InvalidPercentEncoding { component: "query" }
        );
        assert_eq!(
            err("coap://h/%FF"),
            UriError::InvalidUtf8 { component: "path" }
        );
        assert_eq!(
            err("coap://h/a b"),
            UriError::InvalidCharacter {
                ch: ' ',
                component: "path"
            }
        );
        assert_eq!(
            err("coap://h/é"),
            UriError::InvalidCharacter {
                ch: 'é',
                component: "path"
            }
        );
        assert_eq!(
            err("coap://h/?a[0]"),
            UriError::InvalidCharacter {
                ch: '[',
                component: "query"
            }
        );
        assert_eq!(
            err("coap://h h/"),
            UriError::InvalidCharacter {
                ch: ' ',
                component: "host"
            }
        );
    }

    #[test]
    fn conformance_websocket_mapping() {
        // CONFORMANCE §1.10: coap+ws://H[:P]/a/b?x=1 -> ws://H[:P]/.well-known/coap.
        let u = Uri::parse("coap+ws://example.org:8080/a/b?x=1").unwrap();
        assert_eq!(
            u.websocket_url().as_deref(),
            Some("ws://example.org:8080/.well-known/coap")
        );
        let expected = vec![
            (11, b"a".to_vec()),
            (11, b"b".to_vec()),
            (15, b"x=1".to_vec()),
        ];
        assert_eq!(opts(&u.request_options()), expected);

        let u = Uri::parse("coap+ws://example.org/a/b?x=1").unwrap();
        assert_eq!(
            u.websocket_url().as_deref(),
            Some("ws://example.org/.well-known/coap")
        );
        assert_eq!(opts(&u.request_options()), expected);
        let u = Uri::parse("coap+ws://example.org:80/").unwrap();
        assert_eq!(
            u.websocket_url().as_deref(),
            Some("ws://example.org/.well-known/coap")
        );
        let u = Uri::parse("coaps+ws://[::1]:443/").unwrap();
        assert_eq!(
            u.websocket_url().as_deref(),
            Some("wss://[::1]/.well-known/coap")
        );
        let u = Uri::parse("coaps+ws://[::1]:8443/").unwrap();
        assert_eq!(
            u.websocket_url().as_deref(),
            Some("wss://[::1]:8443/.well-known/coap")
        );
        assert_eq!(Uri::parse("coap+tcp://h/").unwrap().websocket_url(), None);
    }

    #[test]
    fn request_options_per_transport() {
        let u = Uri::parse("coap://Example.net:9999/.well-known/core?rt=x").unwrap();
        assert_eq!(
            opts(&u.request_options()),
            vec![
                (3, b"example.net".to_vec()),
                (11, b".well-known".to_vec()),
                (11, b"core".to_vec()),
                (15, b"rt=x".to_vec()),
            ]
        );
        let u = Uri::parse("coap://192.0.2.1/a").unwrap();
        assert_eq!(opts(&u.request_options()), vec![(11, b"a".to_vec())]);

        // Through a proxy at another address and port, everything is explicit.
        let u = Uri::parse("coap://[2001:db8::1]:5683/a").unwrap();
        let o = u.request_options_to(None, 7000);
        assert_eq!(
            opts(&o),
            vec![
                (3, b"[2001:db8::1]".to_vec()),
                (7, vec![0x16, 0x33]),
                (11, b"a".to_vec())
            ]
        );
        let back = Uri::from_options(Scheme::Coap, &name("proxy"), 7000, &o).unwrap();
        assert_eq!(back, Uri { port: None, ..u });
    }

    #[test]
    fn from_options_rfc7252_appendix_b() {
        let dest = Host::Ipv6("2001:db8::2:1".parse().unwrap());
        let mut o = Options::new();
        let u = Uri::from_options(Scheme::Coap, &dest, 5683, &o).unwrap();
        assert_eq!(u.to_string(), "coap://[2001:db8::2:1]/");
        o.push(OptionNumber::URI_HOST, "example.net");
        o.push(OptionNumber::URI_PATH, ".well-known");
        o.push(OptionNumber::URI_PATH, "core");
        let u = Uri::from_options(Scheme::Coap, &dest, 5683, &o).unwrap();
        assert_eq!(u.to_string(), "coap://example.net/.well-known/core");

        let mut o = Options::new();
        o.push(OptionNumber::URI_HOST, "xn--18j4d.example");
        o.push(OptionNumber::URI_PATH, "こんにちは");
        let u = Uri::from_options(Scheme::Coap, &dest, 5683, &o).unwrap();
        assert_eq!(
            u.to_string(),
            "coap://xn--18j4d.example/%E3%81%93%E3%82%93%E3%81%AB%E3%81%A1%E3%81%AF"
        );

        // Uri-Port overrides; a default port is normalised away.
        let mut o = Options::new();
        o.push(OptionNumber::URI_PORT, encode_uint(5683));
        let u = Uri::from_options(Scheme::Coap, &dest, 1234, &o).unwrap();
        assert_eq!(u.port, None);
        let u = Uri::from_options(Scheme::CoapWs, &name("h"), 8080, &Options::new()).unwrap();
        assert_eq!(u.to_string(), "coap+ws://h:8080/");

        let mut o = Options::new();
        o.push(OptionNumber::URI_PATH, "");
        assert!(
            Uri::from_options(Scheme::Coap, &dest, 5683, &o)
                .unwrap()
                .path
                .is_empty()
        );
        o.push(OptionNumber::URI_PATH, "");
        assert_eq!(
            Uri::from_options(Scheme::Coap, &dest, 5683, &o)
                .unwrap()
                .path
                .len(),
            2
        );

        let mut o = Options::new();
        o.push(OptionNumber::URI_PATH, "..");
        assert_eq!(
            Uri::from_options(Scheme::Coap, &dest, 5683, &o),
            Err(UriError::DotSegment)
        );
        let mut o = Options::new();
        o.push(OptionNumber::URI_PATH, vec![0xff]);
        assert_eq!(
            Uri::from_options(Scheme::Coap, &dest, 5683, &o),
            Err(UriError::InvalidUtf8 { component: "path" })
        );
        let mut o = Options::new();
        o.push(OptionNumber::URI_PORT, vec![1, 2, 3]);
        assert_eq!(
            Uri::from_options(Scheme::Coap, &dest, 5683, &o),
            Err(UriError::InvalidOption(OptionNumber::URI_PORT))
        );
        let mut o = Options::new();
        o.push(OptionNumber::URI_HOST, "[::1]");
        let u = Uri::from_options(Scheme::Coap, &dest, 5683, &o).unwrap();
        assert_eq!(u.host, Host::Ipv6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn host_helpers() {
        assert_eq!(
            Host::parse_with_port("Example.com:8080"),
            Ok((name("example.com"), Some(8080)))
        );
        assert_eq!(
            Host::parse_with_port("[::1]"),
            Ok((Host::Ipv6(Ipv6Addr::LOCALHOST), None))
        );
        assert_eq!(
            Host::from_option_value("::1"),
            Ok(Host::Ipv6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(Host::from_option_value(""), Err(UriError::EmptyHost));
        assert!(Host::from_option_value("[x]").is_err());
        assert_eq!(Host::Ipv6(Ipv6Addr::LOCALHOST).option_value(), "[::1]");
        assert!(Host::Ipv4(Ipv4Addr::LOCALHOST).is_ip_literal());
        assert_eq!(
            Host::from(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string(),
            "127.0.0.1"
        );
    }

    #[test]
    fn with_path() {
        let u = Uri::parse("coap+ws://h/a?x").unwrap();
        let v = u.with_path("/.well-known/core?rt=temp").unwrap();
        assert_eq!(v.to_string(), "coap+ws://h/.well-known/core?rt=temp");
        let v = u.with_path("b/c%2Fd").unwrap();
        assert_eq!(v.path, strings(&["b", "c/d"]));
        assert!(v.query.is_empty());
        assert_eq!(v.path_string(), "/b/c%2Fd");
        assert_eq!(u.with_path("").unwrap().path_string(), "/");
        assert_eq!(u.with_path("a#b"), Err(UriError::Fragment));
    }

    fn host_strategy() -> impl Strategy<Value = Host> {
        prop_oneof![
            "[a-z0-9.:%_~!$&'()*+,;= é-]{1,12}"
                .prop_filter_map("not a host", |s| Host::from_option_value(&s).ok()),
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
            any::<[u16; 8]>().prop_map(|b| Host::Ipv6(b.into())),
        ]
    }

    fn uri_strategy() -> impl Strategy<Value = Uri> {
        let segment = prop_oneof![any::<String>(), "[a-z/?&=%.]{0,4}"];
        (
            proptest::sample::select(Scheme::ALL.to_vec()),
            host_strategy(),
            proptest::option::of(any::<u16>()),
            proptest::collection::vec(segment.clone(), 0..4).prop_filter(
                "dot-segments and a lone empty segment are not canonical",
                |p| p != &[""] && p.iter().all(|s| s != "." && s != ".."),
            ),
            proptest::collection::vec(segment, 0..4)
                .prop_filter("a lone empty item is not canonical", |q| q != &[""]),
        )
            .prop_map(|(scheme, host, port, path, query)| Uri {
                scheme,
                host,
                port,
                path,
                query,
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(u in uri_strategy()) {
            let text = u.to_string();
            prop_assert_eq!(Uri::parse(&text), Ok(u), "{}", text);
        }

        #[test]
        fn options_round_trip(u in uri_strategy()) {
            let o = u.request_options_to(None, 0);
            let back = Uri::from_options(u.scheme, &Host::Name("x".into()), 0, &o).unwrap();
            let port = Some(u.port_or_default()).filter(|p| *p != u.scheme.default_port());
            prop_assert_eq!(back, Uri { port, ..u });
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}", t in "(coap|coap\\+ws)://[\\[\\]:%a-f0-9./?&#@]{0,30}") {
            let _ = Uri::parse(&s);
            let _ = Uri::parse(&t);
        }
    }
}
