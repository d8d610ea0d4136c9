//! Secrets: API and enrollment tokens. A token is 32 random bytes, hex
//! encoded behind a short prefix that says what it is for. Only its SHA-256 is
//! stored (promise 3): the tokens carry 256 bits of entropy, so a fast hash
//! suffices where a password would need a slow one.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of technician API tokens.
pub const API_TOKEN_PREFIX: &str = "dpt_";
/// Prefix of agent enrollment tokens.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "dpe_";

/// A fresh random token with the given prefix.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a token: lowercase hex SHA-256 of its text.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.trim().as_bytes())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_prefixed_and_hash_ignores_surrounding_space() {
        let a = new_token(API_TOKEN_PREFIX);
        let b = new_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("dpt_") && a.len() == 4 + 64);
        assert_eq!(token_hash(&a), token_hash(&format!("{a}\n")));
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
