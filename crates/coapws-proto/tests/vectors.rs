//! Every test vector of ../shared/CONFORMANCE.md §9 that is a CoAP message, decoded and
//! re-encoded in the framing it names. (The masked WebSocket frames are tested in `coapws`.)

use bytes::Bytes;
use coapws_proto::codec::{DecodeLimits, tcp, ws};
use coapws_proto::signaling::{Csm, Signal};
use coapws_proto::{BlockValue, Code, Message, OptionNumber, Token};

fn hex(s: &str) -> Bytes {
    let digits: String = s.split_whitespace().collect();
    Bytes::from(
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// Decodes `bytes` as WebSocket framing, checks it re-encodes identically, returns it.
fn ws_round_trip(bytes: &str) -> Message {
    let b = hex(bytes);
    let m = ws::decode(&b, &limits()).expect("decodes");
    assert_eq!(ws::encode(&m).unwrap(), b, "re-encoding {m:?}");
    assert_eq!(ws::encoded_len(&m).unwrap(), b.len());
    m
}

fn tcp_round_trip(bytes: &str) -> Message {
    let b = hex(bytes);
    let m = tcp::decode(&b, &limits()).expect("decodes");
    assert_eq!(tcp::encode(&m).unwrap(), b, "re-encoding {m:?}");
    assert_eq!(tcp::encoded_len(&m).unwrap(), b.len());
    m
}

/// The same message in both framings.
fn both(ws_hex: &str, tcp_hex: &str) -> Message {
    let a = ws_round_trip(ws_hex);
    let b = tcp_round_trip(tcp_hex);
    assert_eq!(a, b);
    a
}

#[test]
fn aiocoap_csm() {
    let m = ws_round_trip("00 e1 23 10 00 00 20");
    assert_eq!(
        Signal::parse(&m).unwrap(),
        Signal::Csm(Csm {
            max_message_size: Some(1_048_576),
            block_wise_transfer: true,
            extended_token_length: None
        })
    );
}

#[test]
fn aiocoap_hello_response() {
    let m = ws_round_trip("01 45 01 c0 ff 68 65 6c 6c 6f 0a");
    assert_eq!(m.code, Code::CONTENT);
    assert_eq!(m.token, Token::new(vec![1]));
    assert_eq!(m.options.content_format(), Some(0));
    assert_eq!(&m.payload[..], b"hello\n");
}

#[test]
fn aiocoap_pong_and_abort() {
    let m = ws_round_trip("00 e3");
    assert_eq!(Signal::parse(&m).unwrap(), Signal::Pong { custody: false });
    let mut abort = String::from("00 e5 ff");
    for b in b"Text frame received" {
        abort.push_str(&format!(" {b:02x}"));
    }
    let m = ws_round_trip(&abort);
    assert_eq!(
        Signal::parse(&m).unwrap(),
        Signal::Abort {
            bad_csm_option: None,
            diagnostic: "Text frame received".into()
        }
    );
}

#[test]
fn csm_1152() {
    let m = both("00 e1 22 04 80", "30 e1 22 04 80");
    let expected = Signal::Csm(Csm {
        max_message_size: Some(1152),
        ..Csm::default()
    });
    assert_eq!(Signal::parse(&m).unwrap(), expected);
    assert_eq!(expected.to_message(Token::EMPTY), m);
    let m = both("00 e1 22 04 80 20", "40 e1 22 04 80 20");
    let expected = Signal::Csm(Csm {
        max_message_size: Some(1152),
        block_wise_transfer: true,
        ..Csm::default()
    });
    assert_eq!(expected.to_message(Token::EMPTY), m);
}

#[test]
fn get_well_known_core() {
    let body = "01 01 bb 2e 77 65 6c 6c 2d 6b 6e 6f 77 6e 04 63 6f 72 65";
    let m = both(&format!("01 {body}"), &format!("d1 04 {body}"));
    assert_eq!(m.code, Code::GET);
    assert_eq!(m.options.uri_path(), [".well-known", "core"]);
    assert_eq!(
        m,
        Message::request(Code::GET, "/.well-known/core").with_token(Token::new(vec![1]))
    );
}

#[test]
fn ping_pong_custody() {
    let ping = both("01 e2 42", "01 e2 42");
    assert_eq!(
        Signal::parse(&ping).unwrap(),
        Signal::Ping { custody: false }
    );
    let pong = both("01 e3 42", "01 e3 42");
    assert_eq!(
        Signal::Pong { custody: false }.to_message(ping.token.clone()),
        pong
    );
    let custody = both("01 e2 42 20", "11 e2 42 20");
    assert_eq!(
        Signal::parse(&custody).unwrap(),
        Signal::Ping { custody: true }
    );
}

#[test]
fn sensors_temperature() {
    let body = "53 b7 73 65 6e 73 6f 72 73 0b 74 65 6d 70 65 72 61 74 75 72 65 45 75 3d 43 65 6c";
    let m = both(&format!("01 01 {body}"), &format!("d1 0d 01 {body}"));
    assert_eq!(m.options.uri_path(), ["sensors", "temperature"]);
    assert_eq!(m.options.uri_query(), ["u=Cel"]);
    let r = both(
        "01 45 53 ff 32 32 2e 33 20 43 65 6c",
        "91 45 53 ff 32 32 2e 33 20 43 65 6c",
    );
    assert_eq!(r.payload_text(), "22.3 Cel");
}

#[test]
fn observe_register_deregister() {
    let reg = ws_round_trip("01 01 01 60 53 6f 62 73");
    assert_eq!(reg.options.observe(), Some(0));
    let dereg = both("01 01 01 61 01 53 6f 62 73", "61 01 01 61 01 53 6f 62 73");
    assert_eq!(dereg.options.observe(), Some(1));
    assert_eq!(dereg.options.uri_path(), ["obs"]);
}

#[test]
fn bert_block2() {
    let m = ws_round_trip("01 01 01 b6 73 74 61 74 75 73 c1 37");
    let b = m.options.block2().unwrap();
    assert_eq!(
        b,
        BlockValue {
            num: 3,
            more: false,
            szx: 7
        }
    );
    assert!(b.is_bert());
}

#[test]
fn no_response_post() {
    let m = both("01 02 02 b1 61 d1 ea 1a", "51 02 02 b1 61 d1 ea 1a");
    assert_eq!(m.code, Code::POST);
    assert_eq!(m.options.no_response(), 26);
    assert_eq!(m.options.get_uint(OptionNumber::NO_RESPONSE), Some(26));
}

#[test]
fn csm_unknown_critical_and_abort() {
    let m = ws_round_trip("00 e1 b0");
    let err = Signal::parse(&m).unwrap_err();
    assert_eq!(err.bad_csm_option(), Some(11));
    let abort = Signal::Abort {
        bad_csm_option: err.bad_csm_option(),
        diagnostic: String::new(),
    }
    .to_message(Token::EMPTY);
    assert_eq!(ws::encode(&abort).unwrap(), hex("00 e5 21 0b"));
}

#[test]
fn release_hold_off() {
    let m = both("00 e4 41 3c", "20 e4 41 3c");
    assert_eq!(
        Signal::parse(&m).unwrap(),
        Signal::Release {
            alternative_addresses: vec![],
            hold_off: Some(60)
        }
    );
}

#[test]
fn tcp_length_bytes() {
    // A message whose body (options + marker + payload) is L bytes: marker + L-1 payload bytes.
    for (l, prefix) in [
        (12usize, "c0"),
        (13, "d0 00"),
        (268, "d0 ff"),
        (269, "e0 00 00"),
        (65804, "e0 ff ff"),
        (65805, "f0 00 00 00 00"),
    ] {
        let m = Message::response(Code::CONTENT, vec![b'x'; l - 1]);
        let enc = tcp::encode(&m).unwrap();
        let p = hex(prefix);
        assert_eq!(&enc[..p.len()], &p[..], "L = {l}");
        assert_eq!(enc[p.len()], 0x45);
        assert_eq!(tcp::decode(&enc, &limits()).unwrap(), m);
    }
}

#[test]
fn unknown_critical_request_option() {
    let m = ws_round_trip("01 01 01 e0 fc dc");
    assert_eq!(m.options.iter().next().unwrap().0, OptionNumber(65001));
    assert_eq!(
        m.options.check(),
        Err(coapws_proto::option::OptionProblem::UnknownCritical(
            OptionNumber(65001)
        ))
    );
}
