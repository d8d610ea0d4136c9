//! The macOS inventory from `system_profiler`, `ioreg` and plist fixtures
//! (Intel and Apple silicon), with missing sources named and the plists
//! round-tripped through the real `plistutil`.

use std::collections::HashSet;
use std::path::PathBuf;

use deskpulse_proto::v1::{DiskKind, Inventory, ProtectionState, UnavailableReason};

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/macos")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).expect("fixture")
}

fn reason(inv: &Inventory, field: &str) -> Option<i32> {
    inv.unavailable
        .iter()
        .find(|u| u.field == field)
        .map(|u| u.reason)
}

#[test]
fn intel_mac_from_system_profiler() {
    let mut inv = Inventory::default();
    apply_system_profiler(&fixture("system_profiler-intel.json"), &mut inv).expect("fixture");
    let system = inv.system.expect("fixture");
    assert_eq!(system.vendor, "Apple Inc.");
    assert_eq!(system.model, "MacBook Pro MacBookPro16,2");
    assert_eq!(system.serial, "C02ZK1ABMD6M");
    assert_eq!(system.hardware_uuid, "5f0c1d9e-3b7a-5c1e-9a2b-1c2d3e4f5a6b");
    assert_eq!(system.chassis_type, "notebook");
    assert!(system.bios_version.starts_with("1968.40.5.0.0"));

    let memory = inv.memory.expect("fixture");
    assert_eq!(memory.total_bytes, 16 << 30);
    assert_eq!(memory.modules.len(), 2);
    assert_eq!(memory.modules[0].slot, "BANK 0/ChannelA-DIMM0");
    assert_eq!(memory.modules[0].size_bytes, 8 << 30);
    assert_eq!(memory.modules[0].memory_type, "LPDDR4X");
    assert_eq!(memory.modules[0].speed_mts, 3733);
    assert_eq!(memory.modules[0].serial, "", "0x00000000 is no serial");
    assert_eq!(memory.modules[1].serial, "0x12345678");

    let disk = &inv.storage.expect("fixture").disks[0];
    assert_eq!(disk.name, "disk0");
    assert_eq!(disk.model, "APPLE SSD AP0512N");
    assert_eq!(disk.kind, DiskKind::Nvme as i32);
    assert_eq!(disk.size_bytes, 500_277_790_720);
    assert!(!disk.removable);

    let gpu = &inv.gpu.expect("fixture").gpus[0];
    assert_eq!(
        (gpu.vendor.as_str(), gpu.model.as_str()),
        ("Intel", "Intel Iris Plus Graphics")
    );

    let network = inv.network.expect("fixture");
    assert_eq!(network.interfaces.len(), 3);
    let wifi = &network.interfaces[0];
    assert_eq!(wifi.name, "en0");
    assert_eq!(wifi.mac, "3c:22:fb:11:22:33");
    assert_eq!(wifi.ipv4, ["192.168.1.23"]);
    assert!(wifi.up && wifi.wireless);
    assert!(!network.interfaces[1].up, "a cable with no address");
    assert_eq!(network.default_gateways, ["192.168.1.1"]);
    assert_eq!(network.dns_servers, ["192.168.1.1", "1.1.1.1"]);

    let os = inv.os.expect("fixture");
    assert_eq!(
        (os.name.as_str(), os.version.as_str(), os.build.as_str()),
        ("macOS", "14.1", "23B74")
    );
}

#[test]
fn apple_silicon_unified_memory_and_external_sata() {
    let mut inv = Inventory::default();
    apply_system_profiler(&fixture("system_profiler-apple-silicon.json"), &mut inv)
        .expect("fixture");
    let system = inv.system.expect("fixture");
    assert_eq!(system.serial, "", "\"Not Available\" is a placeholder");
    assert_eq!(system.chassis_type, "desktop");
    let memory = inv.memory.expect("fixture");
    assert_eq!(memory.modules.len(), 1);
    assert_eq!(memory.modules[0].slot, "unified");
    assert_eq!(memory.modules[0].size_bytes, 16 << 30);
    assert_eq!(memory.modules[0].memory_type, "LPDDR5");
    let disk = &inv.storage.expect("fixture").disks[0];
    assert_eq!(disk.kind, DiskKind::Ssd as i32);
    assert!(disk.removable, "a detachable drive");
    assert_eq!(inv.gpu.expect("fixture").gpus[0].vendor, "Apple");
    assert_eq!(inv.os.expect("fixture").version, "15.1.1");
}

#[test]
fn broken_profiler_output_is_a_one_line_error() {
    let mut inv = Inventory::default();
    let err = apply_system_profiler("", &mut inv).expect_err("must fail");
    assert!(
        err.starts_with("system_profiler output is not JSON"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    apply_system_profiler("{}", &mut inv).expect("fixture");
    assert_eq!(
        reason(&inv, "system"),
        Some(UnavailableReason::Failed as i32)
    );
}

#[test]
fn battery_capacity_from_ioreg() {
    let info = batteries(fixture("ioreg-battery.plist").as_bytes()).expect("fixture");
    let battery = &info.batteries[0];
    assert_eq!(battery.manufacturer, "SMP");
    assert_eq!(battery.cycle_count, 318);
    // mAh × design volts: 5103 × 11.4 and 4382 × 11.4.
    assert_eq!(battery.design_capacity_mwh, 58_174);
    assert_eq!(battery.full_charge_capacity_mwh, 49_954);
    assert!((battery.health_percent - 85.87).abs() < 0.01);
    assert!(
        batteries(b"garbage")
            .expect_err("must fail")
            .starts_with("ioreg output is not a plist")
    );
}

#[test]
fn sizes_versions_and_program_answers() {
    assert_eq!(size_bytes("16 GB"), 16 << 30);
    assert_eq!(size_bytes("512 MB"), 512 << 20);
    assert_eq!(size_bytes("lots"), 0);
    assert_eq!(
        os_version("macOS 14.1 (23B74)"),
        ("macOS".into(), "14.1".into(), "23B74".into())
    );
    assert_eq!(
        os_version("Mac OS X 10.15.7 (19H2026)"),
        ("Mac OS X".into(), "10.15.7".into(), "19H2026".into())
    );
    assert_eq!(filevault("FileVault is On.\n"), Some(true));
    assert_eq!(
        filevault(
            "FileVault is Off.\nDeferred enablement appears to be active for user 'alice'.\n"
        ),
        Some(false)
    );
    assert_eq!(
        filevault("Encryption in progress: Percent completed = 42.1"),
        None
    );
    let running = launchctl_running(&fixture("launchctl-list.txt"));
    assert_eq!(
        running,
        HashSet::from(["com.example.vpn.daemon".to_owned()])
    );
}

#[test]
fn users_security_and_services_from_files() {
    let root = fixtures().join("root");
    let mut inv = Inventory::default();
    let running = launchctl_running(&fixture("launchctl-list.txt"));
    let xprotect =
        root.join("Library/Apple/System/Library/CoreServices/XProtect.bundle/Contents/Info.plist");
    let updated = crate::collect::host::mtime_unix_s(&xprotect).expect("fixture");
    apply_files(&root, &mut inv, Ok(true), Some(&running), updated + 86_400);

    let users = inv.users.as_ref().expect("fixture");
    let names: Vec<(&str, bool, bool)> = users
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.admin, u.disabled))
        .collect();
    assert_eq!(names, [("alice", true, false), ("bob", false, true)]);
    assert_eq!(users.users[0].full_name, "Alice Smith");
    assert_eq!(users.users[0].id, "501");
    assert_eq!(users.last_login_user, "alice");

    let os = inv.os.as_ref().expect("fixture");
    let setup_done = crate::collect::host::mtime_unix_s(&root.join("var/db/.AppleSetupDone"));
    assert_eq!(Some(os.install_date_unix_s), setup_done);
    // The zone comes from the fixture's etc/localtime symlink, which a
    // Windows checkout (and Wine) does not present as a link.
    #[cfg(unix)]
    assert_eq!(os.timezone, "Europe/Berlin");

    let security = inv.security.as_ref().expect("fixture");
    assert_eq!(security.firewall, ProtectionState::On as i32);
    assert!(security.encryption[0].encrypted);
    assert_eq!(security.encryption[0].method, "FileVault");
    assert_eq!(security.antivirus[0].product, "XProtect 5272");
    assert!(security.antivirus[0].up_to_date);
    assert_eq!(security.pending_updates, Some(2));
    assert_eq!(
        reason(&inv, "security.reboot_pending"),
        Some(UnavailableReason::NotSupported as i32)
    );

    let services: Vec<(&str, &str, &str)> = inv
        .services
        .as_ref()
        .expect("fixture")
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str(), s.start_mode.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("com.apple.cupsd", "stopped", "on-demand"),
            ("com.openssh.sshd", "stopped", "disabled"),
            ("com.example.vpn.daemon", "running", "auto"),
            ("com.example.updater", "stopped", "disabled"),
        ]
    );
}

#[test]
fn missing_sources_are_unavailable_with_reasons() {
    let empty = tempfile::tempdir().expect("fixture");
    let mut inv = Inventory::default();
    apply_files(
        empty.path(),
        &mut inv,
        Err("fdesetup: no answer within 60s, killed".into()),
        None,
        0,
    );
    assert_eq!(
        reason(&inv, "users"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(
        reason(&inv, "security.firewall"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(
        reason(&inv, "security.encryption"),
        Some(UnavailableReason::Failed as i32)
    );
    assert_eq!(
        reason(&inv, "security.antivirus"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(
        reason(&inv, "services.state"),
        Some(UnavailableReason::Failed as i32)
    );
    let security = inv.security.as_ref().expect("fixture");
    assert!(security.encryption.is_empty());
    assert_eq!(security.firewall, ProtectionState::Unspecified as i32);
}

#[test]
fn stale_xprotect_definitions_are_not_up_to_date() {
    let root = fixtures().join("root");
    let xprotect =
        root.join("Library/Apple/System/Library/CoreServices/XProtect.bundle/Contents/Info.plist");
    let updated = crate::collect::host::mtime_unix_s(&xprotect).expect("fixture");
    let mut inv = Inventory::default();
    apply_files(&root, &mut inv, Ok(false), None, updated + 60 * 86_400);
    let security = inv.security.expect("fixture");
    assert!(!security.antivirus[0].up_to_date);
    assert!(!security.encryption[0].encrypted);
    assert!(
        inv.services
            .expect("fixture")
            .services
            .iter()
            .all(|s| s.state.is_empty())
    );
}

/// The plist fixtures are real plists: plistutil (libplist, D32) turns
/// each into Apple's binary form, and we read both forms the same.
///
/// Unix only: a Windows build cannot start the Debian `plistutil` CI has.
#[test]
#[cfg(unix)]
fn plist_fixtures_round_trip_through_plistutil() {
    let root = fixtures().join("root");
    let mut plists = vec![fixtures().join("ioreg-battery.plist")];
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).expect("fixture").flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "plist")
                && !path.ends_with("broken.plist")
            {
                plists.push(path);
            }
        }
    }
    assert!(plists.len() >= 12, "{plists:?}");
    let out_dir = tempfile::tempdir().expect("fixture");
    for (i, path) in plists.iter().enumerate() {
        let bin = out_dir.path().join(format!("{i}.plist"));
        let status = std::process::Command::new("plistutil")
            .arg("-i")
            .arg(path)
            .arg("-o")
            .arg(&bin)
            .args(["-f", "bin"])
            .status();
        match status {
            Ok(status) => assert!(status.success(), "plistutil rejects {}", path.display()),
            Err(_) => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "plistutil is required in CI (apt-get install libplist-utils)"
                );
                eprintln!("SKIPPED: plistutil is not installed");
                return;
            }
        }
        assert_eq!(
            plist::Value::from_file(&bin).expect("fixture"),
            plist::Value::from_file(path).expect("fixture"),
            "{}",
            path.display()
        );
    }
}
