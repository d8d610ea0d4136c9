//! The audit chain's hash: SHA-256 over a canonical, unambiguous encoding of
//! one entry and the hash of the entry before it (D28).
//!
//! # The encoding (version 1)
//! The hash input is the bytes `deskpulse-audit-v1` followed by one zero
//! byte, then these fields in this order:
//!
//! | field | encoding |
//! |---|---|
//! | `seq` | 8 bytes, signed big-endian |
//! | `at_ms` | 8 bytes, signed big-endian |
//! | actor technician id | optional text |
//! | actor token id | optional text |
//! | action | text |
//! | subject | text |
//! | detail | text |
//! | `prev_hash` | text (64 lowercase hex digits) |
//!
//! Text is a 4-byte big-endian length of its UTF-8 bytes, then the bytes.
//! Optional text is one byte 0 when absent, or one byte 1 then the text, so
//! an absent actor and an empty one hash differently. Every field has a
//! length or a fixed size, so no two different entries encode alike.
//! The hash is written as 64 lowercase hex digits; the first entry's
//! `prev_hash` is [`GENESIS`].

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of one entry that the hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The entry's place in the chain, from 1.
    pub seq: i64,
    /// When it was appended, ms since the Unix epoch.
    pub at_ms: i64,
    /// The acting technician's id, if any.
    pub technician_id: Option<&'a str>,
    /// The API token used, if any.
    pub token_id: Option<&'a str>,
    /// What was done.
    pub action: &'a str,
    /// What it was done to.
    pub subject: &'a str,
    /// Free text.
    pub detail: &'a str,
    /// The previous entry's hash, or [`GENESIS`].
    pub prev_hash: &'a str,
}

fn text(out: &mut Sha256, value: &str) {
    // An entry's text is bounded far below 4 GiB by the gRPC message limit;
    // saturating keeps the function total without a panic path.
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.update(len.to_be_bytes());
    out.update(value.as_bytes());
}

fn optional(out: &mut Sha256, value: Option<&str>) {
    match value {
        None => out.update([0u8]),
        Some(v) => {
            out.update([1u8]);
            text(out, v);
        }
    }
}

/// The hash of one entry, as 64 lowercase hex digits.
pub fn entry_hash(link: &Link<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"deskpulse-audit-v1\0");
    h.update(link.seq.to_be_bytes());
    h.update(link.at_ms.to_be_bytes());
    optional(&mut h, link.technician_id);
    optional(&mut h, link.token_id);
    text(&mut h, link.action);
    text(&mut h, link.subject);
    text(&mut h, link.detail);
    text(&mut h, link.prev_hash);
    hex::encode(h.finalize())
}
