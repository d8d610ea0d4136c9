//! The Windows inventory from WMI/registry snapshot documents: a domain
//! laptop and a workgroup desktop, empty and broken queries, Security
//! Center states, and the adapter filling every key the parser reads.

use std::path::PathBuf;

use deskpulse_proto::v1::{DiskKind, Inventory, ProtectionState, UnavailableReason};

use super::*;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/windows")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn applied(name: &str) -> Inventory {
    let mut inv = Inventory::default();
    apply_snapshot(&fixture(name), &mut inv).expect("fixture");
    inv
}

fn reason(inv: &Inventory, field: &str) -> Option<i32> {
    inv.unavailable
        .iter()
        .find(|u| u.field == field)
        .map(|u| u.reason)
}

#[test]
fn laptop_system_cpu_and_memory() {
    let inv = applied("snapshot-laptop.json");
    let system = inv.system.expect("fixture");
    assert_eq!(system.vendor, "LENOVO");
    assert_eq!(system.model, "21HDCTO1WW");
    assert_eq!(system.serial, "PF4XK2LM");
    assert_eq!(system.hardware_uuid, "4c4c4544-0051-3510-8052-b4c04f4a4e32");
    assert_eq!(system.chassis_type, "notebook");
    assert_eq!(system.bios_version, "N3XET53W (1.28 )");
    assert_eq!(system.bios_date, "2024-03-01");
    assert_eq!(system.baseboard_serial, "L1HF36B00KB");

    let cpu = inv.cpu.expect("fixture");
    assert_eq!(cpu.model, "13th Gen Intel(R) Core(TM) i7-1365U");
    assert_eq!((cpu.physical_cores, cpu.logical_cores), (10, 12));
    assert_eq!(cpu.frequency_mhz, 1800);
    assert_eq!(cpu.arch, "x86_64");

    let memory = inv.memory.expect("fixture");
    assert_eq!(memory.total_bytes, 34_067_050_496);
    assert_eq!(memory.available_bytes, 18_874_368 * 1024);
    assert_eq!(memory.swap_total_bytes, 4864 * 1024 * 1024);
    assert_eq!(memory.modules.len(), 2);
    let first = &memory.modules[0];
    assert_eq!(first.slot, "BANK 0 / Controller0-ChannelA");
    assert_eq!(first.size_bytes, 16 << 30);
    assert_eq!(first.memory_type, "LPDDR5");
    assert_eq!(first.speed_mts, 5200, "the configured speed wins");
    assert_eq!(first.serial, "", "an all-zero serial is a placeholder");
    let second = &memory.modules[1];
    assert_eq!(second.size_bytes, 16 << 30, "a uint64 sent as text");
    assert_eq!(
        second.speed_mts, 6400,
        "rated speed when none is configured"
    );
    assert_eq!(second.serial, "0A1B2C3D");
}

#[test]
fn laptop_disks_network_gpu_battery() {
    let inv = applied("snapshot-laptop.json");
    let disks = inv.storage.expect("fixture").disks;
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].name, "PhysicalDrive0");
    assert_eq!(disks[0].kind, DiskKind::Nvme as i32);
    assert!(!disks[0].removable);
    assert_eq!(disks[0].size_bytes, 512_105_932_800);
    assert!(disks[1].removable, "a USB stick");

    let network = inv.network.expect("fixture");
    let wifi = &network.interfaces[0];
    assert_eq!(wifi.name, "Wi-Fi");
    assert_eq!(wifi.mac, "a4:c3:f0:11:22:33");
    assert_eq!(wifi.ipv4, ["10.1.2.3"]);
    assert_eq!(wifi.ipv6, ["fe80::1c2d:3e4f:5a6b:7c8d"]);
    assert!(wifi.up && wifi.wireless);
    assert_eq!(wifi.speed_mbps, 1201);
    let wired = &network.interfaces[1];
    assert!(!wired.up && !wired.wireless);
    assert!(wired.ipv4.is_empty());
    assert_eq!(network.default_gateways, ["10.1.2.1"]);
    assert_eq!(network.dns_servers, ["10.0.0.53", "10.0.1.53"]);

    assert_eq!(
        inv.gpu.expect("fixture").gpus[0].vendor,
        "Intel Corporation"
    );
    let battery = &inv.battery.expect("fixture").batteries[0];
    assert_eq!(battery.design_capacity_mwh, 57_000);
    assert_eq!(battery.full_charge_capacity_mwh, 51_300);
    assert_eq!(battery.cycle_count, 212);
    assert!((battery.health_percent - 90.0).abs() < 0.01);
}

#[test]
fn laptop_os_users_security_services_hotfixes() {
    let inv = applied("snapshot-laptop.json");
    let os = inv.os.as_ref().expect("fixture");
    assert_eq!(os.name, "Microsoft Windows 11 Enterprise");
    assert_eq!(os.version, "23H2");
    assert_eq!(os.build, "22631.4460");
    assert_eq!(os.install_date_unix_s, 1_698_760_800);
    assert_eq!(os.boot_time_unix_s, 1_732_435_200);
    assert_eq!(os.timezone, "W. Europe Standard Time");
    assert_eq!(os.domain, "corp.example.com");
    assert_eq!(os.workgroup, "");

    let users = inv.users.as_ref().expect("fixture");
    let admins: Vec<&str> = users
        .users
        .iter()
        .filter(|u| u.admin)
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(admins, ["Administrator", "helpdesk"]);
    assert!(users.users[0].disabled);
    assert_eq!(users.users[1].full_name, "Help Desk");
    assert_eq!(users.sessions.len(), 1);
    assert_eq!(users.sessions[0].user, "alice");
    assert_eq!(users.last_login_user, "alice");
    assert_eq!(users.last_login_unix_s, 1_732_436_012);

    let security = inv.security.as_ref().expect("fixture");
    assert_eq!(security.firewall, ProtectionState::On as i32);
    assert_eq!(
        security.antivirus[0].product,
        "Microsoft Defender Antivirus"
    );
    assert_eq!(security.antivirus[0].state, ProtectionState::On as i32);
    assert!(security.antivirus[0].up_to_date);
    assert_eq!(security.encryption[0].volume, "C:");
    assert!(security.encryption[0].encrypted);
    assert_eq!(security.encryption[0].method, "BitLocker XTS-AES-128");
    assert!(security.reboot_pending);
    assert_eq!(security.pending_updates, Some(4));
    assert_eq!(reason(&inv, "security.pending_updates"), None);

    let services = &inv.services.as_ref().expect("fixture").services;
    assert_eq!(services.len(), 3);
    assert_eq!(
        (services[0].state.as_str(), services[0].start_mode.as_str()),
        ("running", "auto")
    );
    assert_eq!(services[2].start_mode, "disabled");

    let hotfixes = &inv.software.as_ref().expect("fixture").hotfixes;
    assert_eq!(hotfixes.len(), 2);
    assert_eq!(hotfixes[0].id, "KB5046633");
    assert!(hotfixes[0].installed_unix_s > 0);
    assert!(
        inv.unavailable.iter().all(|u| u.field != "system.serial"),
        "{:?}",
        inv.unavailable
    );
}

/// `ConvertTo-Json` collapses one-element lists into objects, firmware
/// leaves placeholders, and a workgroup PC has no domain.
#[test]
fn desktop_with_collapsed_lists_and_placeholders() {
    let inv = applied("snapshot-desktop-collapsed.json");
    let system = inv.system.as_ref().expect("fixture");
    assert_eq!(system.vendor, "", "placeholder vendor");
    assert_eq!(system.serial, "");
    assert_eq!(system.chassis_type, "desktop");
    assert_eq!(system.bios_date, "");
    assert_eq!(system.baseboard_model, "B450M Pro4");
    assert_eq!(
        reason(&inv, "system.serial"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(inv.cpu.as_ref().expect("fixture").physical_cores, 6);
    let module = &inv.memory.as_ref().expect("fixture").modules[0];
    assert_eq!(module.slot, "DIMM 1");
    assert_eq!(module.memory_type, "DDR4");
    assert_eq!(module.manufacturer, "", "\"Unknown\" is a placeholder");
    assert_eq!(
        inv.memory.as_ref().expect("fixture").available_bytes,
        8 << 30
    );
    let disk = &inv.storage.as_ref().expect("fixture").disks[0];
    assert_eq!(disk.kind, DiskKind::Hdd as i32);
    let network = inv.network.as_ref().expect("fixture");
    assert_eq!(network.interfaces[0].ipv4, ["192.168.1.20"]);
    assert_eq!(network.default_gateways, ["192.168.1.1"]);
    assert!(network.dns_servers.is_empty());
    assert!(inv.battery.as_ref().expect("fixture").batteries.is_empty());

    let os = inv.os.as_ref().expect("fixture");
    assert_eq!(os.version, "10.0.19045", "no DisplayVersion before 20H2");
    assert_eq!(os.build, "19045");
    assert_eq!(
        (os.domain.as_str(), os.workgroup.as_str()),
        ("", "WORKGROUP")
    );

    let users = inv.users.as_ref().expect("fixture");
    assert_eq!(users.users.len(), 1);
    assert!(!users.users[0].admin);
    assert_eq!(users.last_login_user, "");

    let security = inv.security.as_ref().expect("fixture");
    assert_eq!(
        security.firewall,
        ProtectionState::Off as i32,
        "the Public profile is off"
    );
    let states: Vec<(i32, bool)> = security
        .antivirus
        .iter()
        .map(|a| (a.state, a.up_to_date))
        .collect();
    assert_eq!(
        states,
        [
            (ProtectionState::Off as i32, true),
            (ProtectionState::On as i32, false)
        ]
    );
    assert!(security.encryption.is_empty());
    assert_eq!(
        reason(&inv, "security.encryption"),
        Some(UnavailableReason::NotPermitted as i32)
    );
    assert!(!security.reboot_pending);
    // No Windows Update Agent: no count, and the reason why, never 0.
    assert_eq!(security.pending_updates, None);
    let why = inv
        .unavailable
        .iter()
        .find(|u| u.field == "security.pending_updates")
        .expect("the missing count is explained");
    assert_eq!(why.reason, UnavailableReason::NotPresent as i32);
    assert!(why.detail.contains("0x80040154"), "{}", why.detail);
    assert_eq!(
        inv.services.as_ref().expect("fixture").services[0].name,
        "Spooler"
    );
    assert_eq!(
        inv.software.as_ref().expect("fixture").hotfixes[0].id,
        "KB5011048"
    );
}

#[test]
fn empty_queries_are_recorded_as_unavailable() {
    let mut inv = Inventory::default();
    apply_snapshot(
        r#"{"os": {"Caption": "Microsoft Windows 11 Pro"}}"#,
        &mut inv,
    )
    .expect("fixture");
    for field in [
        "system",
        "cpu",
        "storage.disks",
        "network.interfaces",
        "users",
        "services",
        "security.firewall",
        "security.antivirus",
    ] {
        assert!(
            reason(&inv, field).is_some(),
            "{field}: {:?}",
            inv.unavailable
        );
    }
    assert_eq!(inv.os.expect("fixture").name, "Microsoft Windows 11 Pro");
}

#[test]
fn broken_snapshots_are_one_line_errors() {
    let mut inv = Inventory::default();
    let err = apply_snapshot("Get-CimInstance : Access denied", &mut inv).expect_err("must fail");
    assert!(err.starts_with("inventory snapshot is not JSON"), "{err}");
    let err = apply_snapshot("[1, 2]", &mut inv).expect_err("must fail");
    assert_eq!(err, "inventory snapshot is not a JSON object");
    assert!(!err.contains('\n'));
}

#[test]
fn security_center_product_states() {
    assert_eq!(antivirus_state(0x061100), (ProtectionState::On, true));
    assert_eq!(antivirus_state(0x060100), (ProtectionState::Off, true));
    assert_eq!(antivirus_state(0x041010), (ProtectionState::On, false));
    assert_eq!(antivirus_state(0x051000), (ProtectionState::On, true));
}

#[test]
fn dates_in_utc() {
    assert_eq!(iso_date(0), "1970-01-01");
    assert_eq!(iso_date(951_782_400), "2000-02-29");
    assert_eq!(iso_date(1_709_251_200), "2024-03-01");
    assert_eq!(iso_date(-86_400), "1969-12-31");
}

/// The adapter fills every key the parser reads, from a query or from
/// its own code, so a rename on one side fails here rather than as a
/// silently empty field on a PC.
#[test]
fn the_adapter_fills_every_key_the_parser_reads() {
    use snapshot::{INVENTORY_QUERIES, SECURITY_QUERIES};
    // Built by the adapter itself from registry values, the Administrators
    // group, explorer.exe owners and the Windows Update Agent (native.rs).
    let built = [
        "admins",
        "sessions",
        "last_logon",
        "reboot_flags",
        "pending_updates",
    ];
    let queried: Vec<&str> = INVENTORY_QUERIES
        .iter()
        .chain(SECURITY_QUERIES)
        .map(|q| q.key)
        .collect();
    let laptop: serde_json::Value =
        serde_json::from_str(&fixture("snapshot-laptop.json")).expect("fixture");
    let keys = laptop.as_object().expect("fixture").keys();
    for key in keys {
        assert!(
            queried.contains(&key.as_str()) || built.contains(&key.as_str()),
            "nothing fills {key}"
        );
    }
    for key in queried.iter().chain(&built) {
        assert!(laptop.get(*key).is_some(), "the laptop fixture lacks {key}");
    }
}
