//! A DNS answer from whatever server a diagnostic asks (or whoever answers
//! in its place): `dns::parse_response`, with the query id taken from the
//! answer itself so that the parser goes past the id check.
#![no_main]

use deskpulse_agent::diagnostics::dns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = match data {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => 0,
    };
    if let Ok(response) = dns::parse_response(data, id) {
        let _ = dns::rcode_name(response.rcode);
    }
});
