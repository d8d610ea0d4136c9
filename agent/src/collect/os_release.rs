//! `os-release(5)`: the distribution's name and version on Linux. Parsed by
//! hand: shell-style `KEY=value` lines, values optionally quoted, `#`
//! comments, backslash escapes inside quotes.

use std::collections::HashMap;

/// The fields of an os-release file.
pub fn parse(text: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        fields.insert(key.to_owned(), unquote(raw.trim()));
    }
    fields
}

fn unquote(raw: &str) -> String {
    let quote = match raw.chars().next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return raw.to_owned(),
    };
    let mut out = String::new();
    let mut chars = raw[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            c if c == quote => break,
            '\\' if quote == '"' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_unquoted_escaped_and_commented_lines() {
        let text = "# a comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\nID=debian\n\
                    PRETTY_NAME=\"Say \\\"hi\\\"\"\nnot a line\n  VERSION=\"12 (bookworm)\"  \n";
        let f = parse(text);
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["VERSION_ID"], "12");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["PRETTY_NAME"], "Say \"hi\"");
        assert_eq!(f["VERSION"], "12 (bookworm)");
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn variants_of_real_distributions() {
        let ubuntu = parse(
            "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\n",
        );
        assert_eq!(
            (ubuntu["NAME"].as_str(), ubuntu["VERSION_ID"].as_str()),
            ("Ubuntu", "22.04")
        );
        // Arch has no VERSION_ID at all; a rolling release has BUILD_ID.
        let arch = parse("NAME=\"Arch Linux\"\nBUILD_ID=rolling\n");
        assert!(!arch.contains_key("VERSION_ID"));
        let rhel = parse("NAME=\"Red Hat Enterprise Linux\"\nVERSION_ID=\"9.3\"\n");
        assert_eq!(rhel["VERSION_ID"], "9.3");
    }
}
