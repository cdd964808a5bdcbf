//! The RFC 7252 message layer (`coapws_proto::udp::MessageLayer`) driven by a program of
//! datagrams from four peers, actions and time steps; see `udp_machine.rs` for the invariants.
#![no_main]

mod input;
mod udp_machine;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| udp_machine::run(data));
