//! Options: numbers, the registry of known options, and the ordered option list of a message.
//!
//! Option numbers are an open newtype ([`OptionNumber`]); [`OptionNumber::info`] gives what the
//! registry knows (name, value format, length bounds, repeatability) for RFC 7252, 7641, 7959,
//! 7967, 8613, 8768 and 9175. Signaling messages (7.xx) number their options per code: see
//! [`crate::signaling`]. [`Options`] keeps options sorted by number, in insertion order within a
//! number, as they go on the wire.

use bytes::Bytes;
use std::fmt;

/// An option number. Bits of the number carry its properties (RFC 7252 §5.4.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OptionNumber(pub u16);

/// How an option's value is encoded (RFC 7252 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// Zero-length value.
    Empty,
    /// Opaque bytes.
    Opaque,
    /// Unsigned integer in network byte order, leading zero bytes omitted.
    Uint,
    /// UTF-8 string in Net-Unicode form.
    String,
}

/// What the registry knows about an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionInfo {
    /// Registered name, e.g. `Uri-Path`.
    pub name: &'static str,
    /// Value format.
    pub format: ValueFormat,
    /// Smallest allowed value length in bytes.
    pub min_len: usize,
    /// Largest allowed value length in bytes.
    pub max_len: usize,
    /// Whether the option may occur more than once.
    pub repeatable: bool,
}

macro_rules! options {
    ($($(#[$doc:meta])* $name:ident = ($num:literal, $text:literal, $fmt:ident, $min:literal, $max:literal, $rep:literal);)*) => {
        impl OptionNumber {
            $($(#[$doc])* pub const $name: OptionNumber = OptionNumber($num);)*
        }
        const REGISTRY: &[(OptionNumber, OptionInfo)] = &[$(
            (OptionNumber($num), OptionInfo {
                name: $text,
                format: ValueFormat::$fmt,
                min_len: $min,
                max_len: $max,
                repeatable: $rep,
            }),
        )*];
    };
}

options! {
    /// If-Match (RFC 7252).
    IF_MATCH = (1, "If-Match", Opaque, 0, 8, true);
    /// Uri-Host (RFC 7252).
    URI_HOST = (3, "Uri-Host", String, 1, 255, false);
    /// ETag (RFC 7252); repeatable in requests.
    ETAG = (4, "ETag", Opaque, 1, 8, true);
    /// If-None-Match (RFC 7252).
    IF_NONE_MATCH = (5, "If-None-Match", Empty, 0, 0, false);
    /// Observe (RFC 7641).
    OBSERVE = (6, "Observe", Uint, 0, 3, false);
    /// Uri-Port (RFC 7252).
    URI_PORT = (7, "Uri-Port", Uint, 0, 2, false);
    /// Location-Path (RFC 7252).
    LOCATION_PATH = (8, "Location-Path", String, 0, 255, true);
    /// OSCORE (RFC 8613); number only, no OSCORE processing.
    OSCORE = (9, "OSCORE", Opaque, 0, 255, false);
    /// Uri-Path (RFC 7252).
    URI_PATH = (11, "Uri-Path", String, 0, 255, true);
    /// Content-Format (RFC 7252).
    CONTENT_FORMAT = (12, "Content-Format", Uint, 0, 2, false);
    /// Max-Age (RFC 7252).
    MAX_AGE = (14, "Max-Age", Uint, 0, 4, false);
    /// Uri-Query (RFC 7252).
    URI_QUERY = (15, "Uri-Query", String, 0, 255, true);
    /// Hop-Limit (RFC 8768).
    HOP_LIMIT = (16, "Hop-Limit", Uint, 1, 1, false);
    /// Accept (RFC 7252).
    ACCEPT = (17, "Accept", Uint, 0, 2, false);
    /// Location-Query (RFC 7252).
    LOCATION_QUERY = (20, "Location-Query", String, 0, 255, true);
    /// Block2 (RFC 7959).
    BLOCK2 = (23, "Block2", Uint, 0, 3, false);
    /// Block1 (RFC 7959).
    BLOCK1 = (27, "Block1", Uint, 0, 3, false);
    /// Size2 (RFC 7959).
    SIZE2 = (28, "Size2", Uint, 0, 4, false);
    /// Proxy-Uri (RFC 7252).
    PROXY_URI = (35, "Proxy-Uri", String, 1, 1034, false);
    /// Proxy-Scheme (RFC 7252).
    PROXY_SCHEME = (39, "Proxy-Scheme", String, 1, 255, false);
    /// Size1 (RFC 7252, RFC 7959).
    SIZE1 = (60, "Size1", Uint, 0, 4, false);
    /// Echo (RFC 9175).
    ECHO = (252, "Echo", Opaque, 1, 40, false);
    /// No-Response (RFC 7967).
    NO_RESPONSE = (258, "No-Response", Uint, 0, 1, false);
    /// Request-Tag (RFC 9175).
    REQUEST_TAG = (292, "Request-Tag", Opaque, 0, 8, true);
}

impl OptionNumber {
    /// Critical options must be understood by the receiver (odd numbers).
    pub const fn is_critical(self) -> bool {
        self.0 & 1 != 0
    }
    /// Unsafe options must be understood by a proxy forwarding them.
    pub const fn is_unsafe(self) -> bool {
        self.0 & 2 != 0
    }
    /// NoCacheKey options are not part of the cache key (only meaningful for safe options).
    pub const fn is_no_cache_key(self) -> bool {
        self.0 & 0x1e == 0x1c
    }
    /// The registry entry for this number, for options of requests and responses.
    pub fn info(self) -> Option<&'static OptionInfo> {
        REGISTRY.iter().find(|(n, _)| *n == self).map(|(_, i)| i)
    }
    /// Every registered option number with its entry, in ascending order.
    pub fn registry() -> impl Iterator<Item = (OptionNumber, &'static OptionInfo)> {
        REGISTRY.iter().map(|(n, i)| (*n, i))
    }
}

impl fmt::Debug for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.info() {
            Some(i) => write!(f, "{}({})", i.name, self.0),
            None => write!(f, "Option({})", self.0),
        }
    }
}

impl fmt::Display for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Encodes an unsigned integer option value: big-endian, no leading zero bytes (0 is empty).
pub fn encode_uint(value: u32) -> Bytes {
    let be = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    Bytes::copy_from_slice(&be[skip..])
}

/// An option's value as people read it: text for string options, the number for uint ones,
/// Block values as NUM/M/SIZE, `0x` and hex for the rest (and for values that break their
/// format); empty for an empty option.
pub fn value_text(number: OptionNumber, value: &[u8]) -> String {
    if matches!(number, OptionNumber::BLOCK1 | OptionNumber::BLOCK2) {
        if let Some(b) = BlockValue::decode(value) {
            return format!("{}/{}/{}", b.num, u8::from(b.more), b.size());
        }
    }
    match number.info().map(|i| i.format) {
        Some(ValueFormat::String) => return String::from_utf8_lossy(value).into_owned(),
        Some(ValueFormat::Uint) => {
            if let Some(x) = decode_uint(value) {
                return x.to_string();
            }
        }
        _ => {}
    }
    if value.is_empty() {
        return String::new();
    }
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// Decodes an unsigned integer option value of up to 4 bytes; `None` if longer.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Why an option list does not satisfy the registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionProblem {
    /// A critical option this endpoint does not know.
    #[error("unknown critical option {0}")]
    UnknownCritical(OptionNumber),
    /// A non-repeatable option occurs more than once.
    #[error("option {0} repeated")]
    Repeated(OptionNumber),
    /// A value length outside the registered bounds.
    #[error("option {number} has length {len}, allowed {min}..={max}")]
    BadLength {
        /// The option.
        number: OptionNumber,
        /// Its value length.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
}

impl OptionProblem {
    /// The option the problem is about.
    pub fn number(&self) -> OptionNumber {
        match self {
            OptionProblem::UnknownCritical(n) | OptionProblem::Repeated(n) => *n,
            OptionProblem::BadLength { number, .. } => *number,
        }
    }
}

/// The options of a message, kept in ascending number order (stable within a number).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Options {
    list: Vec<(OptionNumber, Bytes)>,
}

impl Options {
    /// An empty list.
    pub fn new() -> Options {
        Options { list: Vec::new() }
    }
    /// Number of option instances.
    pub fn len(&self) -> usize {
        self.list.len()
    }
    /// True when there are no options.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// All options in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (OptionNumber, &Bytes)> {
        self.list.iter().map(|(n, v)| (*n, v))
    }
    /// Appends an option, keeping number order (after existing instances of the same number).
    pub fn push(&mut self, number: OptionNumber, value: impl Into<Bytes>) {
        let value = value.into();
        // Fast path: the common case is building in ascending order.
        if self.list.last().is_none_or(|(n, _)| *n <= number) {
            self.list.push((number, value));
        } else {
            let at = self.list.partition_point(|(n, _)| *n <= number);
            self.list.insert(at, (number, value));
        }
    }
    /// Appends an option whose number is not below the last one; used by decoders.
    pub(crate) fn push_ordered(&mut self, number: OptionNumber, value: Bytes) {
        debug_assert!(self.list.last().is_none_or(|(n, _)| *n <= number));
        self.list.push((number, value));
    }
    /// Replaces all instances of `number` with one value.
    pub fn set(&mut self, number: OptionNumber, value: impl Into<Bytes>) {
        self.remove(number);
        self.push(number, value);
    }
    /// Replaces all instances of `number` with one uint value.
    pub fn set_uint(&mut self, number: OptionNumber, value: u32) {
        self.set(number, encode_uint(value));
    }
    /// Removes every instance of `number`.
    pub fn remove(&mut self, number: OptionNumber) {
        self.list.retain(|(n, _)| *n != number);
    }
    /// True if `number` is present.
    pub fn contains(&self, number: OptionNumber) -> bool {
        self.list.iter().any(|(n, _)| *n == number)
    }
    /// The first value of `number`.
    pub fn get(&self, number: OptionNumber) -> Option<&Bytes> {
        self.list.iter().find(|(n, _)| *n == number).map(|(_, v)| v)
    }
    /// Every value of `number`, in order.
    pub fn get_all(&self, number: OptionNumber) -> impl Iterator<Item = &Bytes> {
        self.list
            .iter()
            .filter(move |(n, _)| *n == number)
            .map(|(_, v)| v)
    }
    /// The first value of `number` read as uint; `None` if absent or longer than 4 bytes.
    pub fn get_uint(&self, number: OptionNumber) -> Option<u32> {
        self.get(number).and_then(|v| decode_uint(v))
    }
    /// Every value of `number` read as UTF-8 (invalid sequences replaced).
    pub fn get_strings(&self, number: OptionNumber) -> Vec<String> {
        self.get_all(number)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Uri-Path segments.
    pub fn uri_path(&self) -> Vec<String> {
        self.get_strings(OptionNumber::URI_PATH)
    }
    /// Uri-Path joined with `/`, with a leading `/`.
    pub fn uri_path_string(&self) -> String {
        let mut s = String::new();
        for seg in self.get_all(OptionNumber::URI_PATH) {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(seg));
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
    /// Uri-Query items.
    pub fn uri_query(&self) -> Vec<String> {
        self.get_strings(OptionNumber::URI_QUERY)
    }
    /// Uri-Host.
    pub fn uri_host(&self) -> Option<String> {
        self.get(OptionNumber::URI_HOST)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// Content-Format.
    pub fn content_format(&self) -> Option<u16> {
        self.get_uint(OptionNumber::CONTENT_FORMAT)
            .and_then(|v| u16::try_from(v).ok())
    }
    /// Accept.
    pub fn accept(&self) -> Option<u16> {
        self.get_uint(OptionNumber::ACCEPT)
            .and_then(|v| u16::try_from(v).ok())
    }
    /// Observe.
    pub fn observe(&self) -> Option<u32> {
        self.get_uint(OptionNumber::OBSERVE)
    }
    /// Max-Age in seconds (default 60 when absent, RFC 7252 §5.10.5).
    pub fn max_age(&self) -> u32 {
        self.get_uint(OptionNumber::MAX_AGE).unwrap_or(60)
    }
    /// No-Response bits (RFC 7967); 0 when absent.
    pub fn no_response(&self) -> u8 {
        self.get_uint(OptionNumber::NO_RESPONSE)
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(0)
    }
    /// Block1.
    pub fn block1(&self) -> Option<BlockValue> {
        self.get(OptionNumber::BLOCK1)
            .and_then(|v| BlockValue::decode(v))
    }
    /// Block2.
    pub fn block2(&self) -> Option<BlockValue> {
        self.get(OptionNumber::BLOCK2)
            .and_then(|v| BlockValue::decode(v))
    }

    /// Checks the list against the registry, as a receiver of a request or response does
    /// (RFC 7252 §5.4.1, §5.4.5): the first unknown critical option, repeated non-repeatable
    /// option or out-of-bounds length is reported. Elective problems are not reported here;
    /// use [`Options::without_bad_elective`] to drop them.
    pub fn check(&self) -> Result<(), OptionProblem> {
        self.find_problem(true)
    }

    /// Drops unknown elective options and elective options that are repeated or have a bad
    /// length: RFC 7252 §5.4.1 says to ignore them.
    pub fn without_bad_elective(&self) -> Options {
        let mut out = Options::new();
        let mut prev: Option<OptionNumber> = None;
        for (n, v) in self.iter() {
            let keep = n.is_critical()
                || match n.info() {
                    None => false,
                    Some(info) => {
                        (info.repeatable || prev != Some(n))
                            && (info.min_len..=info.max_len).contains(&v.len())
                    }
                };
            if keep {
                out.push_ordered(n, v.clone());
            }
            prev = Some(n);
        }
        out
    }

    fn find_problem(&self, critical_only: bool) -> Result<(), OptionProblem> {
        let mut prev: Option<OptionNumber> = None;
        for (n, v) in self.iter() {
            if critical_only && !n.is_critical() {
                prev = Some(n);
                continue;
            }
            let Some(info) = n.info() else {
                return Err(OptionProblem::UnknownCritical(n));
            };
            if !info.repeatable && prev == Some(n) {
                return Err(OptionProblem::Repeated(n));
            }
            if !(info.min_len..=info.max_len).contains(&v.len()) {
                return Err(OptionProblem::BadLength {
                    number: n,
                    len: v.len(),
                    min: info.min_len,
                    max: info.max_len,
                });
            }
            prev = Some(n);
        }
        Ok(())
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (n, v) in self.iter() {
            match n.info().map(|i| i.format) {
                Some(ValueFormat::String) => l.entry(&(n, String::from_utf8_lossy(v))),
                Some(ValueFormat::Uint) => l.entry(&(n, decode_uint(v))),
                _ => l.entry(&(n, v)),
            };
        }
        l.finish()
    }
}

impl FromIterator<(OptionNumber, Bytes)> for Options {
    fn from_iter<I: IntoIterator<Item = (OptionNumber, Bytes)>>(iter: I) -> Options {
        let mut o = Options::new();
        for (n, v) in iter {
            o.push(n, v);
        }
        o
    }
}

/// A Block1/Block2 value: block number, more flag and size exponent (RFC 7959 §2.2).
///
/// SZX 7 is BERT (RFC 8323 §6): blocks of 1024 bytes, possibly several per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockValue {
    /// Block number (20 bits at most).
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: block size is 2^(szx+4); 7 means BERT.
    pub szx: u8,
}

impl BlockValue {
    /// Largest block number a 3-byte value carries.
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// Decodes a block option value (0–3 bytes).
    pub fn decode(v: &[u8]) -> Option<BlockValue> {
        if v.len() > 3 {
            return None;
        }
        let raw = decode_uint(v)?;
        Some(BlockValue {
            num: raw >> 4,
            more: raw & 0x08 != 0,
            szx: (raw & 0x07) as u8,
        })
    }
    /// Encodes the value, shortest form.
    pub fn encode(self) -> Bytes {
        encode_uint(
            (self.num.min(Self::MAX_NUM) << 4)
                | (u32::from(self.more) << 3)
                | u32::from(self.szx & 7),
        )
    }
    /// Block size in bytes (1024 for BERT).
    pub fn size(self) -> usize {
        1usize << (self.szx.min(6) + 4)
    }
    /// True for SZX 7.
    pub fn is_bert(self) -> bool {
        self.szx == 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_properties() {
        assert!(OptionNumber::URI_PATH.is_critical());
        assert!(OptionNumber::URI_PATH.is_unsafe());
        assert!(!OptionNumber::ETAG.is_critical());
        assert!(OptionNumber::SIZE1.is_no_cache_key());
        assert!(!OptionNumber::NO_RESPONSE.is_critical());
        assert_eq!(OptionNumber::URI_PATH.info().unwrap().name, "Uri-Path");
        assert!(OptionNumber(65001).info().is_none());
    }

    #[test]
    fn uint_round_trip() {
        for v in [0u32, 1, 255, 256, 65535, 65536, 1 << 24, u32::MAX] {
            assert_eq!(decode_uint(&encode_uint(v)), Some(v));
        }
        assert!(encode_uint(0).is_empty());
        assert_eq!(&encode_uint(1152)[..], &[0x04, 0x80]);
    }

    #[test]
    fn ordered_insert() {
        let mut o = Options::new();
        o.push(OptionNumber::URI_QUERY, "q");
        o.push(OptionNumber::URI_PATH, "a");
        o.push(OptionNumber::URI_PATH, "b");
        o.push(OptionNumber::URI_HOST, "h");
        let nums: Vec<u16> = o.iter().map(|(n, _)| n.0).collect();
        assert_eq!(nums, [3, 11, 11, 15]);
        assert_eq!(o.uri_path(), ["a", "b"]);
        assert_eq!(o.uri_path_string(), "/a/b");
    }

    #[test]
    fn check_reports_critical_problems_only() {
        let mut o = Options::new();
        o.push(OptionNumber(65000), "x"); // elective unknown: fine
        assert_eq!(o.check(), Ok(()));
        o.push(OptionNumber(65001), "x");
        assert_eq!(
            o.check(),
            Err(OptionProblem::UnknownCritical(OptionNumber(65001)))
        );

        let mut o = Options::new();
        o.push(OptionNumber::URI_HOST, "a");
        o.push(OptionNumber::URI_HOST, "b");
        assert_eq!(
            o.check(),
            Err(OptionProblem::Repeated(OptionNumber::URI_HOST))
        );

        let mut o = Options::new();
        o.push(OptionNumber::URI_PORT, vec![1, 2, 3]);
        assert!(matches!(o.check(), Err(OptionProblem::BadLength { .. })));
        // Content-Format is elective: a bad one is dropped, not reported.
        let mut o = Options::new();
        o.push(OptionNumber::CONTENT_FORMAT, vec![1, 2, 3]);
        o.push(OptionNumber::MAX_AGE, vec![1]);
        assert_eq!(o.without_bad_elective().len(), 1);
    }

    #[test]
    fn block_value() {
        let b = BlockValue {
            num: 3,
            more: false,
            szx: 7,
        };
        assert_eq!(&b.encode()[..], &[0x37]);
        assert_eq!(BlockValue::decode(&[0x37]), Some(b));
        assert_eq!(b.size(), 1024);
        assert_eq!(
            BlockValue {
                num: 0,
                more: true,
                szx: 2
            }
            .size(),
            64
        );
    }
}
