//! CoRE Link Format (RFC 6690): the `application/link-format` payload of
//! `/.well-known/core`, e.g. `</sensors/temp>;rt="temperature-c";if=sensor;obs,</a>`.
//!
//! [`parse`] reads untrusted text in one linear pass and tolerates whitespace between tokens;
//! [`serialize`] writes links back, quoting values only where needed, so that parsing the
//! output gives the same links. [`Link::matches_filter`] implements the query filtering of
//! RFC 6690 §4.1 for servers.

use std::fmt;

/// Why a link-format document was rejected; `at` is a byte offset into the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkFormatError {
    /// A link must start with `<`.
    #[error("expected '<' at byte {at}")]
    ExpectedTarget {
        /// Byte offset.
        at: usize,
    },
    /// A `<` without its `>`.
    #[error("unterminated '<' at byte {at}")]
    UnterminatedTarget {
        /// Byte offset of the `<`.
        at: usize,
    },
    /// A `"` without its closing quote.
    #[error("unterminated quoted string at byte {at}")]
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        at: usize,
    },
    /// A `;` not followed by a parameter name.
    #[error("expected a parameter name at byte {at}")]
    ExpectedParamName {
        /// Byte offset.
        at: usize,
    },
    /// An `=` not followed by a value.
    #[error("expected a parameter value at byte {at}")]
    ExpectedValue {
        /// Byte offset.
        at: usize,
    },
    /// A character where `;`, `,` or the end was expected.
    #[error("unexpected {ch:?} at byte {at}")]
    Unexpected {
        /// The character.
        ch: char,
        /// Byte offset.
        at: usize,
    },
}

/// One link: a target URI-reference and its parameters in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// The URI-reference between `<` and `>`, as written (not resolved, not decoded).
    pub target: String,
    /// Parameters: name and unquoted, unescaped value; `None` for a parameter without `=`.
    pub params: Vec<(String, Option<String>)>,
}

impl Link {
    /// A link to `target` without parameters.
    pub fn new(target: impl Into<String>) -> Link {
        Link {
            target: target.into(),
            params: Vec::new(),
        }
    }

    /// Builder: appends the parameter `name=value`.
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Link {
        self.params.push((name.into(), Some(value.into())));
        self
    }

    /// Builder: appends a parameter without a value (e.g. `obs`).
    pub fn with_flag(mut self, name: impl Into<String>) -> Link {
        self.params.push((name.into(), None));
        self
    }

    /// The value of the first parameter called `name` (ASCII case ignored); `Some("")` for a
    /// parameter without a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// True if a parameter called `name` is present (ASCII case ignored).
    pub fn has_param(&self, name: &str) -> bool {
        self.params
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The space-separated words of every parameter called `name` (e.g. the resource types
    /// of `rt="a b"`, or the content formats of `ct="0 50"`).
    pub fn param_words<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(' ').filter(|w| !w.is_empty()))
    }

    /// RFC 6690 §4.1 filtering with one query item `name=value`: true if a parameter `name`
    /// has the value, or one of its space-separated words equals it. A trailing `*` in the
    /// value matches by prefix. `href` matches the target. An item without `=` matches when
    /// the parameter is present.
    pub fn matches_filter(&self, query_item: &str) -> bool {
        let Some((name, pattern)) = query_item.split_once('=') else {
            return self.has_param(query_item);
        };
        let matches = |v: &str| match pattern.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => v == pattern,
        };
        if name == "href" {
            return matches(&self.target);
        }
        self.params
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| {
                let v = v.as_deref().unwrap_or("");
                matches(v) || v.split(' ').any(matches)
            })
    }
}

/// Writes the link as in [`serialize`]. The target is written as is, so it must not contain
/// `>` (a URI-reference never does).
impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for (name, value) in &self.params {
            write!(f, ";{name}")?;
            let Some(v) = value else { continue };
            if needs_quotes(name, v) {
                f.write_str("=\"")?;
                for part in v.split_inclusive(['"', '\\']) {
                    match part.char_indices().last() {
                        Some((i, c @ ('"' | '\\'))) => {
                            write!(f, "{}\\{c}", &part[..i])?;
                        }
                        _ => f.write_str(part)?,
                    }
                }
                f.write_str("\"")?;
            } else {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// Serializes links separated by `,`. A value is quoted when it is empty, when the parameter
/// is `anchor` or `title` (RFC 6690 requires quotes there), or when it has a character
/// outside `A-Z a-z 0-9 ! # $ & + - . ^ _ \` | ~ : < = > ? @ [ ] { } / %`; inside quotes `"`
/// and `\` are escaped with `\`. Numbers such as `ct=40` and `sz=1024` stay unquoted.
pub fn serialize(links: &[Link]) -> String {
    let mut out = String::new();
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&link.to_string());
    }
    out
}

fn needs_quotes(name: &str, value: &str) -> bool {
    value.is_empty()
        || name.eq_ignore_ascii_case("anchor")
        || name.eq_ignore_ascii_case("title")
        || !value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'&'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                        | b':'
                        | b'<'
                        | b'='
                        | b'>'
                        | b'?'
                        | b'@'
                        | b'['
                        | b']'
                        | b'{'
                        | b'}'
                        | b'/'
                        | b'%'
                )
        })
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 5987 `attr-char`, plus `*` for extended parameters such as `title*`.
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'&'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
                | b'*'
        )
}

/// Parses a link-format document. Empty or all-whitespace input is an empty list.
///
/// Whitespace is allowed around `,`, `;` and `=`. Unquoted values run up to whitespace, `;`,
/// `,` or `"`; quoted values may contain anything, with `\` escaping the next character.
/// The work is linear in the input length.
pub fn parse(text: &str) -> Result<Vec<Link>, LinkFormatError> {
    let mut p = Parser { text, i: 0 };
    let mut links = Vec::new();
    p.skip_ws();
    if p.peek().is_none() {
        return Ok(links);
    }
    loop {
        let open = p.i;
        if p.peek() != Some(b'<') {
            return Err(LinkFormatError::ExpectedTarget { at: open });
        }
        let close = text[open + 1..]
            .find('>')
            .map(|k| open + 1 + k)
            .ok_or(LinkFormatError::UnterminatedTarget { at: open })?;
        let mut link = Link::new(&text[open + 1..close]);
        p.i = close + 1;
        loop {
            p.skip_ws();
            match p.peek() {
                None => {
                    links.push(link);
                    return Ok(links);
                }
                Some(b',') => {
                    p.i += 1;
                    break;
                }
                Some(b';') => {
                    p.i += 1;
                    link.params.push(p.param()?);
                }
                Some(_) => return Err(p.unexpected()),
            }
        }
        links.push(link);
        p.skip_ws();
    }
}

struct Parser<'a> {
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    fn unexpected(&self) -> LinkFormatError {
        // `i` only ever stops on ASCII bytes or after whole characters, so it is a boundary.
        let ch = self
            .text
            .get(self.i..)
            .and_then(|t| t.chars().next())
            .unwrap_or('\u{FFFD}');
        LinkFormatError::Unexpected { ch, at: self.i }
    }

    /// Reads `name [= value]` after a `;`.
    fn param(&mut self) -> Result<(String, Option<String>), LinkFormatError> {
        self.skip_ws();
        let start = self.i;
        while self.peek().is_some_and(is_name_char) {
            self.i += 1;
        }
        if self.i == start {
            return Err(LinkFormatError::ExpectedParamName { at: start });
        }
        let name = self.text[start..self.i].to_owned();
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Ok((name, None));
        }
        self.i += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.i;
            while self
                .peek()
                .is_some_and(|b| !is_ws(b) && !matches!(b, b';' | b',' | b'"'))
            {
                self.i += 1;
            }
            if self.i == start {
                return Err(LinkFormatError::ExpectedValue { at: start });
            }
            self.text[start..self.i].to_owned()
        };
        Ok((name, Some(value)))
    }

    /// Reads a quoted string starting at the opening quote.
    fn quoted(&mut self) -> Result<String, LinkFormatError> {
        let text = self.text;
        let open = self.i;
        let body = open + 1;
        let mut out = String::new();
        // Start of the not yet copied run of plain characters.
        let mut run = body;
        let mut chars = text[body..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '"' => {
                    out.push_str(&text[run..body + k]);
                    self.i = body + k + 1;
                    return Ok(out);
                }
                '\\' => {
                    out.push_str(&text[run..body + k]);
                    let Some((k2, escaped)) = chars.next() else {
                        break;
                    };
                    out.push(escaped);
                    run = body + k2 + escaped.len_utf8();
                }
                _ => {}
            }
        }
        Err(LinkFormatError::UnterminatedQuote { at: open })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_rfc6690_example() {
        let text = "</sensors/temp>;rt=\"temperature-c\";if=\"sensor\";obs,\n\
                    </sensors/light>;rt=\"light-lux\";if=\"sensor\";ct=0 , </t>;title=\"a, b;c \\\"q\\\" \\\\\"";
        let links = parse(text).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].target, "/sensors/temp");
        assert_eq!(links[0].param("rt"), Some("temperature-c"));
        assert_eq!(links[0].param("IF"), Some("sensor"));
        assert_eq!(links[0].param("obs"), Some(""));
        assert!(links[0].has_param("obs") && !links[1].has_param("obs"));
        assert_eq!(links[1].param("ct"), Some("0"));
        assert_eq!(links[2].param("title"), Some("a, b;c \"q\" \\"));
        assert_eq!(
            links[0].params,
            vec![
                ("rt".into(), Some("temperature-c".into())),
                ("if".into(), Some("sensor".into())),
                ("obs".into(), None),
            ]
        );
    }

    #[test]
    fn whitespace_and_odd_but_valid_input() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse(" \r\n\t"), Ok(vec![]));
        let links = parse(" <a> ; x = 1 ; y ,<b;c,d>;z=\"\"").unwrap();
        assert_eq!(links[0], Link::new("a").with_param("x", "1").with_flag("y"));
        assert_eq!(links[1], Link::new("b;c,d").with_param("z", ""));
        let links = parse("<x>;v=é<>;t=\"ü\\é\"").unwrap();
        assert_eq!(links[0].param("v"), Some("é<>"));
        assert_eq!(links[0].param("t"), Some("üé"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse("a"), Err(LinkFormatError::ExpectedTarget { at: 0 }));
        assert_eq!(
            parse("<a>,"),
            Err(LinkFormatError::ExpectedTarget { at: 4 })
        );
        assert_eq!(
            parse("<a"),
            Err(LinkFormatError::UnterminatedTarget { at: 0 })
        );
        assert_eq!(
            parse("<a>;t=\"x"),
            Err(LinkFormatError::UnterminatedQuote { at: 6 })
        );
        assert_eq!(
            parse("<a>;t=\"x\\"),
            Err(LinkFormatError::UnterminatedQuote { at: 6 })
        );
        assert_eq!(
            parse("<a>;t=\"x\\\""),
            Err(LinkFormatError::UnterminatedQuote { at: 6 })
        );
        assert_eq!(
            parse("<a>;"),
            Err(LinkFormatError::ExpectedParamName { at: 4 })
        );
        assert_eq!(
            parse("<a>;=1"),
            Err(LinkFormatError::ExpectedParamName { at: 4 })
        );
        assert_eq!(
            parse("<a>;b="),
            Err(LinkFormatError::ExpectedValue { at: 6 })
        );
        assert_eq!(
            parse("<a>;b=;c"),
            Err(LinkFormatError::ExpectedValue { at: 6 })
        );
        assert_eq!(
            parse("<a> é"),
            Err(LinkFormatError::Unexpected { ch: 'é', at: 4 })
        );
        assert_eq!(
            parse("<a>;b=1 2"),
            Err(LinkFormatError::Unexpected { ch: '2', at: 8 })
        );
        assert_eq!(
            parse("<a>;b=\"1\"x"),
            Err(LinkFormatError::Unexpected { ch: 'x', at: 9 })
        );
    }

    #[test]
    fn serializes_with_minimal_quoting() {
        let links = vec![
            Link::new("/sensors/temp")
                .with_param("rt", "temperature-c")
                .with_param("if", "sensor")
                .with_param("ct", "0")
                .with_param("sz", "1024")
                .with_flag("obs"),
            Link::new("/x")
                .with_param("rt", "a b")
                .with_param("title", "T")
                .with_param("anchor", "/")
                .with_param("q", "say \"hi\" \\o/")
                .with_param("e", ""),
        ];
        let text = serialize(&links);
        assert_eq!(
            text,
            "</sensors/temp>;rt=temperature-c;if=sensor;ct=0;sz=1024;obs,\
             </x>;rt=\"a b\";title=\"T\";anchor=\"/\";q=\"say \\\"hi\\\" \\\\o/\";e=\"\""
        );
        assert_eq!(parse(&text), Ok(links));
        assert_eq!(serialize(&[]), "");
    }

    #[test]
    fn filtering() {
        let l = Link::new("/sensors/temp")
            .with_param("rt", "temperature-c sensor")
            .with_param("ct", "0")
            .with_flag("obs");
        assert!(l.matches_filter("rt=sensor"));
        assert!(l.matches_filter("rt=temperature-c sensor"));
        assert!(l.matches_filter("rt=temp*"));
        assert!(l.matches_filter("href=/sensors/*"));
        assert!(l.matches_filter("ct=0"));
        assert!(l.matches_filter("obs"));
        assert!(!l.matches_filter("rt=light"));
        assert!(!l.matches_filter("if=*"));
        assert!(!l.matches_filter("href=/a"));
        assert_eq!(
            l.param_words("rt").collect::<Vec<_>>(),
            ["temperature-c", "sensor"]
        );
    }

    fn link_strategy() -> impl Strategy<Value = Link> {
        let param = (
            "[a-zA-Z][a-zA-Z0-9!#$&+.^_`|~*-]{0,6}",
            proptest::option::of(prop_oneof![any::<String>(), "[a-z0-9 \"\\\\,;=]{0,6}"]),
        );
        (
            "[a-zA-Z0-9/._~:?&=;,%-]{0,16}",
            proptest::collection::vec(param, 0..5),
        )
            .prop_map(|(target, params)| Link { target, params })
    }

    proptest! {
        #[test]
        fn serialize_then_parse_is_identity(links in proptest::collection::vec(link_strategy(), 0..5)) {
            let text = serialize(&links);
            prop_assert_eq!(parse(&text), Ok(links), "{}", text);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}", t in "[<>;,=\"\\\\ a-c]{0,40}") {
            let _ = parse(&s);
            let _ = parse(&t);
        }
    }
}
