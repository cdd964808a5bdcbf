//! The RFC 8323 connection machine (`coapws_proto::connection`) driven by a program of
//! peer input, actions and time steps; see `connection_machine.rs` for the invariants.
#![no_main]

mod connection_machine;
mod input;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| connection_machine::run(data));
