//! What the forward proxy may reach: a list of `scheme://host[:port]` patterns (`--allow`), or,
//! without any, loopback targets only. A proxy that forwards anywhere is an open proxy: a
//! scanner's relay into every network the server sees.

use coapws_proto::uri::{Host, Uri};
use std::fmt;
use std::str::FromStr;

/// A pattern `scheme://host[:port]` where `*` in any part matches any run of characters
/// (`coap://127.0.0.1:*`, `coap+ws://*.example.com`, `*://[::1]:*`). Without a port the
/// pattern matches the scheme's default port only. Names compare without case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowPattern {
    scheme: String,
    host: String,
    port: Option<String>,
}

/// Why an `--allow` pattern was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// No `://` between scheme and host.
    #[error("{0:?} is not scheme://host[:port]")]
    Shape(String),
    /// A path, query or user part after the authority.
    #[error("{0:?}: only scheme://host[:port], no path, query or user")]
    Extra(String),
    /// The port is neither a number nor a wildcard.
    #[error("{0:?}: bad port")]
    Port(String),
}

impl FromStr for AllowPattern {
    type Err = AllowError;
    fn from_str(text: &str) -> Result<AllowPattern, AllowError> {
        let (scheme, authority) = text
            .split_once("://")
            .ok_or_else(|| AllowError::Shape(text.to_owned()))?;
        if scheme.is_empty() || authority.is_empty() {
            return Err(AllowError::Shape(text.to_owned()));
        }
        if authority.contains(['/', '?', '#', '@']) {
            return Err(AllowError::Extra(text.to_owned()));
        }
        // The port follows the last ':' that is not inside an IPv6 literal.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(authority[i + 1..].to_owned()))
            }
            _ => (authority, None),
        };
        if let Some(p) = &port
            && !p.chars().all(|c| c.is_ascii_digit() || c == '*')
        {
            return Err(AllowError::Port(text.to_owned()));
        }
        if host.is_empty() {
            return Err(AllowError::Shape(text.to_owned()));
        }
        Ok(AllowPattern {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for AllowPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(p) = &self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// True when `text` matches `pattern`, whose `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl AllowPattern {
    /// True when the pattern covers `uri`'s scheme, host and port.
    pub fn matches(&self, uri: &Uri) -> bool {
        let port = uri.port_or_default();
        let port_ok = match &self.port {
            None => port == uri.scheme.default_port(),
            Some(p) => glob(p, &port.to_string()),
        };
        let host = uri.host.authority_form().to_ascii_lowercase();
        port_ok && glob(&self.scheme, &uri.scheme.to_string()) && glob(&self.host, &host)
    }
}

/// The targets a forward proxy may reach.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    patterns: Vec<AllowPattern>,
}

/// True for loopback addresses and the `localhost` names (RFC 6761 §6.3).
fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Ipv4(a) => a.is_loopback(),
        Host::Ipv6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Host::Name(n) => {
            let n = n.to_ascii_lowercase();
            n == "localhost" || n.ends_with(".localhost")
        }
    }
}

impl AllowList {
    /// Only these patterns; an empty list allows loopback targets only.
    pub fn new(patterns: Vec<AllowPattern>) -> AllowList {
        AllowList { patterns }
    }
    /// Parses `--allow` values.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<AllowList, AllowError> {
        let patterns = texts
            .iter()
            .map(|t| t.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(AllowList { patterns })
    }
    /// True when no pattern was given: only loopback targets are allowed.
    pub fn is_loopback_only(&self) -> bool {
        self.patterns.is_empty()
    }
    /// The patterns.
    pub fn patterns(&self) -> &[AllowPattern] {
        &self.patterns
    }
    /// True when the forward proxy may send to `uri`.
    pub fn allows(&self, uri: &Uri) -> bool {
        if self.patterns.is_empty() {
            return is_loopback(&uri.host);
        }
        self.patterns.iter().any(|p| p.matches(uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], uri: &str) -> bool {
        AllowList::parse(patterns)
            .unwrap()
            .allows(&Uri::parse(uri).unwrap())
    }

    #[test]
    fn wildcards_cover_ports_and_names() {
        assert!(allows(&["coap://127.0.0.1:*"], "coap://127.0.0.1:5999/x"));
        assert!(!allows(
            &["coap://127.0.0.1:*"],
            "coap+tcp://127.0.0.1:5999/x"
        ));
        assert!(allows(
            &["coap+ws://*.example.com"],
            "coap+ws://a.b.example.com/"
        ));
        assert!(!allows(
            &["coap+ws://*.example.com"],
            "coap+ws://example.com/"
        ));
        assert!(!allows(
            &["coap+ws://*.example.com"],
            "coap+ws://a.example.com:81/"
        ));
        assert!(allows(&["*://[::1]:*"], "coap+tcp://[::1]:7/"));
        assert!(allows(&["coap://h:56*"], "coap://h:5683/"));
        assert!(!allows(&["coap://h:56*"], "coap://h:5783/"));
    }

    #[test]
    fn without_patterns_only_loopback_is_allowed() {
        assert!(allows(&[], "coap://127.0.0.1/"));
        assert!(allows(&[], "coap://[::1]/"));
        assert!(allows(&[], "coap+ws://localhost:8683/"));
        assert!(!allows(&[], "coap://192.0.2.1/"));
        assert!(!allows(&[], "coap://example.com/"));
        assert!(!allows(&[], "coap://localhost.example.com/"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "127.0.0.1",
            "coap://",
            "coap://h/path",
            "coap://h:x",
            "coap://u@h",
        ] {
            assert!(bad.parse::<AllowPattern>().is_err(), "{bad}");
        }
    }
}
