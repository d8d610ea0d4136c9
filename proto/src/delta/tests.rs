//! Inventory deltas: empty when nothing changed, packages and services item
//! by item, small sections whole, a wrong base or result refused, and hashes
//! over the canonical order.

use crate::v1::{Battery, BatteryInfo, Hotfix, MemoryInfo, OsInfo, Unavailable, UnavailableReason};

use super::*;

fn package(name: &str, version: &str) -> Package {
    Package {
        ecosystem: "dpkg".into(),
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        publisher: "Debian".into(),
        install_date_unix_s: 1_700_000_000,
        source: "dpkg".into(),
        state: String::new(),
    }
}

fn service(name: &str, state: &str) -> Service {
    Service {
        name: name.into(),
        display_name: format!("{name} service"),
        state: state.into(),
        start_mode: "auto".into(),
    }
}

/// A host with 1,500 packages and 120 services, as issue 5 sizes it.
fn host() -> Inventory {
    let mut inv = Inventory {
        schema_version: 1,
        os: Some(OsInfo {
            hostname: "pc-0042".into(),
            name: "Debian GNU/Linux".into(),
            version: "12".into(),
            uptime_secs: 1000,
            ..OsInfo::default()
        }),
        memory: Some(MemoryInfo {
            total_bytes: 16 << 30,
            available_bytes: 8 << 30,
            ..MemoryInfo::default()
        }),
        battery: Some(BatteryInfo {
            batteries: vec![Battery {
                name: "BAT0".into(),
                ..Battery::default()
            }],
        }),
        software: Some(SoftwareInfo {
            packages: (0..1500)
                .map(|i| {
                    package(
                        &format!("package-{i:04}"),
                        &format!("{}.{}-1", i % 9, i % 5),
                    )
                })
                .collect(),
            hotfixes: Vec::new(),
        }),
        services: Some(ServicesInfo {
            services: (0..120)
                .map(|i| service(&format!("unit-{i:03}.service"), "running"))
                .collect(),
        }),
        ..Inventory::default()
    };
    canonicalize(&mut inv);
    inv
}

fn round_trip(base: &Inventory, next: &Inventory) -> InventoryDelta {
    let delta = diff(base, next);
    let applied = apply(base, &delta).expect("applies");
    assert_eq!(&applied, next);
    delta
}

#[test]
fn no_change_is_an_empty_delta() {
    let base = host();
    let delta = round_trip(&base, &base);
    assert!(delta.replaced_sections.is_empty());
    assert!(delta.packages_upserted.is_empty() && delta.packages_removed.is_empty());
    assert_eq!(delta.base_sha256, delta.result_sha256);
}

#[test]
fn packages_added_upgraded_and_removed() {
    let base = host();
    let mut next = base.clone();
    let software = next.software.as_mut().expect("software");
    software.packages.retain(|p| p.name != "package-0007");
    software.packages[10].version = "9.9-1".into();
    software
        .packages
        .push(package("openssl", "3.0.15-1~deb12u1"));
    canonicalize(&mut next);
    let delta = round_trip(&base, &next);
    assert_eq!(delta.packages_removed.len(), 1);
    assert_eq!(delta.packages_removed[0].name, "package-0007");
    let upserted: Vec<&str> = delta
        .packages_upserted
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(upserted, ["openssl", "package-0011"]);
    assert!(delta.replaced_sections.is_empty());
}

#[test]
fn small_sections_travel_whole_and_can_disappear() {
    let base = host();
    let mut next = base.clone();
    next.os.as_mut().expect("os").uptime_secs = 2000;
    next.battery = None;
    next.unavailable.push(Unavailable {
        field: "battery".into(),
        reason: UnavailableReason::NotPresent as i32,
        detail: "removed".into(),
    });
    let delta = round_trip(&base, &next);
    assert_eq!(
        delta.replaced_sections,
        [
            InventorySection::Battery as i32,
            InventorySection::Os as i32
        ]
    );
    assert!(delta.unavailable_replaced);
}

#[test]
fn services_and_hotfixes_change_item_by_item() {
    let base = host();
    let mut next = base.clone();
    let services = &mut next.services.as_mut().expect("services").services;
    services[3].state = "failed".into();
    services.remove(5);
    services.push(service("zz-new.service", "running"));
    next.software.as_mut().expect("software").hotfixes = vec![Hotfix {
        id: "KB5046633".into(),
        ..Hotfix::default()
    }];
    canonicalize(&mut next);
    let delta = round_trip(&base, &next);
    assert_eq!(delta.services_upserted.len(), 2);
    assert_eq!(delta.services_removed, ["unit-005.service"]);
    assert!(delta.hotfixes_replaced);
}

#[test]
fn duplicate_keys_fall_back_to_whole_lists() {
    let base = host();
    let mut next = base.clone();
    let packages = &mut next.software.as_mut().expect("software").packages;
    packages.push(package("package-0001", "0.0-dup"));
    canonicalize(&mut next);
    let delta = round_trip(&base, &next);
    assert!(
        delta
            .replaced_sections
            .contains(&(InventorySection::Software as i32))
    );
}

#[test]
fn a_wrong_base_or_result_is_refused() {
    let base = host();
    let mut next = base.clone();
    next.software.as_mut().expect("software").packages[0].version = "2.0".into();
    let delta = diff(&base, &next);
    let mut other = base.clone();
    other.os.as_mut().expect("os").hostname = "elsewhere".into();
    assert_eq!(apply(&other, &delta), Err(DeltaError::BaseMismatch));
    let mut tampered = delta.clone();
    tampered.packages_upserted[0].version = "3.0".into();
    assert_eq!(apply(&base, &tampered), Err(DeltaError::ResultMismatch));
    let mut unknown = delta;
    unknown.replaced_sections.push(99);
    assert_eq!(apply(&base, &unknown), Err(DeltaError::UnknownSection(99)));
}

#[test]
fn hashes_follow_canonical_order() {
    let mut a = host();
    let mut b = a.clone();
    b.software.as_mut().expect("software").packages.reverse();
    assert_ne!(snapshot_hash(&a), snapshot_hash(&b));
    canonicalize(&mut b);
    canonicalize(&mut a);
    assert_eq!(snapshot_hash(&a), snapshot_hash(&b));
}
