//! What `http_check` says about a server's certificate (subject, issuer,
//! expiry), read from its DER with a small reader of the few fields it
//! needs. A full X.509 parser (x509-parser and its DER, BER and OID
//! crates) cost the agent about 100 KB for this one line; the certificate
//! itself is verified by rustls and webpki, not here.
//!
//! The fields read (RFC 5280 §4.1): `Certificate ::= SEQUENCE {
//! tbsCertificate, ... }`, `TBSCertificate ::= SEQUENCE { [0] version
//! OPTIONAL, serialNumber, signature, issuer Name, validity SEQUENCE {
//! notBefore, notAfter }, subject Name, ... }`. Names are written as
//! OpenSSL-style short names (`CN=example.com, O=Example`), a type without
//! one as its dotted OID, a value that is not a string as `#` and hex.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;

/// The fields of a certificate this agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The subject, e.g. `CN=example.com, O=Example`.
    pub subject: String,
    /// The issuer, in the same form.
    pub issuer: String,
    /// The end of the validity period, in Unix seconds.
    pub not_after_unix: i64,
}

/// Reads a DER certificate's subject, issuer and expiry; the error says,
/// in a few words, what was wrong.
pub fn summarize(der: &[u8]) -> Result<CertificateSummary, &'static str> {
    let (certificate, _) = expect(der, SEQUENCE, "not a certificate")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "no certificate body")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_serial, _, rest) = element(rest)?;
    let (_signature, rest) = expect(rest, SEQUENCE, "no signature algorithm")?;
    let (issuer, rest) = expect(rest, SEQUENCE, "no issuer")?;
    let (validity, rest) = expect(rest, SEQUENCE, "no validity")?;
    let (subject, _) = expect(rest, SEQUENCE, "no subject")?;
    let (_not_before_tag, _, validity) = element(validity)?;
    let (tag, not_after, _) = element(validity)?;
    Ok(CertificateSummary {
        subject: name(subject)?,
        issuer: name(issuer)?,
        not_after_unix: time(tag, not_after)?,
    })
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    const TRUNCATED: &str = "truncated";
    let (&tag, input) = input.split_first().ok_or(TRUNCATED)?;
    if tag & 0x1f == 0x1f {
        return Err("unsupported tag");
    }
    let (&first, mut input) = input.split_first().ok_or(TRUNCATED)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err("unsupported length");
        }
        let (bytes, after) = input.split_at_checked(count).ok_or(TRUNCATED)?;
        input = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    let (contents, rest) = input.split_at_checked(len).ok_or(TRUNCATED)?;
    Ok((tag, contents, rest))
}

/// The contents of an element that must have `tag`, and what follows it.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    missing: &'static str,
) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    match element(input)? {
        (found, contents, rest) if found == tag => Ok((contents, rest)),
        _ => Err(missing),
    }
}

/// `Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }`.
fn name(mut rdns: &[u8]) -> Result<String, &'static str> {
    let mut out = String::new();
    while !rdns.is_empty() {
        let (mut attributes, rest) = expect(rdns, SET, "bad name")?;
        rdns = rest;
        if !out.is_empty() {
            out.push_str(", ");
        }
        let mut first = true;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE, "bad name")?;
            attributes = rest;
            let (oid, rest) = expect(attribute, OID, "bad name")?;
            let (kind, value, _) = element(rest)?;
            if !first {
                out.push('+');
            }
            first = false;
            out.push_str(&attribute_name(oid)?);
            out.push('=');
            out.push_str(&attribute_value(kind, value));
        }
    }
    Ok(out)
}

fn attribute_name(oid: &[u8]) -> Result<String, &'static str> {
    let dotted = dotted_oid(oid)?;
    let short = match dotted.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return Ok(dotted),
    };
    Ok(short.to_owned())
}

fn dotted_oid(oid: &[u8]) -> Result<String, &'static str> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut arc: u64 = 0;
    for (i, byte) in oid.iter().enumerate() {
        arc = arc.checked_mul(128).ok_or("bad OID")? | u64::from(byte & 0x7f);
        if byte & 0x80 != 0 {
            if i + 1 == oid.len() {
                return Err("bad OID");
            }
            continue;
        }
        if arcs.is_empty() {
            let top = (arc / 40).min(2);
            arcs.push(top);
            arcs.push(arc - top * 40);
        } else {
            arcs.push(arc);
        }
        arc = 0;
    }
    if arcs.is_empty() {
        return Err("bad OID");
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// A string type as text; anything else as `#` and hex.
fn attribute_value(kind: u8, value: &[u8]) -> String {
    match kind {
        // UTF8String, PrintableString, T61String, IA5String, VisibleString
        0x0c | 0x13 | 0x14 | 0x16 | 0x1a => String::from_utf8_lossy(value).into_owned(),
        // BMPString: UTF-16, big-endian.
        0x1e => {
            let units: Vec<u16> = value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => format!("#{}", hex::encode(value)),
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as DER requires them: UTC, whole seconds.
fn time(tag: u8, text: &[u8]) -> Result<i64, &'static str> {
    const BAD: &str = "bad time";
    let digits = match (tag, text.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return Err(BAD),
    };
    let number = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = digits.get(range).ok_or(BAD)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, at) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return Err(BAD),
    };
    let (month, day) = (number(at..at + 2)?, number(at + 2..at + 4)?);
    let (hour, minute, second) = (
        number(at + 4..at + 6)?,
        number(at + 6..at + 8)?,
        number(at + 8..at + 10)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(BAD);
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    /// x509-parser, which the agent used before, reads the same.
    fn agrees_with_x509_parser(der: &[u8]) -> CertificateSummary {
        let ours = summarize(der).expect("ours");
        let (_, theirs) = x509_parser::parse_x509_certificate(der).expect("theirs");
        assert_eq!(ours.subject, theirs.subject().to_string());
        assert_eq!(ours.issuer, theirs.issuer().to_string());
        assert_eq!(ours.not_after_unix, theirs.validity().not_after.timestamp());
        ours
    }

    fn issued(
        subject: DistinguishedName,
        not_after: (i32, u8, u8),
        issuer: Option<&rcgen::Issuer<'_, KeyPair>>,
    ) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["example.test".to_owned()]).expect("params");
        params.distinguished_name = subject;
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        match issuer {
            None => params.self_signed(&key).expect("cert").der().to_vec(),
            Some(issuer) => params.signed_by(&key, issuer).expect("cert").der().to_vec(),
        }
    }

    #[test]
    fn subject_issuer_and_expiry_read_as_x509_parser_reads_them() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "intranet.example.test");
        dn.push(DnType::OrganizationName, "Example Ltd");
        dn.push(DnType::OrganizationalUnitName, "IT");
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::LocalityName, "Berlin");
        dn.push(DnType::StateOrProvinceName, "BE");
        let der = issued(dn, (2031, 5, 17), None);
        let summary = agrees_with_x509_parser(&der);
        assert_eq!(
            summary.subject,
            "CN=intranet.example.test, O=Example Ltd, OU=IT, C=DE, L=Berlin, ST=BE"
        );
        assert_eq!(summary.not_after_unix, 1_936_742_400, "2031-05-17 UTC");
    }

    #[test]
    fn an_issued_certificate_names_its_issuer() {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let mut ca_dn = DistinguishedName::new();
        ca_dn.push(DnType::CommonName, "Example Root CA");
        ca_params.distinguished_name = ca_dn;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "www.example.test");
        let der = issued(dn, (2027, 1, 31), Some(&issuer));
        let summary = agrees_with_x509_parser(&der);
        assert_eq!(summary.issuer, "CN=Example Root CA");
        assert_eq!(summary.subject, "CN=www.example.test");
    }

    #[test]
    fn utc_and_generalized_times_both_read() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050.
        for (year, expected) in [
            (1999, 946_598_400),
            (2049, 2_524_521_600),
            (2077, 3_408_134_400),
        ] {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "t");
            let der = issued(dn, (year, 12, 31), None);
            assert_eq!(
                agrees_with_x509_parser(&der).not_after_unix,
                expected,
                "{year}"
            );
        }
        assert_eq!(time(UTC_TIME, b"500101000000Z"), Ok(-631_152_000));
        assert!(time(UTC_TIME, b"5001010000Z").is_err());
        assert!(time(GENERALIZED_TIME, b"20501301000000Z").is_err());
        assert!(time(GENERALIZED_TIME, b"20500101000000+0100").is_err());
    }

    #[test]
    fn other_attribute_types_and_values_are_still_written() {
        // 1.2.3.4 has no short name; an INTEGER value is not a string.
        let name_der = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x02, 0x02, 0x01, 0x00,
        ];
        assert_eq!(name(&name_der), Ok("1.2.3.4=#0100".to_owned()));
        assert_eq!(
            dotted_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Ok("1.2.840.113549".to_owned())
        );
        assert!(dotted_oid(&[0x2a, 0x86]).is_err());
        assert_eq!(attribute_value(0x1e, &[0x00, 0x41, 0x00, 0xe9]), "Aé");
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "t");
        let der = issued(dn, (2030, 1, 1), None);
        for cut in [0, 1, 4, 40, der.len() / 2, der.len() - 1] {
            // A cut certificate's outer length no longer fits: refused.
            assert!(summarize(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(summarize(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(summarize(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(summarize(&[0x1f, 0x00]).is_err());
        assert!(summarize(b"-----BEGIN CERTIFICATE-----").is_err());
    }
}
