//! The lookup interface (RFC 9176 §6): the links that endpoint and resource lookups show,
//! filtering them by query attributes (§6.3) and paging (§6.4).
//!
//! A filter item `name=value` (a trailing `*` matching by prefix) or `name` (present) selects:
//! - in endpoint lookup, the registrations whose endpoint link (`</rd/ID>;ep=…;base=…;…`)
//!   matches it, or one of whose resolved links does;
//! - in resource lookup, the resolved links that match it, or whose registration's
//!   attributes (`ep`, `d`, `base`, `lt`, `et`, extra attributes) do.
//!
//! All items must match. `href` compares with the absolute (resolved) target.

use super::error::RdError;
use super::resolve::resolve;
use super::store::Registration;
use coapws_proto::link_format::Link;

/// The query of a lookup: filters, then paging.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LookupQuery {
    filters: Vec<String>,
    page: Option<usize>,
    count: Option<usize>,
}

impl LookupQuery {
    /// Reads the query items of a lookup request.
    pub(crate) fn parse(items: &[String]) -> Result<LookupQuery, RdError> {
        let mut q = LookupQuery::default();
        for item in items {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            match name {
                "" => return Err(RdError::bad("query item without a name")),
                "page" => q.page = Some(number("page", value)?),
                "count" => q.count = Some(number("count", value)?),
                _ => q.filters.push(item.clone()),
            }
        }
        if q.page.is_some() && q.count.is_none() {
            return Err(RdError::bad("page needs count"));
        }
        Ok(q)
    }

    /// The page of `items` the query asks for (all of them without `count`).
    fn paginate<T>(&self, items: Vec<T>) -> Vec<T> {
        let Some(count) = self.count else {
            return items;
        };
        let skip = self.page.unwrap_or(0).saturating_mul(count);
        items.into_iter().skip(skip).take(count).collect()
    }
}

fn number(name: &str, value: &str) -> Result<usize, RdError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RdError::bad(format!("{name} must be a number")));
    }
    value
        .parse()
        .map_err(|_| RdError::bad(format!("{name} is too large")))
}

/// The link endpoint lookup shows for a registration: `</rd/ID>` with `ep`, `d`, `base`,
/// `lt`, `rt="core.rd-ep"` and the other registration attributes.
pub(crate) fn endpoint_link(reg: &Registration) -> Link {
    let mut link = Link::new(reg.href());
    link.params = attribute_params(reg);
    link.params.push(("rt".into(), Some("core.rd-ep".into())));
    link
}

/// The registration attributes as link parameters.
fn attribute_params(reg: &Registration) -> Vec<(String, Option<String>)> {
    let mut p = vec![("ep".to_owned(), Some(reg.ep.clone()))];
    if let Some(d) = &reg.d {
        p.push(("d".into(), Some(d.clone())));
    }
    p.push(("base".into(), Some(reg.base.clone())));
    p.push(("lt".into(), Some(reg.lt.to_string())));
    p.extend(reg.attrs.iter().cloned());
    p
}

/// A registered link made absolute: its target and its anchor resolved against the base.
pub(crate) struct ResolvedLink {
    /// The link, with an `anchor` parameter always present (for filtering).
    link: Link,
    /// The anchor is the default context (the target's origin), so the output leaves it out.
    default_anchor: bool,
}

impl ResolvedLink {
    /// The link as resource lookup shows it.
    fn output(mut self) -> Link {
        if self.default_anchor {
            self.link
                .params
                .retain(|(n, _)| !n.eq_ignore_ascii_case("anchor"));
        }
        self.link
    }
}

/// The links of `reg` with targets and anchors absolute (RFC 9176 §6: a link without anchor
/// has the registration's base as its context).
pub(crate) fn resolved_links(reg: &Registration) -> Vec<ResolvedLink> {
    reg.links.iter().map(|l| resolve_link(reg, l)).collect()
}

fn resolve_link(reg: &Registration, link: &Link) -> ResolvedLink {
    let target = resolve(&reg.base, &link.target);
    let anchor = match link.param("anchor") {
        Some(a) => resolve(&reg.base, a),
        None => resolve(&reg.base, "/"),
    };
    let default_anchor = anchor == resolve(&target, "/");
    let mut params: Vec<_> = link
        .params
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("anchor"))
        .cloned()
        .collect();
    params.push(("anchor".into(), Some(anchor)));
    ResolvedLink {
        link: Link { target, params },
        default_anchor,
    }
}

/// Endpoint lookup: the endpoint links of the registrations that match, paged.
pub(crate) fn lookup_endpoints(regs: &[Registration], query: &LookupQuery) -> Vec<Link> {
    let matching: Vec<Link> =
        regs.iter()
            .filter_map(|reg| {
                let ep = endpoint_link(reg);
                let links = resolved_links(reg);
                let all = query.filters.iter().all(|f| {
                    ep.matches_filter(f) || links.iter().any(|l| l.link.matches_filter(f))
                });
                all.then_some(ep)
            })
            .collect();
    query.paginate(matching)
}

/// Resource lookup: the resolved links that match, paged.
pub(crate) fn lookup_resources(regs: &[Registration], query: &LookupQuery) -> Vec<Link> {
    let mut matching = Vec::new();
    for reg in regs {
        let attrs = Link {
            target: String::new(),
            params: attribute_params(reg),
        };
        for l in resolved_links(reg) {
            let all = query
                .filters
                .iter()
                .all(|f| l.link.matches_filter(f) || (!is_href(f) && attrs.matches_filter(f)));
            if all {
                matching.push(l);
            }
        }
    }
    query
        .paginate(matching)
        .into_iter()
        .map(ResolvedLink::output)
        .collect()
}

fn is_href(filter: &str) -> bool {
    filter == "href" || filter.starts_with("href=")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rd::store::Owner;
    use coapws_proto::link_format::parse;
    use std::time::{Instant, SystemTime};

    fn reg(id: &str, ep: &str, base: &str, links: &str) -> Registration {
        Registration {
            id: id.into(),
            ep: ep.into(),
            d: None,
            lt: 90000,
            base: base.into(),
            base_explicit: true,
            attrs: vec![("et".into(), Some("oic.d.sensor".into()))],
            links: parse(links).unwrap(),
            expires: Instant::now(),
            updated: SystemTime::now(),
            owner: Owner {
                peer: "t".into(),
                connection: None,
            },
        }
    }

    fn query(items: &[&str]) -> LookupQuery {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        LookupQuery::parse(&items).unwrap()
    }

    fn regs() -> Vec<Registration> {
        vec![
            reg(
                "a",
                "node1",
                "coap://[2001:db8::1]",
                "</temp>;rt=temperature;if=sensor,</light>;rt=light-lux;anchor=\"/x\"",
            ),
            reg(
                "b",
                "node2",
                "coap+ws://node2.example",
                "</t2>;rt=\"temperature c\"",
            ),
        ]
    }

    #[test]
    fn resource_lookup_resolves_and_filters() {
        let all = lookup_resources(&regs(), &query(&[]));
        let targets: Vec<_> = all.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "coap://[2001:db8::1]/temp",
                "coap://[2001:db8::1]/light",
                "coap+ws://node2.example/t2"
            ]
        );
        assert!(!all[0].has_param("anchor"));
        assert_eq!(all[1].param("anchor"), Some("coap://[2001:db8::1]/x"));
        let t = lookup_resources(&regs(), &query(&["rt=temp*"]));
        assert_eq!(t.len(), 2);
        let t = lookup_resources(&regs(), &query(&["ep=node2"]));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].target, "coap+ws://node2.example/t2");
        let t = lookup_resources(&regs(), &query(&["href=*/light"]));
        assert!(t.is_empty(), "a trailing * only");
        let t = lookup_resources(&regs(), &query(&["href=coap://*", "rt=light-lux"]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn endpoint_lookup_filters_on_links_too_and_pages() {
        let e = lookup_endpoints(&regs(), &query(&["rt=light-lux"]));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].target, "/rd/a");
        assert_eq!(e[0].param("base"), Some("coap://[2001:db8::1]"));
        assert_eq!(e[0].param("rt"), Some("core.rd-ep"));
        let e = lookup_endpoints(&regs(), &query(&["count=1", "page=1"]));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].param("ep"), Some("node2"));
        assert!(lookup_endpoints(&regs(), &query(&["count=1", "page=9"])).is_empty());
        let huge = query(&["count=18446744073709551615", "page=18446744073709551615"]);
        assert!(lookup_endpoints(&regs(), &huge).is_empty());
    }

    #[test]
    fn bad_lookup_queries() {
        for bad in [
            &["page=1"][..],
            &["count=x"],
            &["count="],
            &["page=-1", "count=1"],
            &["=x"],
            &["count=99999999999999999999999"],
        ] {
            let items: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(LookupQuery::parse(&items).is_err(), "{bad:?}");
        }
    }
}
