//! Inventory limits: the header round trip, the wire count against what
//! decoding finds (deltas and repeated sections too), the key from a
//! report's first bytes, one-line refusals, and cuts that keep the first
//! items, fit the byte limit and say what was left out.

use prost::Message;

use super::*;
use crate::v1::{
    InventoryDelta, LocalUser, Package, Service, ServicesInfo, SoftwareInfo, UserSession, UsersInfo,
};

fn limits() -> Limits {
    Limits {
        max_packages: 100,
        max_services: 10,
        max_users: 5,
        max_bytes: 1 << 20,
    }
}

fn inventory(packages: usize, services: usize, users: usize) -> Inventory {
    Inventory {
        software: Some(SoftwareInfo {
            packages: (0..packages)
                .map(|i| Package {
                    ecosystem: "dpkg".into(),
                    name: format!("package-{i:06}"),
                    version: format!("1.{i}"),
                    ..Package::default()
                })
                .collect(),
            ..SoftwareInfo::default()
        }),
        services: Some(ServicesInfo {
            services: (0..services)
                .map(|i| Service {
                    name: format!("service-{i:04}"),
                    ..Service::default()
                })
                .collect(),
        }),
        users: Some(UsersInfo {
            users: (0..users)
                .map(|i| LocalUser {
                    name: format!("user{i}"),
                    ..LocalUser::default()
                })
                .collect(),
            sessions: (0..users)
                .map(|i| UserSession {
                    user: format!("user{i}"),
                    ..UserSession::default()
                })
                .collect(),
            ..UsersInfo::default()
        }),
        ..Inventory::default()
    }
}

fn report(payload: Payload) -> Report {
    Report {
        spool_id: "spool-1".into(),
        seq: 42,
        held_from_seq: 1,
        collected_at_unix_ms: 1_700_000_000_000,
        payload: Some(payload),
        sent_at_unix_ms: 0,
    }
}

#[test]
fn the_header_round_trips_and_bad_headers_say_why() {
    let text = limits().to_string();
    assert_eq!(text, "packages=100,services=10,users=5,bytes=1048576");
    assert_eq!(text.parse::<Limits>(), Ok(limits()));
    for (bad, says) in [
        ("packages=1,services=1,users=1", "must give"),
        ("packages=x,services=1,users=1,bytes=1", "not a number"),
        ("packages=1,packages=2,services=1,users=1,bytes=1", "twice"),
        (
            "packages=1,services=1,users=1,bytes=1,cats=2",
            "unknown key",
        ),
        (
            "packages=99999999999,services=1,users=1,bytes=1",
            "too large",
        ),
    ] {
        let error = bad.parse::<Limits>().expect_err(bad);
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn the_wire_scan_counts_what_decoding_would_find() {
    let full = report(Payload::Inventory(inventory(1234, 56, 7)));
    let counts = count_report(&full.encode_to_vec()).expect("scan");
    assert_eq!(
        counts,
        Counts {
            packages: 1234,
            services: 56,
            users: 7,
            sessions: 7
        }
    );
    assert_eq!(counts, count_decoded(&full));

    let delta = report(Payload::InventoryDelta(InventoryDelta {
        replaced: Some(inventory(0, 3, 2)),
        packages_upserted: inventory(40, 0, 0).software.expect("software").packages,
        services_upserted: inventory(0, 4, 0).services.expect("services").services,
        ..InventoryDelta::default()
    }));
    let counts = count_report(&delta.encode_to_vec()).expect("scan");
    assert_eq!(
        counts,
        Counts {
            packages: 40,
            services: 7,
            users: 2,
            sessions: 2
        }
    );
    assert_eq!(counts, count_decoded(&delta));
}

#[test]
fn a_section_repeated_on_the_wire_is_counted_as_decoding_merges_it() {
    let one = report(Payload::Inventory(inventory(10, 0, 0))).encode_to_vec();
    // The same inventory field twice: prost merges the two.
    let mut twice = one.clone();
    twice.extend_from_slice(&one);
    let decoded = Report::decode(twice.as_slice()).expect("decodes");
    assert_eq!(count_decoded(&decoded).packages, 20);
    assert_eq!(count_report(&twice).expect("scan").packages, 20);
}

#[test]
fn bytes_that_are_not_protobuf_fail_the_scan() {
    assert_eq!(count_report(&[0xff; 12]), Err(ScanError));
    // A length past the end.
    assert_eq!(count_report(&[0x52, 0x7f, 0x00]), Err(ScanError));
}

#[test]
fn the_key_is_read_from_the_first_bytes_alone() {
    let encoded = report(Payload::Inventory(inventory(2000, 0, 0))).encode_to_vec();
    assert_eq!(report_key(&encoded[..40]), Some(("spool-1".into(), 42)));
    assert_eq!(report_key(&encoded[..3]), None);
    assert_eq!(report_key(&[0xff, 0xff]), None);
}

#[test]
fn refusals_name_the_list_the_count_the_limit_and_the_policy_key() {
    let counts = count_inventory(&inventory(180_000, 1, 1));
    assert_eq!(
        limits().refusal(&counts).as_deref(),
        Some(
            "the inventory lists 180,000 packages, over the collector's limit of 100 (policy inventory.max_packages); the agent must send at most that many"
        )
    );
    assert_eq!(
        limits().refusal(&count_inventory(&inventory(100, 10, 5))),
        None
    );
    let sessions = Counts {
        sessions: 6,
        ..Counts::default()
    };
    assert!(
        limits()
            .refusal(&sessions)
            .is_some_and(|r| r.contains("6 user sessions") && r.contains("max_users"))
    );
    assert_eq!(
        limits().size_refusal(3_500_000).as_deref(),
        Some(
            "the report is larger than the collector's limit of 1 MiB (policy inventory.max_bytes); the agent must send a smaller inventory"
        )
    );
    assert_eq!(limits().size_refusal(1 << 20), None);
}

#[test]
fn truncation_keeps_the_first_items_and_says_what_was_left_out() {
    let mut inv = inventory(150, 12, 9);
    crate::delta::canonicalize(&mut inv);
    assert!(truncate(&mut inv, &limits()));
    assert_eq!(
        count_inventory(&inv),
        Counts {
            packages: 100,
            services: 10,
            users: 5,
            sessions: 5
        }
    );
    assert_eq!(limits().refusal(&count_inventory(&inv)), None);
    let packages = inv.software.as_ref().expect("software");
    assert_eq!(packages.packages[99].name, "package-000099");
    let notes: Vec<(&str, &str)> = inv
        .unavailable
        .iter()
        .map(|u| (u.field.as_str(), u.detail.as_str()))
        .collect();
    assert_eq!(
        notes[0],
        (
            "software.packages",
            "150 collected, the first 100 sent: the collector's limit (policy inventory.max_packages)"
        )
    );
    assert_eq!(
        notes.iter().map(|n| n.0).collect::<Vec<_>>(),
        [
            "software.packages",
            "services.services",
            "users.users",
            "users.sessions"
        ]
    );
    assert!(
        inv.unavailable
            .iter()
            .all(|u| u.reason == UnavailableReason::Truncated as i32)
    );
    // The same machine state cuts the same way, so deltas stay small.
    let mut again = inventory(150, 12, 9);
    crate::delta::canonicalize(&mut again);
    truncate(&mut again, &limits());
    assert!(again == inv, "a second cut differs");
    // Within the limits: nothing cut, the notes of an earlier cut gone.
    let mut small = inventory(3, 1, 1);
    small.unavailable = inv.unavailable.clone();
    assert!(!truncate(&mut small, &limits()));
    assert!(small.unavailable.is_empty());
}

#[test]
fn truncation_fits_the_byte_limit() {
    let tight = Limits {
        max_packages: 1_000_000,
        max_bytes: 64 * 1024,
        ..limits()
    };
    let mut inv = inventory(20_000, 0, 0);
    assert!(truncate(&mut inv, &tight));
    let sent = report(Payload::Inventory(inv.clone()));
    assert!(
        sent.encoded_len() as u64 <= tight.max_bytes,
        "{} bytes",
        sent.encoded_len()
    );
    let kept = inv.software.as_ref().expect("software").packages.len();
    assert!(kept > 1000 && kept < 20_000, "{kept} kept");
    let note = inv.unavailable.last().expect("a note");
    assert_eq!(note.field, "software.packages");
    assert!(
        note.detail.starts_with("20,000 collected, the first ")
            && note
                .detail
                .ends_with("64 KiB per inventory (policy inventory.max_bytes)"),
        "{}",
        note.detail
    );
    assert_eq!(
        inv.unavailable
            .iter()
            .filter(|u| u.field == "software.packages")
            .count(),
        1
    );
}
