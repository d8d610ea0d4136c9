//! Health samples: `/proc` readings, SMART from `smartctl -j` (fixtures and
//! the real tool), the last OS update, thermal fallbacks, posture, watched
//! services, and slow probes run only when their interval is due.

use std::path::PathBuf;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(target_os = "linux")]
use std::sync::{Arc, Mutex};

use super::*;

fn smart_fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smart")
        .join(name);
    std::fs::read(&path).expect("smart fixture")
}

/// A fixture tree under a temp dir.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir").keep())
    }

    fn write(&self, path: &str, text: &str) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
        self
    }

    #[cfg(target_os = "linux")]
    fn link(&self, path: &str, target: &str) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, full).expect("symlink");
        self
    }
}

/// A laptop: two hwmon chips, a thermal zone, two batteries (energy and
/// charge counters), systemd running with cups up and sshd down, ufw on,
/// ClamAV installed but its daemon not enabled, a pending reboot, apt
/// history and a disk that smartctl will be asked about.
///
/// Linux only, with the tests that sample it: the sampler reads a Linux
/// root only in a Linux build (posture and the last update come from each
/// OS's own sources), and systemd's invocation links are symlinks with a
/// `:` in their names, which Windows cannot make.
#[cfg(target_os = "linux")]
fn laptop() -> Root {
    let root = Root::new();
    root.write("proc/stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0\ncpu1 50 0 50 350 50 0 0 0\nintr 1\n")
        .write("proc/meminfo", "MemTotal:       8000 kB\nMemAvailable:   2000 kB\nSwapTotal:      4000 kB\nSwapFree:       3000 kB\n")
        .write("proc/loadavg", "0.52 0.41 0.30 2/611 12345\n")
        .write("proc/filesystems", "nodev\tproc\n\text4\n")
        .write("proc/mounts", "/dev/nvme0n1p2 / ext4 rw 0 0\n")
        .write("sys/class/hwmon/hwmon0/name", "acpitz\n")
        .write("sys/class/hwmon/hwmon0/temp1_input", "47000\n")
        .write("sys/class/hwmon/hwmon0/temp1_crit", "105000\n")
        .write("sys/class/hwmon/hwmon1/name", "coretemp\n")
        .write("sys/class/hwmon/hwmon1/temp1_input", "52500\n")
        .write("sys/class/hwmon/hwmon1/temp1_label", "Package id 0\n")
        .write("sys/class/hwmon/hwmon1/temp1_crit", "100000\n")
        // A sensor that is not wired reads as an error value, not a fire.
        .write("sys/class/hwmon/hwmon1/temp2_input", "-273000\n")
        .write("sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
        .write("sys/class/thermal/thermal_zone0/temp", "53000\n")
        .write("sys/class/power_supply/AC/type", "Mains\n")
        .write("sys/class/power_supply/BAT0/type", "Battery\n")
        .write("sys/class/power_supply/BAT0/energy_full_design", "57000000\n")
        .write("sys/class/power_supply/BAT0/energy_full", "45600000\n")
        .write("sys/class/power_supply/BAT0/capacity", "81\n")
        .write("sys/class/power_supply/BAT0/cycle_count", "312\n")
        .write("sys/class/power_supply/BAT1/type", "Battery\n")
        .write("sys/class/power_supply/BAT1/charge_full_design", "4000000\n")
        .write("sys/class/power_supply/BAT1/charge_full", "3000000\n")
        .write("sys/class/power_supply/BAT1/voltage_min_design", "11100000\n")
        .write("sys/class/power_supply/BAT1/capacity", "100\n")
        .write("sys/block/nvme0n1/removable", "0\n")
        .write("sys/block/loop0/removable", "0\n")
        .write("sys/block/sdb/removable", "1\n")
        .write("run/systemd/system/.keep", "")
        .write("lib/systemd/system/cups.service", "[Unit]\nDescription=CUPS\n[Install]\nWantedBy=multi-user.target\n")
        .write("lib/systemd/system/ssh.service", "[Unit]\nDescription=SSH\n")
        .link("run/systemd/units/invocation:cups.service", "0123456789abcdef")
        .write("run/reboot-required", "*** System restart required ***\n")
        .write("etc/ufw/ufw.conf", "ENABLED=yes\nLOGLEVEL=low\n")
        .write("usr/sbin/clamd", "")
        .write("var/lib/dpkg/status", "")
        .write("var/log/apt/history.log", APT_HISTORY);
    root
}

/// The laptop's apt history: an upgrade, a failed upgrade and a removal.
const APT_HISTORY: &str = "\nStart-Date: 2024-04-30  09:00:01\nCommandline: apt-get -y upgrade\nUpgrade: libc6:amd64 (2.36-9, 2.36-9+deb12u4)\nEnd-Date: 2024-04-30  09:01:10\n\nStart-Date: 2024-05-01  10:00:00\nCommandline: apt-get -y upgrade\nUpgrade: openssl:amd64 (3.0.11-1, 3.0.13-1)\nError: Sub-process /usr/bin/dpkg returned an error code (1)\nEnd-Date: 2024-05-01  10:00:30\n\nStart-Date: 2024-05-02  08:00:00\nCommandline: apt-get remove foo\nRemove: foo:amd64 (1.0)\nEnd-Date: 2024-05-02  08:00:05\n";

fn settings() -> HealthSettings {
    HealthSettings {
        watch_services: vec!["cups.service".into(), "ssh".into(), "nope.service".into()],
        ..HealthSettings::default()
    }
}

/// A SMART runner that answers with a fixture and counts its calls.
#[cfg(target_os = "linux")]
fn counting_runner(fixture: &'static str, calls: Arc<AtomicUsize>) -> SmartRunner {
    Box::new(move |_device: &str| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(smart_fixture(fixture))
    })
}

#[test]
fn proc_readings_parse() {
    assert_eq!(
        parse::loadavg("0.52 0.41 0.30 2/611 12345\n"),
        Some((0.52, 0.41, 0.30))
    );
    assert_eq!(parse::loadavg("garbage"), None);
    assert_eq!(
        parse::logical_cpus("cpu  1 2 3\ncpu0 1\ncpu1 1\ncpu12 1\nintr 5\n"),
        3
    );
    assert_eq!(
        parse::swap_used_percent("SwapTotal: 4000 kB\nSwapFree: 1000 kB\n"),
        75.0
    );
    assert_eq!(
        parse::swap_used_percent("SwapTotal: 0 kB\nSwapFree: 0 kB\n"),
        0.0
    );
    assert_eq!(parse::millidegrees("45500\n"), Some(45.5));
    assert_eq!(parse::millidegrees("-273000"), None);
}

#[test]
fn nvme_smart_reads_wear_media_errors_and_temperature() {
    let disk = parse::smart("/dev/nvme0n1", &smart_fixture("nvme.json"), 7).expect("a disk");
    assert_eq!(
        disk,
        DiskHealth {
            device: "/dev/nvme0n1".into(),
            model: "SAMSUNG MZVL2512HCJQ-00BL7".into(),
            serial: "S64KNX0T512345".into(),
            passed: true,
            temperature_celsius: 41.0,
            reallocated_sectors: 2,
            percentage_used: 7,
            checked_at_unix_ms: 7,
        }
    );
}

#[test]
fn a_failing_sata_disk_reports_its_reallocated_sectors() {
    let disk = parse::smart("/dev/sda", &smart_fixture("sata-failing.json"), 7).expect("a disk");
    assert!(!disk.passed);
    assert_eq!(disk.reallocated_sectors, 1848);
    assert_eq!(disk.temperature_celsius, 35.0);
    assert_eq!(disk.percentage_used, 0);
    assert_eq!(disk.model, "WDC WD10EZEX-08WN4A0");
}

#[test]
fn a_disk_smartctl_cannot_read_is_unavailable_not_failed() {
    // Captured from smartctl 7.3 on our virtio VM disk.
    let (reason, detail) = parse::smart("/dev/vda", &smart_fixture("virtio-unsupported.json"), 7)
        .expect_err("no status");
    assert_eq!(reason, UnavailableReason::NotSupported);
    assert_eq!(detail, "smartctl: /dev/vda: Unable to detect device type");
    let (reason, detail) =
        parse::smart("/dev/sda", &smart_fixture("sata-permission.json"), 7).expect_err("no status");
    assert_eq!(reason, UnavailableReason::NotPermitted);
    assert!(detail.contains("Permission denied"), "{detail}");
    let (reason, _) = parse::smart("/dev/sda", b"not json", 7).expect_err("no json");
    assert_eq!(reason, UnavailableReason::Failed);
}

#[test]
fn apt_history_gives_the_last_successful_upgrade() {
    // The failed run on 05-01 and the removal on 05-02 do not count.
    assert_eq!(
        parse::apt_last_success(APT_HISTORY),
        parse::naive_datetime_ms("2024-04-30 09:01:10")
    );
    assert_eq!(
        parse::naive_datetime_ms("2024-04-30  09:01:10"),
        Some(1_714_467_670_000)
    );
    assert_eq!(parse::naive_datetime_ms("1970-01-01 00:00:00"), Some(0));
    assert_eq!(parse::naive_datetime_ms("2024-13-01 00:00:00"), None);
    assert_eq!(
        parse::dpkg_last_install(
            "2024-05-01 10:12:33 startup packages configure\n2024-05-01 10:12:34 status installed libc6:amd64 2.36-9\n2024-05-01 10:12:35 status half-configured x:amd64 1\n"
        ),
        parse::naive_datetime_ms("2024-05-01 10:12:34")
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_laptop_sample_has_every_reading() {
    let root = laptop();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sampler = HealthSampler::with_settings(&root.0, settings())
        .with_smart_runner(counting_runner("nvme.json", calls.clone()));
    let h = sampler.sample_at(Instant::now(), 1_000);
    assert_eq!((h.load_1m, h.load_5m, h.load_15m), (0.52, 0.41, 0.30));
    assert_eq!(h.logical_cpus, 2);
    assert_eq!(h.swap_used_percent, 25.0);
    assert_eq!(h.memory_used_percent, 75.0);
    let temps: Vec<(&str, f32, f32)> = h
        .temperatures
        .iter()
        .map(|t| (t.sensor.as_str(), t.celsius, t.critical_celsius))
        .collect();
    // hwmon wins; the thermal zone is the same sensor seen twice.
    assert_eq!(
        temps,
        [
            ("acpitz temp1", 47.0, 105.0),
            ("coretemp Package id 0", 52.5, 100.0)
        ]
    );
    assert_eq!(
        h.batteries,
        [
            BatteryHealth {
                name: "BAT0".into(),
                health_percent: 80.0,
                charge_percent: 81.0,
                cycle_count: 312,
            },
            BatteryHealth {
                name: "BAT1".into(),
                health_percent: 75.0,
                charge_percent: 100.0,
                cycle_count: 0,
            },
        ]
    );
    assert!(h.reboot_pending);
    let services: Vec<(&str, &str)> = h
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("cups.service", "running"),
            ("ssh", "stopped"),
            ("nope.service", "missing")
        ]
    );
    // Only the NVMe disk is asked: loop and removable devices are not.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.disks.len(), 1);
    assert_eq!(h.disks[0].device, "/dev/nvme0n1");
    assert_eq!(
        Some(h.last_update_unix_ms),
        parse::naive_datetime_ms("2024-04-30 09:01:10")
    );
    let posture = h.posture.expect("posture");
    assert_eq!(
        (posture.antivirus, posture.firewall, posture.encryption),
        (
            ProtectionState::Off as i32,
            ProtectionState::On as i32,
            ProtectionState::Off as i32
        )
    );
    assert_eq!(posture.checked_at_unix_ms, 1_000);
    assert!(h.unavailable.is_empty(), "{:?}", h.unavailable);

    // `deskpulse-agent health` and the CLI print the same text.
    let text = deskpulse_proto::render::render_health(&h);
    for line in [
        "load 0.52 0.41 0.30 on 2 logical CPUs",
        "temperature coretemp Package id 0 52.5 °C (critical 100 °C)",
        "battery BAT0 health 80%, charge 81%, 312 cycles",
        "reboot pending: true",
        "service nope.service missing",
        "disk /dev/nvme0n1 SAMSUNG MZVL2512HCJQ-00BL7 (S64KNX0T512345) SMART passed, 41 °C, 2 reallocated/media errors, 7% worn",
        "last OS update 2024-04-30T09:01:10Z",
        "posture: antivirus off, firewall on, encryption off",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
}

#[test]
fn thermal_zones_are_the_fallback_without_hwmon() {
    let root = Root::new();
    root.write("sys/class/thermal/thermal_zone0/type", "acpitz\n")
        .write("sys/class/thermal/thermal_zone0/temp", "61000\n")
        .write(
            "sys/class/thermal/thermal_zone0/trip_point_0_type",
            "passive\n",
        )
        .write(
            "sys/class/thermal/thermal_zone0/trip_point_0_temp",
            "90000\n",
        )
        .write(
            "sys/class/thermal/thermal_zone0/trip_point_1_type",
            "critical\n",
        )
        .write(
            "sys/class/thermal/thermal_zone0/trip_point_1_temp",
            "110000\n",
        )
        .write("sys/class/thermal/cooling_device0/type", "Processor\n");
    assert_eq!(
        temperatures(&root.0),
        [TemperatureReading {
            sensor: "acpitz".into(),
            celsius: 61.0,
            critical_celsius: 110.0,
        }]
    );
}

#[test]
#[cfg(target_os = "linux")]
fn slow_probes_are_not_rerun_before_their_interval() {
    let root = laptop();
    let calls = Arc::new(AtomicUsize::new(0));
    let settings = HealthSettings {
        posture_interval: Duration::from_secs(600),
        smart_interval: Duration::from_secs(6 * 3600),
        updates_interval: Duration::from_secs(6 * 3600),
        services_interval: Duration::from_secs(300),
        ..settings()
    };
    let mut sampler = HealthSampler::with_settings(&root.0, settings)
        .with_smart_runner(counting_runner("nvme.json", calls.clone()));
    let start = Instant::now();
    let first = sampler.sample_at(start, 1_000);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The firewall goes off, apt upgrades and a service starts.
    root.write("etc/ufw/ufw.conf", "ENABLED=no\n")
        .write(
            "var/log/apt/history.log",
            "Start-Date: 2024-06-01  09:00:00\nUpgrade: a:amd64 (1, 2)\nEnd-Date: 2024-06-01  09:00:10\n",
        )
        .link("run/systemd/units/invocation:ssh.service", "fedcba9876543210");

    // Two minutes later every probe is cached, services too.
    let soon = sampler.sample_at(start + Duration::from_secs(120), 1_500);
    assert_eq!(soon.services[1].state, "stopped", "services are cached");

    // Nine minutes later: the services are read again, the rest cached.
    let later = sampler.sample_at(start + Duration::from_secs(540), 2_000);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "SMART is not re-run");
    assert_eq!(later.disks, first.disks);
    assert_eq!(later.posture, first.posture, "posture is cached");
    assert_eq!(later.last_update_unix_ms, first.last_update_unix_ms);
    assert_eq!(later.services[1].state, "running", "services past 5 min");

    // Past the posture interval only posture is read again.
    let after = sampler.sample_at(start + Duration::from_secs(601), 3_000);
    let posture = after.posture.expect("posture");
    assert_eq!(posture.firewall, ProtectionState::Off as i32);
    assert_eq!(posture.checked_at_unix_ms, 3_000);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(after.last_update_unix_ms, first.last_update_unix_ms);

    // Past six hours SMART and the update log are read again.
    let next = sampler.sample_at(start + Duration::from_secs(6 * 3600), 4_000);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        Some(next.last_update_unix_ms),
        parse::naive_datetime_ms("2024-06-01 09:00:10")
    );
}

#[test]
fn missing_sources_are_named_unavailable() {
    let root = Root::new();
    root.write("proc/stat", "cpu  1 0 1 1 0 0 0 0\n");
    let gone: SmartRunner = Box::new(|_: &str| Err(SpawnError::NotFound("smartctl".into())));
    root.write("sys/block/sda/removable", "0\n")
        .write("sys/block/sdb/removable", "0\n");
    let mut sampler = HealthSampler::with_settings(&root.0, settings()).with_smart_runner(gone);
    let h = sampler.sample_at(Instant::now(), 1);
    let fields: Vec<(&str, i32)> = h
        .unavailable
        .iter()
        .map(|u| (u.field.as_str(), u.reason))
        .collect();
    let not_present = UnavailableReason::NotPresent as i32;
    for field in [
        "health.load_1m",
        "health.temperatures",
        "health.services",
        "health.posture.antivirus",
        "health.posture.encryption",
        "health.last_update_unix_ms",
    ] {
        assert!(
            fields.iter().any(|(f, _)| *f == field),
            "{field} in {fields:?}"
        );
    }
    // smartctl missing is one line for the machine, not one per disk.
    let disks: Vec<&Unavailable> = h
        .unavailable
        .iter()
        .filter(|u| u.field == "health.disks")
        .collect();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].reason, not_present);
    assert!(disks[0].detail.contains("smartctl is not installed"));
    assert!(h.disks.is_empty());
    assert!(h.services.is_empty());
}

#[test]
#[cfg(target_os = "linux")]
fn a_fixture_root_never_runs_the_real_smartctl() {
    let root = laptop();
    let h = HealthSampler::with_settings(&root.0, settings()).sample_at(Instant::now(), 1);
    assert!(h.disks.is_empty());
    assert!(
        h.unavailable.iter().any(
            |u| u.field == "health.disks" && u.reason == UnavailableReason::NotSupported as i32
        ),
        "{:?}",
        h.unavailable
    );
}

#[test]
#[cfg(target_os = "linux")] // rpm databases are read on Linux only
fn the_last_update_comes_from_the_rpmdb_on_rpm_systems() {
    let root = Root::new();
    let db = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm");
    for file in ["rpmdb.sqlite", "rpmdb.sqlite-shm", "rpmdb.sqlite-wal"] {
        let to = root.0.join("var/lib/rpm").join(file);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(db.join(file), to).expect("copy");
    }
    let newest = super::super::packages::rpm::read_db(&db.join("rpmdb.sqlite"))
        .expect("reads")
        .iter()
        .map(|p| p.install_date_unix_s)
        .max()
        .expect("packages");
    assert_eq!(read_last_update(&root.0), Ok(newest * 1000));
    assert_eq!(
        read_last_update(&Root::new().0)
            .expect_err("nothing")
            .reason,
        UnavailableReason::NotSupported as i32
    );
}

/// The real smartctl on this machine's disks (D31 installs smartmontools in
/// CI). On our VMs the virtio disk has no SMART: that must come out as an
/// unavailable entry naming the device, not as a failed disk. On a machine
/// with a real disk, each disk is either read (with its model) or named.
// Linux's disks (/sys/block) and the Linux smartctl.
#[test]
#[cfg(target_os = "linux")]
fn the_real_smartctl_on_this_machine_gives_disks_or_clear_unavailable_entries() {
    if spawn::run("smartctl", &["--version"], Duration::from_secs(10)).is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "smartctl (smartmontools) is required in CI"
        );
        eprintln!("SKIPPED: smartctl is not installed");
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let runner: SmartRunner = Box::new(move |device: &str| {
        log.lock().expect("lock").push(device.to_owned());
        smartctl(device)
    });
    let mut sampler = HealthSampler::new(Path::new("/")).with_smart_runner(runner);
    let h = sampler.sample_at(Instant::now(), 1);
    let devices = seen.lock().expect("lock").clone();
    for device in &devices {
        let read = h.disks.iter().find(|d| &d.device == device);
        let named = h
            .unavailable
            .iter()
            .find(|u| u.field == "health.disks" && u.detail.contains(device.as_str()));
        match (read, named) {
            (Some(disk), None) => assert!(!disk.model.is_empty(), "{disk:?}"),
            (None, Some(u)) => {
                assert_ne!(u.reason, UnavailableReason::Unspecified as i32);
                assert!(!u.detail.contains('\n'));
            }
            other => panic!("{device}: neither read nor named: {other:?}"),
        }
        if device.starts_with("/dev/vd") {
            assert!(read.is_none(), "a virtio disk has no SMART: {read:?}");
            assert_eq!(
                named.map(|u| u.reason),
                Some(UnavailableReason::NotSupported as i32)
            );
        }
    }
}

/// The posture derivation is OS-free: here it runs on the security sections
/// the Windows (WMI snapshot) and macOS (plist files) parsers make of their
/// fixtures.
#[test]
fn posture_from_the_windows_and_macos_security_sections() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut inv = Inventory::default();
    let json =
        std::fs::read_to_string(fixtures.join("windows/snapshot-laptop.json")).expect("fixture");
    super::super::windows::apply_snapshot(&json, &mut inv).expect("applies");
    let sec = inv.security.clone().expect("security");
    let (posture, missing) = posture_from(&sec, "C:", inv.unavailable.clone(), 5);
    let posture = posture.expect("posture");
    assert_eq!(posture.firewall, sec.firewall);
    let expected_av = if sec
        .antivirus
        .iter()
        .any(|a| a.state == ProtectionState::On as i32)
    {
        ProtectionState::On
    } else {
        ProtectionState::Off
    };
    assert!(
        !sec.antivirus.is_empty(),
        "the laptop fixture has antivirus"
    );
    assert_eq!(posture.antivirus, expected_av as i32);
    let c = sec
        .encryption
        .iter()
        .find(|v| v.volume == "C:")
        .expect("the fixture has C:");
    assert_eq!(
        posture.encryption,
        if c.encrypted {
            ProtectionState::On
        } else {
            ProtectionState::Off
        } as i32
    );
    assert!(
        missing
            .iter()
            .all(|u| u.field.starts_with("health.posture."))
    );

    let mut inv = Inventory::default();
    super::super::macos::apply_files(&fixtures.join("macos/root"), &mut inv, Ok(true), None, 0);
    let sec = inv.security.clone().expect("security");
    let (posture, missing) = posture_from(&sec, "/", inv.unavailable.clone(), 5);
    assert_eq!(
        posture.map(|p| (p.antivirus, p.firewall, p.encryption)),
        Some((
            ProtectionState::On as i32,
            ProtectionState::On as i32,
            ProtectionState::On as i32
        ))
    );
    // macOS has no reboot flag (security.reboot_pending is unavailable);
    // that is not a posture gap.
    assert!(missing.is_empty(), "{missing:?}");

    // No product and no system volume: unspecified, and named once.
    let (posture, missing) = posture_from(
        &deskpulse_proto::v1::SecurityInfo::default(),
        "/",
        vec![missing_entry("security.antivirus")],
        5,
    );
    let posture = posture.expect("posture");
    assert_eq!(posture.antivirus, ProtectionState::Unspecified as i32);
    assert_eq!(posture.encryption, ProtectionState::Unspecified as i32);
    let fields: Vec<&str> = missing.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(
        fields,
        ["health.posture.antivirus", "health.posture.encryption"]
    );
}

fn missing_entry(field: &str) -> Unavailable {
    Unavailable {
        field: field.into(),
        reason: UnavailableReason::NotPresent as i32,
        detail: "fixture".into(),
    }
}

/// Four watched units, as `SYSTEMCTL_SHOW` answers for them.
fn watched_units() -> Vec<String> {
    ["cups.service", "sshd", "nope.service", "backup.service"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// As systemd 252 prints `systemctl show --property=LoadState,ActiveState`
/// for the four `watched_units`.
const SYSTEMCTL_SHOW: &str = "LoadState=loaded\nActiveState=active\n\nActiveState=inactive\nLoadState=loaded\n\nLoadState=not-found\nActiveState=inactive\n\nLoadState=loaded\nActiveState=failed\n";

#[test]
fn systemctl_show_tells_failed_from_stopped_and_missing() {
    let names = watched_units();
    let states: Vec<(String, String)> = parse::systemctl_show(SYSTEMCTL_SHOW, &names)
        .expect("parses")
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("cups.service".into(), "running".into()),
            ("sshd".into(), "stopped".into()),
            ("nope.service".into(), "missing".into()),
            ("backup.service".into(), "failed".into()),
        ]
    );
    assert_eq!(parse::systemctl_show("LoadState=loaded\n", &names), None);
}

#[test]
#[cfg(target_os = "linux")]
fn the_sampler_asks_systemctl_once_per_interval_and_falls_back_to_unit_files() {
    let names = watched_units();
    let root = laptop();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let owned = SYSTEMCTL_SHOW.to_owned();
    let runner: ServiceRunner = Box::new(move |units: &[String]| {
        counted.fetch_add(1, Ordering::SeqCst);
        assert_eq!(units.len(), 4);
        Ok(owned.clone().into_bytes())
    });
    let mut sampler = HealthSampler::with_settings(
        &root.0,
        HealthSettings {
            watch_services: names.clone(),
            ..HealthSettings::default()
        },
    )
    .with_service_runner(runner);
    let start = Instant::now();
    let h = sampler.sample_at(start, 1);
    assert_eq!(h.services[3].state, "failed");
    sampler.sample_at(start + Duration::from_secs(60), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "cached for 5 min");
    sampler.sample_at(start + Duration::from_secs(300), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // When systemctl fails, the unit files answer, and the gap is named.
    let broken: ServiceRunner = Box::new(|_: &[String]| {
        Err(SpawnError::Failed(
            "systemctl show: exited with Some(1)".into(),
        ))
    });
    let h = HealthSampler::with_settings(&root.0, settings())
        .with_service_runner(broken)
        .sample_at(Instant::now(), 1);
    assert_eq!(h.services[0].state, "running");
    assert!(
        h.unavailable
            .iter()
            .any(|u| u.field == "health.services" && u.detail.contains("unit files")),
        "{:?}",
        h.unavailable
    );
}
