//! Notifications in the UDP message layer (RFC 7641 §4.5): Confirmable and Non-confirmable
//! notifications, newer state first while a Confirmable one is unacknowledged (§4.5.2), and
//! the endings a server learns of (Reset to a Non-confirmable one, a Confirmable one that is
//! never acknowledged). Wire bytes written by hand, time virtual.

use bytes::Bytes;
use coapws_proto::codec::udp::{self as wire, MessageType, UdpHeader};
use coapws_proto::udp::{MessageLayer, UdpConfig, UdpEvent, UdpRequestError};
use coapws_proto::{Code, DecodeLimits, Message, OptionNumber, Token};
use std::time::{Duration, Instant};

const CLIENT: u8 = 1;

fn decode(d: &Bytes) -> (UdpHeader, Message) {
    wire::decode(d, &DecodeLimits::default()).unwrap()
}

fn transmits(l: &mut MessageLayer<u8>) -> Vec<(UdpHeader, Message)> {
    std::iter::from_fn(|| l.poll_transmit())
        .map(|(to, d)| {
            assert_eq!(to, CLIENT);
            decode(&d)
        })
        .collect()
}

fn events(l: &mut MessageLayer<u8>) -> Vec<UdpEvent<u8>> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn notification(seq: u32, text: &str) -> Message {
    Message::response(Code::CONTENT, text.to_owned()).with_uint_option(OptionNumber::OBSERVE, seq)
}

fn empty(mtype: MessageType, mid: u16) -> Bytes {
    wire::encode(
        &UdpHeader {
            mtype,
            message_id: mid,
        },
        &Message::new(Code::EMPTY),
    )
    .unwrap()
}

fn config() -> UdpConfig {
    UdpConfig {
        ack_random_factor: 1.0,
        max_retransmit: 2,
        ..UdpConfig::default()
    }
}

#[test]
fn a_newer_notification_replaces_an_unacknowledged_confirmable_one() {
    let t0 = Instant::now();
    let mut s = MessageLayer::<u8>::new(config(), 1);
    let token = Token::new(vec![7]);
    s.send_notification(CLIENT, &token, notification(1, "old"), true, t0)
        .unwrap();
    let out = transmits(&mut s);
    assert_eq!(out.len(), 1);
    let (h1, m1) = &out[0];
    assert_eq!(
        (h1.mtype, m1.payload_text().as_ref()),
        (MessageType::Confirmable, "old")
    );
    let deadline = s.poll_timeout().expect("retransmission timer");

    // Half-way to the retransmission, a newer state: sent at once, Confirmable although asked
    // Non-confirmable, with a new Message ID, and it keeps the old one's deadline.
    let t1 = t0 + Duration::from_secs(1);
    s.send_notification(CLIENT, &token, notification(2, "new"), false, t1)
        .unwrap();
    let out = transmits(&mut s);
    assert_eq!(out.len(), 1);
    let (h2, m2) = &out[0];
    assert_eq!(
        (h2.mtype, m2.payload_text().as_ref()),
        (MessageType::Confirmable, "new")
    );
    assert_ne!(h2.message_id, h1.message_id);
    assert_eq!(s.poll_timeout(), Some(deadline));

    // What is retransmitted is the newest state.
    s.handle_timeout(deadline);
    let out = transmits(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.message_id, h2.message_id);
    assert_eq!(out[0].1.payload_text(), "new");

    // An ACK of the replaced one means nothing; the ACK of the new one ends it.
    s.handle_datagram(
        CLIENT,
        empty(MessageType::Acknowledgement, h1.message_id),
        t1,
    );
    assert!(!s.is_idle());
    s.handle_datagram(
        CLIENT,
        empty(MessageType::Acknowledgement, h2.message_id),
        t1,
    );
    assert!(s.is_idle());
    assert!(events(&mut s).is_empty());
}

#[test]
fn a_confirmable_notification_never_acknowledged_fails_once_with_the_inherited_count() {
    let mut now = Instant::now();
    let mut s = MessageLayer::<u8>::new(config(), 2);
    let token = Token::new(vec![8]);
    s.send_notification(CLIENT, &token, notification(1, "a"), true, now)
        .unwrap();
    transmits(&mut s);
    // First retransmission of "a", then "b" replaces it: the count goes on from 1.
    now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(transmits(&mut s).len(), 1);
    s.send_notification(CLIENT, &token, notification(2, "b"), true, now)
        .unwrap();
    assert_eq!(transmits(&mut s).len(), 1);
    let mut sent = 0;
    let failure = loop {
        now = s.poll_timeout().expect("still timed");
        s.handle_timeout(now);
        sent += transmits(&mut s).len();
        let ev = events(&mut s);
        if !ev.is_empty() {
            break ev;
        }
    };
    // max_retransmit = 2: one retransmission left after the replacement, then the ending.
    assert_eq!(sent, 1);
    assert_eq!(
        failure,
        [UdpEvent::ResponseFailed {
            to: CLIENT,
            token,
            error: UdpRequestError::Timeout
        }]
    );
    assert!(s.is_idle());
}

#[test]
fn a_reset_to_a_non_confirmable_notification_is_reported() {
    let now = Instant::now();
    let mut s = MessageLayer::<u8>::new(config(), 3);
    let token = Token::new(vec![9]);
    s.send_notification(CLIENT, &token, notification(1, "a"), false, now)
        .unwrap();
    s.send_notification(CLIENT, &token, notification(2, "b"), false, now)
        .unwrap();
    let out = transmits(&mut s);
    assert!(
        out.iter()
            .all(|(h, _)| h.mtype == MessageType::NonConfirmable)
    );
    // A Reset to the older one is not recognised (only the latest is kept); to the latest it is.
    s.handle_datagram(CLIENT, empty(MessageType::Reset, out[0].0.message_id), now);
    assert!(events(&mut s).is_empty());
    s.handle_datagram(CLIENT, empty(MessageType::Reset, out[1].0.message_id), now);
    assert_eq!(
        events(&mut s),
        [UdpEvent::ResponseFailed {
            to: CLIENT,
            token: token.clone(),
            error: UdpRequestError::Reset
        }]
    );
    // Once the observation is over, nothing is kept for it.
    s.send_notification(CLIENT, &token, notification(3, "c"), false, now)
        .unwrap();
    s.end_notifications(CLIENT, &token);
    assert!(s.is_idle());
}
