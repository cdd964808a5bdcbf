//! Reading what a registrant sends: the query of a registration or update (RFC 9176 §5.3,
//! §5.3.1) and the link-format payload of a registration, every byte of it untrusted.

use super::RdConfig;
use super::error::RdError;
use super::resolve::is_base_uri;
use coapws_proto::content_format::ContentFormat;
use coapws_proto::link_format::{self, Link};
use coapws_proto::message::Message;

/// Longest endpoint name and sector name (RFC 9176 §5.3: 63 bytes of UTF-8).
pub const MAX_NAME_LEN: usize = 63;
/// Longest base URI accepted.
pub const MAX_BASE_LEN: usize = 1024;
/// Most extra registration attributes in one request.
pub const MAX_ATTRS: usize = 64;

/// Query parameters that are lookup filters or link attributes, not registration attributes.
const RESERVED: [&str; 5] = ["page", "count", "rt", "href", "anchor"];

/// The parameters of a registration or update request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RegistrationQuery {
    /// `ep`, only in a registration.
    pub ep: Option<String>,
    /// `d`, only in a registration.
    pub d: Option<String>,
    /// `lt`.
    pub lt: Option<u32>,
    /// `base` (or its older name `con`).
    pub base: Option<String>,
    /// Everything else (`et`, extra attributes).
    pub attrs: Vec<(String, Option<String>)>,
}

/// Reads the query items of a registration (`initial`) or an update.
pub(crate) fn parse_query(
    items: &[String],
    config: &RdConfig,
    initial: bool,
) -> Result<RegistrationQuery, RdError> {
    let mut q = RegistrationQuery::default();
    for item in items {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item.as_str(), None),
        };
        take(&mut q, name, value, config, initial)?;
    }
    if initial && q.ep.is_none() {
        return Err(RdError::bad("ep (the endpoint name) is required"));
    }
    Ok(q)
}

fn take(
    q: &mut RegistrationQuery,
    name: &str,
    value: Option<&str>,
    config: &RdConfig,
    initial: bool,
) -> Result<(), RdError> {
    match name {
        "" => return Err(RdError::bad("query item without a name")),
        "ep" | "d" if !initial => {
            return Err(RdError::bad(format!("{name} cannot change in an update")));
        }
        "ep" => set_once(&mut q.ep, name, name_value(name, value)?)?,
        "d" => set_once(&mut q.d, name, name_value(name, value)?)?,
        "lt" => set_once(&mut q.lt, name, lifetime(value, config)?)?,
        "base" | "con" => set_once(&mut q.base, "base", base(value)?)?,
        n if RESERVED.contains(&n) => {
            return Err(RdError::bad(format!("{n} is not a registration attribute")));
        }
        n => {
            if q.attrs.len() >= MAX_ATTRS {
                return Err(RdError::bad(format!("more than {MAX_ATTRS} attributes")));
            }
            q.attrs.push((n.to_owned(), value.map(str::to_owned)));
        }
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), RdError> {
    if slot.is_some() {
        return Err(RdError::bad(format!("{name} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn name_value(name: &str, value: Option<&str>) -> Result<String, RdError> {
    match value {
        Some(v) if !v.is_empty() && v.len() <= MAX_NAME_LEN => Ok(v.to_owned()),
        _ => Err(RdError::bad(format!(
            "{name} must have 1 to {MAX_NAME_LEN} bytes"
        ))),
    }
}

fn lifetime(value: Option<&str>, config: &RdConfig) -> Result<u32, RdError> {
    let lt = value
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok());
    match lt {
        Some(lt) if lt >= 1 && lt <= config.max_lifetime => Ok(lt),
        _ => Err(RdError::bad(format!(
            "lt must be a number of seconds from 1 to {}",
            config.max_lifetime
        ))),
    }
}

/// A base must be an absolute URI with an authority, and must fit between `<` and `>` of a
/// link once links are resolved against it.
fn base(value: Option<&str>) -> Result<String, RdError> {
    let ok = |v: &str| {
        v.len() <= MAX_BASE_LEN
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
            && is_base_uri(v)
    };
    match value {
        Some(v) if ok(v) => Ok(v.to_owned()),
        _ => Err(RdError::bad(
            "base must be an absolute URI such as coap://host:port",
        )),
    }
}

/// The links of a registration request: its payload, `application/link-format` (an empty
/// payload, with or without Content-Format, registers no links).
pub(crate) fn parse_links(message: &Message, config: &RdConfig) -> Result<Vec<Link>, RdError> {
    let payload = &message.payload;
    if payload.len() > config.max_payload {
        return Err(RdError::TooLarge {
            what: "payload size",
            limit: config.max_payload,
            size1: Some(config.max_payload),
        });
    }
    match message.options.content_format() {
        Some(cf) if cf != ContentFormat::LINK_FORMAT.0 => {
            return Err(RdError::UnsupportedFormat(ContentFormat(cf)));
        }
        _ => {}
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| RdError::bad("the link-format payload is not UTF-8"))?;
    let links = link_format::parse(text).map_err(|e| RdError::bad(format!("link-format: {e}")))?;
    if links.len() > config.max_links {
        return Err(RdError::TooLarge {
            what: "number of links",
            limit: config.max_links,
            size1: None,
        });
    }
    Ok(links)
}

/// True when `s` can be a DNS label of a proxy host name: lowercase letters, digits and `-`,
/// not at either end.
pub(crate) fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[&str], initial: bool) -> Result<RegistrationQuery, RdError> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        parse_query(&items, &RdConfig::default(), initial)
    }

    #[test]
    fn registration_queries() {
        let r = q(
            &["ep=node1", "d=lab", "lt=60", "con=coap://h", "et=x", "flag"],
            true,
        )
        .unwrap();
        assert_eq!(r.ep.as_deref(), Some("node1"));
        assert_eq!(r.d.as_deref(), Some("lab"));
        assert_eq!(r.lt, Some(60));
        assert_eq!(r.base.as_deref(), Some("coap://h"));
        assert_eq!(
            r.attrs,
            [("et".into(), Some("x".into())), ("flag".into(), None)]
        );
        for bad in [
            &["d=x"][..],
            &["ep="],
            &["ep=a", "ep=b"],
            &["ep=a", "lt=0"],
            &["ep=a", "lt=-1"],
            &["ep=a", "lt=+5"],
            &["ep=a", "lt=4294967296"],
            &["ep=a", "base=/relative"],
            &["ep=a", "base=coap://h>"],
            &["ep=a", "rt=x"],
            &["ep=a", "=x"],
        ] {
            assert!(q(bad, true).is_err(), "{bad:?}");
        }
        assert!(q(&[&format!("ep={}", "x".repeat(64))], true).is_err());
        assert!(q(&["ep=a"], false).is_err());
        assert_eq!(q(&["lt=5"], false).unwrap().lt, Some(5));
    }

    #[test]
    fn host_labels() {
        assert!(is_host_label("node-1"));
        for bad in ["", "-a", "a-", "Node", "a.b", "ä"] {
            assert!(!is_host_label(bad), "{bad}");
        }
    }
}
