//! Secrets: API and enrollment tokens, web console session secrets, and
//! local account passwords. A token is 32 random bytes, hex encoded behind
//! a short prefix that says what it is for. Only its SHA-256 is stored
//! (promise 3): the tokens carry 256 bits of entropy, so a fast hash
//! suffices. A password, chosen by a person, gets a slow one: Argon2id
//! with its recommended defaults (19 MiB, 2 passes), as a PHC string.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of technician API tokens.
pub const API_TOKEN_PREFIX: &str = "dpt_";
/// Prefix of agent enrollment tokens.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "dpe_";

/// Prefix of web console session secrets (the cookie's value).
pub const SESSION_PREFIX: &str = "dps_";
/// Prefix of web console CSRF tokens.
pub const CSRF_PREFIX: &str = "dpc_";

/// The shortest password a local account takes, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password a local account takes, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a new password: long enough to resist guessing offline, short
/// enough that hashing it costs nothing unusual.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The stored form of a password: an Argon2id PHC string with a fresh
/// 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("cannot encode a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// A hash no password matches, checked when a sign-in names no account so
/// that an unknown name costs the same time as a wrong password.
static NO_ACCOUNT: LazyLock<String> =
    LazyLock::new(|| hash_password(&new_token("none")).unwrap_or_default());

/// Whether `password` matches `stored` (a PHC string from
/// [`hash_password`]); `None` checks against no account at the same cost.
/// A stored value that is not a PHC string matches nothing. Slow by design:
/// call it off the async threads.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    let known = stored.is_some();
    let stored = stored.unwrap_or(NO_ACCOUNT.as_str());
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    known && matches
}

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

    #[test]
    fn a_password_matches_its_own_hash_only() {
        let stored = hash_password("correct horse battery").expect("a hash");
        assert!(stored.starts_with("$argon2id$"));
        assert_ne!(
            stored,
            hash_password("correct horse battery").expect("a hash")
        );
        assert!(verify_password("correct horse battery", Some(&stored)));
        assert!(!verify_password("correct horse batterz", Some(&stored)));
        assert!(!verify_password("correct horse battery", None));
        assert!(!verify_password("anything", Some("not a phc string")));
    }

    #[test]
    fn a_new_password_must_be_long_enough_and_not_huge() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password("twelve chars").is_ok());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
