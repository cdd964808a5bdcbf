//! Content-Format numbers (RFC 7252 §12.3) and the media types they stand for.
//!
//! [`ContentFormat`] is an open newtype over the number carried in the Content-Format and
//! Accept options. The built-in table covers IANA "CoAP Content-Formats" entries from RFCs;
//! numbers outside it are still valid values, they just have no name here. Helpers map file
//! extensions (for a file server) and command-line arguments to numbers.

use std::fmt;

/// Why a command-line content-format argument was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentFormatError {
    /// Neither a number, a registered media type nor a known short name.
    #[error("unknown content-format {0:?}")]
    Unknown(String),
    /// A number above 65535.
    #[error("content-format number {0} is out of range (0-65535)")]
    OutOfRange(String),
}

/// A Content-Format number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentFormat(pub u16);

macro_rules! formats {
    ($($(#[$doc:meta])* $name:ident = ($num:literal, $text:literal);)*) => {
        impl ContentFormat {
            $($(#[$doc])* pub const $name: ContentFormat = ContentFormat($num);)*
        }
        const REGISTRY: &[(u16, &str)] = &[$(($num, $text),)*];
    };
}

formats! {
    /// `text/plain; charset=utf-8` (RFC 7252).
    TEXT_PLAIN = (0, "text/plain; charset=utf-8");
    /// COSE_Encrypt0 (RFC 9052).
    COSE_ENCRYPT0 = (16, "application/cose; cose-type=\"cose-encrypt0\"");
    /// COSE_Mac0 (RFC 9052).
    COSE_MAC0 = (17, "application/cose; cose-type=\"cose-mac0\"");
    /// COSE_Sign1 (RFC 9052).
    COSE_SIGN1 = (18, "application/cose; cose-type=\"cose-sign1\"");
    /// `application/ace+cbor` (RFC 9200).
    ACE_CBOR = (19, "application/ace+cbor");
    /// `application/link-format` (RFC 6690).
    LINK_FORMAT = (40, "application/link-format");
    /// `application/xml` (RFC 7252).
    XML = (41, "application/xml");
    /// `application/octet-stream` (RFC 7252).
    OCTET_STREAM = (42, "application/octet-stream");
    /// `application/exi` (RFC 7252).
    EXI = (47, "application/exi");
    /// `application/json` (RFC 7252).
    JSON = (50, "application/json");
    /// `application/json-patch+json` (RFC 8132).
    JSON_PATCH_JSON = (51, "application/json-patch+json");
    /// `application/merge-patch+json` (RFC 8132).
    MERGE_PATCH_JSON = (52, "application/merge-patch+json");
    /// `application/cbor` (RFC 8949).
    CBOR = (60, "application/cbor");
    /// `application/cwt` (RFC 8392).
    CWT = (61, "application/cwt");
    /// `application/multipart-core` (RFC 8710).
    MULTIPART_CORE = (62, "application/multipart-core");
    /// `application/cbor-seq` (RFC 8742).
    CBOR_SEQ = (63, "application/cbor-seq");
    /// COSE_Encrypt (RFC 9052).
    COSE_ENCRYPT = (96, "application/cose; cose-type=\"cose-encrypt\"");
    /// COSE_Mac (RFC 9052).
    COSE_MAC = (97, "application/cose; cose-type=\"cose-mac\"");
    /// COSE_Sign (RFC 9052).
    COSE_SIGN = (98, "application/cose; cose-type=\"cose-sign\"");
    /// `application/cose-key` (RFC 9052).
    COSE_KEY = (101, "application/cose-key");
    /// `application/cose-key-set` (RFC 9052).
    COSE_KEY_SET = (102, "application/cose-key-set");
    /// `application/senml+json` (RFC 8428).
    SENML_JSON = (110, "application/senml+json");
    /// `application/sensml+json` (RFC 8428).
    SENSML_JSON = (111, "application/sensml+json");
    /// `application/senml+cbor` (RFC 8428).
    SENML_CBOR = (112, "application/senml+cbor");
    /// `application/sensml+cbor` (RFC 8428).
    SENSML_CBOR = (113, "application/sensml+cbor");
    /// `application/senml-exi` (RFC 8428).
    SENML_EXI = (114, "application/senml-exi");
    /// `application/sensml-exi` (RFC 8428).
    SENSML_EXI = (115, "application/sensml-exi");
    /// `application/coap-group+json` (RFC 7390).
    COAP_GROUP_JSON = (256, "application/coap-group+json");
    /// `application/senml+xml` (RFC 8428).
    SENML_XML = (310, "application/senml+xml");
    /// `application/sensml+xml` (RFC 8428).
    SENSML_XML = (311, "application/sensml+xml");
    /// `application/senml-etch+json` (RFC 8790).
    SENML_ETCH_JSON = (320, "application/senml-etch+json");
    /// `application/senml-etch+cbor` (RFC 8790).
    SENML_ETCH_CBOR = (322, "application/senml-etch+cbor");
    /// `application/td+json` (W3C Web of Things Thing Description).
    TD_JSON = (432, "application/td+json");
    /// `application/oscore` (RFC 8613).
    OSCORE = (10001, "application/oscore");
}

/// File extensions a file server may map, lowercase, without the dot.
const EXTENSIONS: &[(&str, u16)] = &[
    ("txt", 0),
    ("text", 0),
    ("xml", 41),
    ("bin", 42),
    ("exi", 47),
    ("json", 50),
    ("cbor", 60),
    ("senml", 110),
    ("sensml", 111),
    ("senmlc", 112),
    ("sensmlc", 113),
    ("senmle", 114),
    ("sensmle", 115),
    ("senmlx", 310),
    ("sensmlx", 311),
];

impl ContentFormat {
    /// The registered media type (with parameters), e.g. `application/json`.
    pub fn name(self) -> Option<&'static str> {
        REGISTRY.iter().find(|(n, _)| *n == self.0).map(|(_, t)| *t)
    }

    /// Every format of the built-in table with its media type, in ascending order.
    pub fn registry() -> impl Iterator<Item = (ContentFormat, &'static str)> {
        REGISTRY.iter().map(|(n, t)| (ContentFormat(*n), *t))
    }

    /// Looks up a media type. Type, subtype and parameters compare ignoring ASCII case,
    /// whitespace around `;` and `=`, and quotes around parameter values; `text/plain`
    /// without a charset is accepted for 0.
    pub fn from_name(name: &str) -> Option<ContentFormat> {
        let wanted = MediaType::split(name)?;
        if wanted.essence == "text/plain" && wanted.params.is_empty() {
            return Some(ContentFormat::TEXT_PLAIN);
        }
        REGISTRY
            .iter()
            .find(|(_, t)| MediaType::split(t).is_some_and(|m| m == wanted))
            .map(|(n, _)| ContentFormat(*n))
    }

    /// The format for a file extension (with or without the leading dot, any case):
    /// `txt`/`text` 0, `xml` 41, `bin` 42, `exi` 47, `json` 50, `cbor` 60, and the SenML
    /// extensions of RFC 8428 (`senml`, `senmlc`, `senmlx`, `senmle` and the `sensml` ones).
    pub fn from_extension(ext: &str) -> Option<ContentFormat> {
        let ext = ext.strip_prefix('.').unwrap_or(ext);
        EXTENSIONS
            .iter()
            .find(|(e, _)| e.eq_ignore_ascii_case(ext))
            .map(|(_, n)| ContentFormat(*n))
    }

    /// Parses a command-line argument: a number (`50`), a media type
    /// (`application/json`), the subtype of a registered type without parameters other than
    /// charset (`json`, `link-format`, `senml+cbor`, `plain`), or a file extension (`txt`).
    pub fn parse_arg(arg: &str) -> Result<ContentFormat, ContentFormatError> {
        let arg = arg.trim();
        if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            return arg
                .parse::<u16>()
                .map(ContentFormat)
                .map_err(|_| ContentFormatError::OutOfRange(arg.to_owned()));
        }
        if let Some(cf) = ContentFormat::from_name(arg) {
            return Ok(cf);
        }
        let by_subtype = REGISTRY.iter().find(|(_, t)| {
            MediaType::split(t).is_some_and(|m| {
                m.params.iter().all(|(k, _)| k == "charset")
                    && m.essence
                        .split_once('/')
                        .is_some_and(|(_, sub)| sub.eq_ignore_ascii_case(arg))
            })
        });
        if let Some((n, _)) = by_subtype {
            return Ok(ContentFormat(*n));
        }
        ContentFormat::from_extension(arg)
            .ok_or_else(|| ContentFormatError::Unknown(arg.to_owned()))
    }

    /// True for formats whose payload is text worth printing as such: `text/*`, link-format,
    /// XML and JSON types (including `+json` and `+xml` suffixes). False for unknown numbers.
    pub fn is_text(self) -> bool {
        let Some(name) = self.name() else {
            return false;
        };
        let essence = name.split(';').next().unwrap_or(name);
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        ty == "text"
            || matches!(sub, "json" | "xml" | "link-format")
            || sub.ends_with("+json")
            || sub.ends_with("+xml")
    }
}

impl From<u16> for ContentFormat {
    fn from(n: u16) -> ContentFormat {
        ContentFormat(n)
    }
}

impl From<ContentFormat> for u16 {
    fn from(cf: ContentFormat) -> u16 {
        cf.0
    }
}

/// Shows the media type when known, else the number.
impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A media type reduced for comparison: lowercase `type/subtype` and parameters.
#[derive(PartialEq, Eq)]
struct MediaType {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    fn split(text: &str) -> Option<MediaType> {
        let mut parts = text.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        if ty.is_empty() || sub.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            params.push((k.trim().to_ascii_lowercase(), v.to_ascii_lowercase()));
        }
        params.sort();
        Some(MediaType { essence, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            ContentFormat::TEXT_PLAIN.name(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(ContentFormat(40).name(), Some("application/link-format"));
        assert_eq!(ContentFormat::JSON.0, 50);
        assert_eq!(ContentFormat::CBOR.0, 60);
        assert_eq!(ContentFormat::SENML_CBOR.0, 112);
        assert_eq!(ContentFormat(65000).name(), None);
        assert_eq!(ContentFormat::JSON.to_string(), "application/json");
        assert_eq!(ContentFormat(65000).to_string(), "65000");
        // Every name maps back to its number, and the table is sorted without duplicates.
        let mut prev = None;
        for (cf, name) in ContentFormat::registry() {
            assert_eq!(ContentFormat::from_name(name), Some(cf), "{name}");
            assert!(prev < Some(cf.0));
            prev = Some(cf.0);
        }
    }

    #[test]
    fn from_name_is_lenient_on_form() {
        let t = Some(ContentFormat::TEXT_PLAIN);
        assert_eq!(ContentFormat::from_name("text/plain"), t);
        assert_eq!(ContentFormat::from_name("Text/Plain;charset=UTF-8"), t);
        assert_eq!(
            ContentFormat::from_name(" text/plain ; charset=\"utf-8\""),
            t
        );
        assert_eq!(
            ContentFormat::from_name("application/cose;cose-type=cose-sign1"),
            Some(ContentFormat::COSE_SIGN1)
        );
        assert_eq!(
            ContentFormat::from_name("APPLICATION/JSON"),
            Some(ContentFormat::JSON)
        );
        assert_eq!(ContentFormat::from_name("application/cose"), None);
        assert_eq!(ContentFormat::from_name("text/html"), None);
        assert_eq!(ContentFormat::from_name("json"), None);
        assert_eq!(ContentFormat::from_name(""), None);
        assert_eq!(ContentFormat::from_name("a/b; c"), None);
    }

    #[test]
    fn command_line_arguments() {
        let p = |s: &str| ContentFormat::parse_arg(s);
        assert_eq!(p("50"), Ok(ContentFormat::JSON));
        assert_eq!(p("65535"), Ok(ContentFormat(65535)));
        assert_eq!(
            p("65536"),
            Err(ContentFormatError::OutOfRange("65536".into()))
        );
        assert_eq!(p("application/cbor"), Ok(ContentFormat::CBOR));
        assert_eq!(p("json"), Ok(ContentFormat::JSON));
        assert_eq!(p("link-format"), Ok(ContentFormat::LINK_FORMAT));
        assert_eq!(p("plain"), Ok(ContentFormat::TEXT_PLAIN));
        assert_eq!(p("senml+cbor"), Ok(ContentFormat::SENML_CBOR));
        assert_eq!(p("txt"), Ok(ContentFormat::TEXT_PLAIN));
        assert_eq!(p("cose"), Err(ContentFormatError::Unknown("cose".into())));
        assert_eq!(p(""), Err(ContentFormatError::Unknown(String::new())));
        assert_eq!(p("-1"), Err(ContentFormatError::Unknown("-1".into())));
    }

    #[test]
    fn extensions() {
        let e = |s: &str| ContentFormat::from_extension(s);
        assert_eq!(e("txt"), Some(ContentFormat::TEXT_PLAIN));
        assert_eq!(e(".JSON"), Some(ContentFormat::JSON));
        assert_eq!(e("cbor"), Some(ContentFormat::CBOR));
        assert_eq!(e("xml"), Some(ContentFormat::XML));
        assert_eq!(e("bin"), Some(ContentFormat::OCTET_STREAM));
        assert_eq!(e("senmlc"), Some(ContentFormat::SENML_CBOR));
        assert_eq!(e("html"), None);
        assert_eq!(e(""), None);
    }

    #[test]
    fn text_detection() {
        for cf in [0, 40, 41, 50, 51, 52, 110, 111, 256, 310, 320, 432] {
            assert!(ContentFormat(cf).is_text(), "{cf}");
        }
        for cf in [16, 42, 47, 60, 61, 112, 10001, 65000] {
            assert!(!ContentFormat(cf).is_text(), "{cf}");
        }
    }
}
