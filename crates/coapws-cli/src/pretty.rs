//! Payloads as a person at a terminal reads them, by Content-Format: JSON indented, CBOR in
//! diagnostic notation (RFC 8949 §8), link-format one link per line, text as it is. Binary that
//! none of these covers is not written to a terminal (as curl does): `-o FILE` or a pipe gets
//! the bytes.

use coapws::proto::content_format::ContentFormat;

/// How to show `payload` of Content-Format `cf` on a terminal; `Err` says why it is not shown.
pub fn for_terminal(payload: &[u8], cf: Option<u16>) -> Result<String, String> {
    match cf.map(ContentFormat) {
        Some(ContentFormat::JSON) => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                if let Ok(s) = serde_json::to_string_pretty(&v) {
                    return Ok(s);
                }
            }
        }
        Some(ContentFormat::CBOR) => {
            return match ciborium::from_reader::<ciborium::Value, _>(payload) {
                Ok(v) => Ok(diagnostic(&v)),
                Err(e) => Err(format!("CBOR payload that does not decode ({e})")),
            };
        }
        Some(ContentFormat::LINK_FORMAT) => {
            if let Ok(text) = std::str::from_utf8(payload) {
                if let Ok(links) = coapws::proto::link_format::parse(text) {
                    let lines: Vec<String> = links
                        .iter()
                        .map(|l| coapws::proto::link_format::serialize(std::slice::from_ref(l)))
                        .collect();
                    return Ok(lines.join("\n"));
                }
            }
        }
        _ => {}
    }
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "a binary payload of {} bytes{} is not written to a terminal",
            payload.len(),
            cf.map(|c| format!(" ({})", ContentFormat(c)))
                .unwrap_or_default()
        )),
    }
}

/// RFC 8949 §8 diagnostic notation.
fn diagnostic(v: &ciborium::Value) -> String {
    use ciborium::Value as V;
    match v {
        V::Integer(i) => i128::from(*i).to_string(),
        V::Bytes(b) => format!(
            "h'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        V::Float(f) if f.is_nan() => "NaN".into(),
        V::Float(f) if f.is_infinite() => if *f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        V::Float(f) if f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        V::Float(f) => f.to_string(),
        V::Text(t) => format!("{t:?}"),
        V::Bool(b) => b.to_string(),
        V::Null => "null".into(),
        V::Tag(t, inner) => format!("{t}({})", diagnostic(inner)),
        V::Array(items) => format!(
            "[{}]",
            items.iter().map(diagnostic).collect::<Vec<_>>().join(", ")
        ),
        V::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", diagnostic(k), diagnostic(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "undefined".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_indented() {
        let s = for_terminal(br#"{"a":[1,2]}"#, Some(50)).unwrap();
        assert_eq!(s, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn cbor_in_diagnostic_notation() {
        // RFC 8949 appendix A: {"a": 1, "b": [2, 3]}
        let s = for_terminal(
            &[0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x82, 0x02, 0x03],
            Some(60),
        );
        assert_eq!(s.unwrap(), r#"{"a": 1, "b": [2, 3]}"#);
        // 1(1363896240), h'01020304', -1, 1.5, true, null
        let s = for_terminal(
            &[
                0x86, 0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0, 0x44, 1, 2, 3, 4, 0x20, 0xf9, 0x3e, 0x00,
                0xf5, 0xf6,
            ],
            Some(60),
        );
        assert_eq!(
            s.unwrap(),
            "[1(1363896240), h'01020304', -1, 1.5, true, null]"
        );
        assert!(for_terminal(&[0xa2, 0x61], Some(60)).is_err());
    }

    #[test]
    fn link_format_one_per_line_and_binary_refused() {
        let s = for_terminal(b"</a>;ct=0,</b>;obs", Some(40)).unwrap();
        assert_eq!(s, "</a>;ct=0\n</b>;obs");
        assert!(for_terminal(&[0, 1, 2, 0xff], Some(42)).is_err());
        assert_eq!(for_terminal(b"plain text\n", None).unwrap(), "plain text\n");
    }
}
