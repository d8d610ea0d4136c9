//! Version ordering per package ecosystem, as byte-sortable keys: comparing
//! two keys with memcmp gives the ecosystem's own order, so `version < X` is
//! an index range scan on any SQL store (D15).
//!
//! - **dpkg** (`dpkg --compare-versions`): `[epoch:]upstream[-revision]`;
//!   epochs numerically, then upstream and revision by alternating
//!   non-digit runs (`~` before the end, the end before letters, letters
//!   before other characters) and digit runs (numerically).
//! - **rpm** (`rpmvercmp`): `[epoch:]version[-release]`; alphanumeric
//!   segments, separators ignored, numeric segments newer than alphabetic
//!   ones, `~` before the end, `^` after the end but before more segments.
//! - Everything else uses the rpm rules, a natural ordering that fits most
//!   version strings (snap, flatpak, apk, pacman, Windows, macOS).
//!
//! Known deviations, documented: a missing rpm release sorts before any
//! release (rpm skips the comparison), and a dpkg revision of "0" sorts
//! after a missing revision only when written with other runs.

/// A byte-sortable key of `version` under `ecosystem`'s rules.
pub fn sort_key(ecosystem: &str, version: &str) -> Vec<u8> {
    match ecosystem {
        "dpkg" => dpkg_key(version),
        _ => rpm_key(version),
    }
}

/// Appends a non-negative decimal number so that byte order is numeric
/// order: the count of significant digits, then the digits.
fn push_number(key: &mut Vec<u8>, digits: &str) {
    let significant = digits.trim_start_matches('0');
    // Versions with more than 255 significant digits do not exist; clamp.
    let len = u8::try_from(significant.len()).unwrap_or(u8::MAX);
    key.push(len);
    key.extend(significant.bytes().take(usize::from(len)));
}

fn split_epoch(version: &str) -> (&str, &str) {
    match version.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            (epoch, rest)
        }
        _ => ("0", version),
    }
}

/// The dpkg key: epoch, upstream, revision.
pub fn dpkg_key(version: &str) -> Vec<u8> {
    let (epoch, rest) = split_epoch(version.trim());
    let (upstream, revision) = match rest.rfind('-') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let mut key = Vec::with_capacity(version.len() * 2 + 8);
    push_number(&mut key, epoch);
    dpkg_part(&mut key, upstream);
    dpkg_part(&mut key, revision);
    key
}

/// One upstream or revision string under dpkg's verrevcmp. Each run pair is
/// (non-digit characters, end marker 0x02, number); the string ends with a
/// final 0x02, so a string that stops compares as "end" against whatever
/// the other string has next.
fn dpkg_part(key: &mut Vec<u8>, part: &str) {
    let bytes = part.as_bytes();
    let mut i = 0;
    let mut pairs = Vec::new();
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        let text = &part[start..i];
        let digit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        pairs.push((text, &part[digit_start..i]));
    }
    // "0" and "" are equal to dpkg: drop a lone all-zero number.
    if let [(text, number)] = pairs.as_slice()
        && text.is_empty()
        && number.trim_start_matches('0').is_empty()
    {
        pairs.clear();
    }
    for (text, number) in pairs {
        for c in text.bytes() {
            key.push(match c {
                b'~' => 0x01,
                c if c.is_ascii_alphabetic() => 0x10 + (c - b'A'),
                // Other characters sort after every letter.
                c => 0x80 | (c & 0x7f),
            });
        }
        key.push(0x02);
        push_number(key, number);
    }
    key.push(0x02);
}

/// The rpm key: epoch, version, release.
pub fn rpm_key(version: &str) -> Vec<u8> {
    let (epoch, rest) = split_epoch(version.trim());
    let (ver, release) = match rest.rfind('-') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let mut key = Vec::with_capacity(version.len() * 2 + 8);
    push_number(&mut key, epoch);
    rpm_part(&mut key, ver);
    rpm_part(&mut key, release);
    key
}

/// One version or release under rpmvercmp: `~` 0x01 < end 0x02 < `^` 0x03 <
/// alphabetic segment 0x04 < numeric segment 0x05.
fn rpm_part(key: &mut Vec<u8>, part: &str) {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'~' {
            key.push(0x01);
            i += 1;
        } else if c == b'^' {
            key.push(0x03);
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            key.push(0x05);
            push_number(key, &part[start..i]);
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            key.push(0x04);
            key.extend_from_slice(&bytes[start..i]);
            key.push(0x00);
        } else {
            i += 1; // separators only separate
        }
    }
    key.push(0x02);
}

#[cfg(test)]
mod tests;
