//! A reporter's e-mail address (issue 23), checked alike by the agent
//! (`report-issue --email`, `reporter_email_domain`) and the collector
//! (which drops a bad one from a report with a warning). Deliberately
//! plain: `local@domain`, the local part of the characters RFC 5322 allows
//! unquoted, the domain of LDH labels with at least one dot, at most 254
//! bytes. No quoted local parts, comments or address literals: nobody
//! types those into a help desk report, and every one is a way to smuggle
//! text into a mail header.

/// The longest address accepted, in bytes (RFC 5321's path limit less the
/// brackets).
pub const MAX_ADDRESS: usize = 254;

/// `text`, trimmed, when it is a plain e-mail address; else the one-line
/// reason it is not.
pub fn check(text: &str) -> Result<String, String> {
    let address = text.trim();
    if address.is_empty() {
        return Err("the e-mail address is empty".into());
    }
    if address.len() > MAX_ADDRESS {
        return Err(format!(
            "the e-mail address is longer than {MAX_ADDRESS} bytes"
        ));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{address:?} is not an e-mail address: it has no @"));
    };
    let bad = |why: &str| Err(format!("{address:?} is not an e-mail address: {why}"));
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ must be 1-64 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c);
    if !local.chars().all(allowed) {
        return bad("the part before @ may hold only letters, digits and !#$%&'*+/=?^_`{|}~.-");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("the part before @ may not start or end with a dot or hold two in a row");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain needs a dot, e.g. example.com");
    }
    for label in &labels {
        let ldh = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if label.is_empty()
            || label.len() > 63
            || !ldh
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return bad("the domain must be names of letters, digits and hyphens joined by dots");
        }
    }
    Ok(address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_pass_and_junk_is_refused_in_one_line() {
        for good in [
            "ana@example.com",
            " o'neil+it@mail.corp.example ",
            "a.b-c@x-y.io",
        ] {
            assert_eq!(check(good).as_deref(), Ok(good.trim()));
        }
        for bad in [
            "",
            "ana",
            "ana@localhost",
            "@example.com",
            "ana@@example.com",
            "ana@exa mple.com",
            "ana@example..com",
            ".ana@example.com",
            "an..a@example.com",
            "ana@-example.com",
            "ana@example.com\r\nBcc: all@example.com",
            "\"ana\"@example.com",
            "ana@[127.0.0.1]",
            "ánä@example.com",
        ] {
            let error = check(bad).expect_err(bad);
            assert!(!error.contains('\n'), "{error}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(check(&long).is_err());
        let longer = format!("a@{}.com", "b.".repeat(130));
        assert!(check(&longer).is_err());
    }
}
