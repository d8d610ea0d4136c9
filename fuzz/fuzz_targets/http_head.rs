//! The response head an HTTP(S) server sends the `http_check` diagnostic:
//! read by `http::read_head` (bounded) and reported by `http::report_head`.
#![no_main]

use std::time::Instant;

use deskpulse_agent::diagnostics::Out;
use deskpulse_agent::diagnostics::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stream = std::io::Cursor::new(data);
    let Ok(head) = http::read_head(&mut stream) else {
        return;
    };
    let out = Out::detached(64 * 1024);
    let _ = http::report_head(&head, Instant::now(), &out);
});
