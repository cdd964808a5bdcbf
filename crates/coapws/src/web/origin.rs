//! Which browser origins may open a CoAP WebSocket. A browser sends `Origin` with every
//! WebSocket handshake and lets any page open one to any host, so without this check any web
//! page a user visits could reach a CoAP server on their machine (PUT and DELETE files on a
//! writable file server). Non-browser clients send no Origin and are let in.

use http::HeaderValue;

/// Origins allowed besides the server's own (RFC 6455 §10.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    any: bool,
}

impl OriginPolicy {
    /// Only clients without Origin (not browsers) and pages of the same host.
    pub fn same_origin() -> OriginPolicy {
        OriginPolicy::default()
    }
    /// Also `origins` (each `scheme://host[:port]`, compared without case; `*` allows every
    /// origin, which lets any web page reach the server).
    pub fn allowing(origins: &[String]) -> OriginPolicy {
        let any = origins.iter().any(|o| o == "*");
        let allowed = origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        OriginPolicy { allowed, any }
    }
    /// True when every origin is allowed.
    pub fn allows_any(&self) -> bool {
        self.any
    }
    /// Whether a handshake with `origin` (absent for non-browser clients) that addressed the
    /// server as `host` (its Host header) may go on. Same origin means the Origin's
    /// `host[:port]` is the Host header, whatever the scheme: behind a proxy that ends TLS,
    /// `https://` pages reach a plain listener.
    pub fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let host = host
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        matches!((authority, host), (Some(a), Some(h)) if a == h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn same_origin_by_default() {
        let p = OriginPolicy::same_origin();
        let host = h("localhost:8683");
        assert!(p.allows(None, Some(&host)), "no Origin: not a browser");
        assert!(p.allows(Some(&h("http://localhost:8683")), Some(&host)));
        assert!(p.allows(Some(&h("https://LOCALHOST:8683")), Some(&host)));
        assert!(!p.allows(Some(&h("https://evil.example")), Some(&host)));
        assert!(!p.allows(Some(&h("http://localhost:8684")), Some(&host)));
        assert!(!p.allows(Some(&h("null")), Some(&host)));
        assert!(!p.allows(Some(&h("http://localhost:8683")), None));
    }

    #[test]
    fn listed_and_any() {
        let p = OriginPolicy::allowing(&["https://App.example/".into()]);
        let host = h("coap.example");
        assert!(p.allows(Some(&h("https://app.example")), Some(&host)));
        assert!(!p.allows(Some(&h("https://other.example")), Some(&host)));
        let any = OriginPolicy::allowing(&["*".into()]);
        assert!(any.allows_any());
        assert!(any.allows(Some(&h("https://other.example")), Some(&host)));
    }
}
