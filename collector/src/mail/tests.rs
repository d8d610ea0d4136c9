//! The SMTP settings as `serve` resolves them (each mistake one line, the
//! password never shown) and messages whose hostile text cannot add a
//! header. Delivery through a real SMTP server is in
//! `tests/tests/notifications.rs`.

use std::collections::HashMap;

use super::*;
use crate::config::Env;
use crate::mail::config::SmtpPassword;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn flags(host: &str) -> SmtpFlags {
    SmtpFlags {
        smtp_host: Some(host.into()),
        smtp_from: Some("Deskpulse <deskpulse@example.com>".into()),
        ..SmtpFlags::default()
    }
}

fn resolve(flags: &SmtpFlags, env: &dyn Env) -> Result<Option<SmtpConfig>, String> {
    config::resolve(flags, None, env).map_err(|e| e.0)
}

#[test]
fn no_host_means_no_email_and_defaults_follow_the_tls_mode() {
    assert_eq!(resolve(&SmtpFlags::default(), &vars(&[])), Ok(None));
    let config = resolve(&flags("smtp.example.com"), &vars(&[]))
        .expect("resolves")
        .expect("configured");
    assert_eq!((config.port, config.tls), (587, SmtpTls::Starttls));
    let tls = SmtpFlags {
        smtp_tls: Some(SmtpTls::Tls),
        ..flags("smtp.example.com")
    };
    assert_eq!(
        resolve(&tls, &vars(&[])).expect("ok").expect("some").port,
        465
    );
    // The environment fills what the flags leave out; flags win.
    let env = vars(&[
        ("DESKPULSE_COLLECTOR_SMTP_PORT", "2525"),
        ("DESKPULSE_COLLECTOR_SMTP_USERNAME", "mailer"),
        ("DESKPULSE_COLLECTOR_SMTP_PASSWORD", "hunter2\n"),
    ]);
    let config = resolve(&flags("smtp.example.com"), &env)
        .expect("ok")
        .expect("some");
    assert_eq!(config.port, 2525);
    assert_eq!(
        config.password.as_ref().map(SmtpPassword::expose),
        Some("hunter2")
    );
    assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
}

#[test]
fn bad_settings_are_one_line_each() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let cases: Vec<(SmtpFlags, HashMap<String, String>, &str)> = vec![
        (
            SmtpFlags {
                smtp_host: None,
                smtp_port: Some("25".into()),
                ..SmtpFlags::default()
            },
            vars(&[]),
            "host is required",
        ),
        (
            flags("smtp.example.com"),
            vars(&[("DESKPULSE_COLLECTOR_SMTP_PORT", "99999")]),
            "not a port number",
        ),
        (
            flags("smtp.example.com"),
            vars(&[("DESKPULSE_COLLECTOR_SMTP_TLS", "maybe")]),
            "expected starttls, tls or none",
        ),
        (
            SmtpFlags {
                smtp_tls: Some(SmtpTls::None),
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "only to a loopback host",
        ),
        (
            SmtpFlags {
                smtp_from: None,
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "from is required",
        ),
        (
            SmtpFlags {
                smtp_from: Some("not an address".into()),
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "is not an e-mail address",
        ),
        (
            SmtpFlags {
                smtp_username: Some("mailer".into()),
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "needs a password",
        ),
        (
            flags("smtp.example.com"),
            vars(&[("DESKPULSE_COLLECTOR_SMTP_PASSWORD", "x")]),
            "without a username",
        ),
        (
            SmtpFlags {
                smtp_username: Some("mailer".into()),
                smtp_password_file: Some(dir.path().join("missing")),
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "cannot read the password file",
        ),
        (
            SmtpFlags {
                smtp_ca_file: Some(not_pem.clone()),
                ..flags("smtp.example.com")
            },
            vars(&[]),
            "holds no PEM certificate",
        ),
        (flags("smtp example.com"), vars(&[]), "not a host name"),
    ];
    for (flags, env, wanted) in cases {
        let error = resolve(&flags, &env).expect_err(wanted);
        assert!(error.starts_with("smtp: "), "{error}");
        assert!(error.contains(wanted), "{wanted}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

#[test]
fn plain_smtp_is_allowed_to_loopback_only() {
    for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
        let plain = SmtpFlags {
            smtp_tls: Some(SmtpTls::None),
            ..flags(host)
        };
        let config = resolve(&plain, &vars(&[])).expect(host).expect("some");
        assert_eq!(config.port, 25);
    }
}

#[test]
fn hostile_subjects_cannot_add_headers() {
    let from: lettre::message::Mailbox = "Deskpulse <deskpulse@example.com>".parse().expect("from");
    let message = message(
        &from,
        "oncall@example.com",
        "disk full\r\nBcc: victim@example.com\r\nX-Injected: yes",
        "body\r\nBcc: not-a-header@example.com\r\n.\r\n".into(),
        "d-1",
    )
    .expect("message");
    let text = String::from_utf8(message.formatted()).expect("utf-8");
    let (head, _) = text.split_once("\r\n\r\n").expect("head and body");
    for line in head.lines() {
        assert!(
            !line.to_ascii_lowercase().starts_with("bcc:")
                && !line.to_ascii_lowercase().starts_with("x-injected:"),
            "an injected header: {line:?} in\n{head}"
        );
    }
    assert!(head.contains("Message-ID: <d-1@deskpulse>"), "{head}");
    assert!(head.contains("To: oncall@example.com"), "{head}");
    assert_eq!(message.envelope().to().len(), 1, "one recipient only");
    for to in [
        "a@example.com\r\nBcc: b@example.com",
        "a@example.com, b@example.com",
        "nobody",
    ] {
        assert!(
            super::message(&from, to, "s", String::new(), "d").is_err(),
            "{to}"
        );
    }
}
