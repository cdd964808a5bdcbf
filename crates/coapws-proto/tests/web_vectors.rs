//! The codec vectors of the browser library (web/test/vectors.json), checked with the Rust
//! codec: web/coap.js and coapws-proto agree on the same bytes, both ways, and reject the same
//! malformed inputs. The JSON is read with the small parser below (no dev-dependency).

use bytes::Bytes;
use coapws_proto::codec::{DecodeLimits, MAX_EXTENDED_LEN, ws};
use coapws_proto::{Code, Message, OptionNumber, Token};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "JSON: expected {:?} at {}",
            c as char,
            self.i
        );
        self.i += 1;
    }
    fn peek(&mut self) -> u8 {
        self.ws();
        *self.s.get(self.i).expect("JSON: unexpected end")
    }
    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut m = BTreeMap::new();
                if self.peek() == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    let Json::Str(k) = self.value() else {
                        panic!("JSON: key at {}", self.i)
                    };
                    self.eat(b':');
                    m.insert(k, self.value());
                    if self.peek() == b',' {
                        self.i += 1;
                    } else {
                        self.eat(b'}');
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                self.eat(b'[');
                let mut v = Vec::new();
                if self.peek() == b']' {
                    self.i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    if self.peek() == b',' {
                        self.i += 1;
                    } else {
                        self.eat(b']');
                        return Json::Arr(v);
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let c = self.s[self.i];
                    self.i += 1;
                    match c {
                        b'"' => return Json::Str(out),
                        b'\\' => {
                            let e = self.s[self.i];
                            self.i += 1;
                            match e {
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'u' => {
                                    let hex =
                                        std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                                    out.push(
                                        char::from_u32(u32::from_str_radix(hex, 16).unwrap())
                                            .unwrap(),
                                    );
                                    self.i += 4;
                                }
                                other => out.push(other as char),
                            }
                        }
                        _ => {
                            // Copy one UTF-8 character whole.
                            let start = self.i - 1;
                            let mut end = self.i;
                            while end < self.s.len() && (self.s[end] & 0xc0) == 0x80 {
                                end += 1;
                            }
                            out.push_str(std::str::from_utf8(&self.s[start..end]).unwrap());
                            self.i = end;
                        }
                    }
                }
            }
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"-+.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                Json::Num(
                    std::str::from_utf8(&self.s[start..self.i])
                        .unwrap()
                        .parse()
                        .unwrap(),
                )
            }
        }
    }
}

impl Json {
    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(k),
            _ => None,
        }
    }
    fn str(&self, k: &str) -> &str {
        match self.get(k) {
            Some(Json::Str(s)) => s,
            other => panic!("{k}: not a string: {other:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            other => panic!("not an array: {other:?}"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("not a number: {other:?}"),
        }
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some(Json::Bool(true)))
    }
}

fn hex(s: &str) -> Bytes {
    assert_eq!(s.len() % 2, 0, "odd hex {s}");
    Bytes::from(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

fn vectors() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/test/vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, text.len(), "trailing text in {path}");
    v
}

fn limits(v: &Json) -> DecodeLimits {
    DecodeLimits {
        max_message_size: 1 << 20,
        max_token_len: if v.flag("extended_tokens") {
            MAX_EXTENDED_LEN
        } else {
            8
        },
    }
}

#[test]
fn valid_vectors_decode_and_encode_exactly() {
    let all = vectors();
    let valid = all.get("valid").expect("valid").arr();
    assert!(valid.len() >= 30, "only {} valid vectors", valid.len());
    for v in valid {
        let name = v.str("name");
        let bytes = hex(v.str("hex"));
        let mut expected = Message::new(Code(v.get("code").unwrap().num() as u8));
        expected.token = Token::new(hex(v.str("token")));
        for o in v.get("options").unwrap().arr() {
            let o = o.arr();
            let Json::Str(value) = &o[1] else {
                panic!("{name}: option value")
            };
            expected
                .options
                .push(OptionNumber(o[0].num() as u16), hex(value));
        }
        expected.payload = hex(v.str("payload"));

        let decoded = ws::decode(&bytes, &limits(v)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}: decoded fields");
        assert_eq!(
            ws::encode(&expected).unwrap(),
            bytes,
            "{name}: encoding the fields"
        );
        assert_eq!(
            ws::encoded_len(&expected).unwrap(),
            bytes.len(),
            "{name}: encoded_len"
        );
    }
}

#[test]
fn invalid_vectors_are_rejected() {
    let all = vectors();
    let invalid = all.get("invalid").expect("invalid").arr();
    assert!(
        invalid.len() >= 15,
        "only {} invalid vectors",
        invalid.len()
    );
    for v in invalid {
        let name = v.str("name");
        let bytes = hex(v.str("hex"));
        let r = ws::decode(&bytes, &limits(v));
        assert!(r.is_err(), "{name}: decoded as {:?}", r.unwrap());
    }
}
