//! The boundary between wire inventories and the store's fleet-query facts:
//! which values of an inventory the fleet filters search, normalised
//! (lowercase, addresses without prefix length).

use deskpulse_proto::v1::{HealthSample, Inventory, ProtectionState};

use crate::model::{HealthReading, InventoryFacts, PackageKey};
use crate::rules::model::{Metric, Reading};

/// Percent free as `df` would say (100 − its used percent,
/// `deskpulse_proto::space`); from capacity alone for agents older than
/// issue 21, which did not send the used bytes.
fn free_percent(fs: &deskpulse_proto::v1::Filesystem) -> f32 {
    match fs.used_bytes {
        Some(used) if used > 0 || fs.available_bytes > 0 => {
            100.0 - deskpulse_proto::space::used_percent(used, fs.available_bytes)
        }
        _ if fs.total_bytes == 0 => 100.0,
        _ => (fs.available_bytes.min(fs.total_bytes) as f64 * 100.0 / fs.total_bytes as f64) as f32,
    }
}

/// The facts of an inventory.
pub fn inventory_facts(inv: &Inventory) -> InventoryFacts {
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    if let Some(os) = &inv.os {
        // The OS line as technicians read it: name, version and, where the
        // OS has one, its codename ("debian gnu/linux 12 (bookworm)").
        facts.push((
            "os",
            deskpulse_proto::render::os_line(&os.name, &os.version, &os.build).to_lowercase(),
        ));
    }
    if let Some(system) = &inv.system {
        facts.push(("chassis", system.chassis_type.trim().to_lowercase()));
        facts.push(("serial", system.serial.trim().to_lowercase()));
        facts.push((
            "model",
            format!("{} {}", system.vendor, system.model)
                .trim()
                .to_lowercase(),
        ));
    }
    if let Some(users) = &inv.users {
        facts.extend(users.users.iter().map(|u| ("user", u.name.to_lowercase())));
        facts.extend(
            users
                .sessions
                .iter()
                .map(|s| ("user", s.user.to_lowercase())),
        );
        facts.push(("user", users.last_login_user.to_lowercase()));
    }
    if let Some(net) = &inv.network {
        for nic in &net.interfaces {
            facts.push(("mac", nic.mac.to_lowercase().replace('-', ":")));
            for addr in nic.ipv4.iter().chain(&nic.ipv6) {
                let ip = addr.split('/').next().unwrap_or(addr);
                facts.push(("ip", ip.to_lowercase()));
            }
        }
    }
    let packages = inv
        .software
        .iter()
        .flat_map(|s| &s.packages)
        .filter(|p| !p.name.is_empty())
        .map(|p| PackageKey {
            ecosystem: p.ecosystem.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
        })
        .collect();
    let free = inv
        .storage
        .iter()
        .flat_map(|s| &s.filesystems)
        .map(|fs| (fs.mount_point.clone(), free_percent(fs)))
        .collect();
    InventoryFacts {
        packages,
        facts,
        free,
    }
}

/// Free space per filesystem of a health sample.
pub fn health_free(health: &HealthSample) -> Vec<(String, f32)> {
    health
        .filesystems
        .iter()
        .map(|fs| {
            (
                fs.mount_point.clone(),
                (100.0 - fs.used_percent).clamp(0.0, 100.0),
            )
        })
        .collect()
}

/// The readings the health history keeps of a sample.
pub fn health_reading(health: &HealthSample) -> HealthReading {
    HealthReading {
        cpu_percent: health.cpu_percent.clamp(0.0, 100.0),
        memory_used_percent: health.memory_used_percent.clamp(0.0, 100.0),
        disk_used_max_percent: health
            .filesystems
            .iter()
            .map(|f| f.used_percent.clamp(0.0, 100.0))
            .fold(0.0, f32::max),
        // A hostile or broken sensor cannot push the chart off any scale:
        // readings outside what a PC's sensors can show are left out.
        temperature_max_celsius: health
            .temperatures
            .iter()
            .map(|t| t.celsius)
            .filter(|c| c.is_finite() && (-60.0..=200.0).contains(c))
            .reduce(f32::max),
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

const DAY_MS: f64 = 86_400_000.0;

/// What the rules evaluate of a sample (see `Metric`). A reading the agent
/// did not take is left out rather than read as 0, so a missing probe can
/// neither fire nor clear a rule.
pub fn health_readings(health: &HealthSample, collected_at_ms: i64) -> Vec<Reading> {
    let one = |metric: Metric, value: f64| (metric, String::new(), value);
    let mut readings = vec![
        one(
            Metric::CpuPercent,
            f64::from(health.cpu_percent.clamp(0.0, 100.0)),
        ),
        one(
            Metric::MemoryUsedPercent,
            f64::from(health.memory_used_percent.clamp(0.0, 100.0)),
        ),
        one(
            Metric::SwapUsedPercent,
            f64::from(health.swap_used_percent.clamp(0.0, 100.0)),
        ),
        one(Metric::RebootPending, flag(health.reboot_pending)),
    ];
    if health.uptime_secs > 0 {
        readings.push(one(
            Metric::UptimeDays,
            (health.uptime_secs as f64 / 86_400.0).floor(),
        ));
    }
    if health.logical_cpus > 0 {
        readings.push(one(
            Metric::LoadPerCpu,
            f64::from(health.load_5m.max(0.0)) / f64::from(health.logical_cpus),
        ));
    }
    for fs in &health.filesystems {
        readings.push((
            Metric::DiskUsedPercent,
            fs.mount_point.clone(),
            f64::from(fs.used_percent.clamp(0.0, 100.0)),
        ));
        readings.push((
            Metric::DiskFreeMib,
            fs.mount_point.clone(),
            (fs.available_bytes / (1024 * 1024)) as f64,
        ));
    }
    for t in &health.temperatures {
        readings.push((
            Metric::TemperatureCelsius,
            t.sensor.clone(),
            f64::from(t.celsius),
        ));
    }
    for b in health.batteries.iter().filter(|b| b.health_percent > 0.0) {
        readings.push((
            Metric::BatteryHealthPercent,
            b.name.clone(),
            f64::from(b.health_percent),
        ));
    }
    for s in &health.services {
        readings.push((
            Metric::ServiceDown,
            s.name.clone(),
            flag(s.state != "running"),
        ));
    }
    for d in &health.disks {
        readings.push((Metric::SmartFailed, d.device.clone(), flag(!d.passed)));
        if d.percentage_used > 0 {
            readings.push((
                Metric::DiskWearPercent,
                d.device.clone(),
                f64::from(d.percentage_used),
            ));
        }
    }
    if health.last_update_unix_ms > 0 {
        let days = (collected_at_ms - health.last_update_unix_ms) as f64 / DAY_MS;
        readings.push(one(Metric::DaysSinceUpdate, days.max(0.0).floor()));
    }
    if let Some(p) = &health.posture {
        let known = |state: i32| state != ProtectionState::Unspecified as i32;
        let off = |state: i32| flag(state == ProtectionState::Off as i32);
        for (metric, state) in [
            (Metric::AntivirusOff, p.antivirus),
            (Metric::FirewallOff, p.firewall),
            (Metric::EncryptionOff, p.encryption),
        ] {
            if known(state) {
                readings.push(one(metric, off(state)));
            }
        }
    }
    readings
}

/// A health sample as ticket evidence (D23): the readings a technician
/// looks at, as JSON.
pub fn health_evidence(health: &HealthSample) -> serde_json::Value {
    // The words `--json` uses for the same fields (issue 21).
    let state = deskpulse_proto::json::name_of::<ProtectionState>;
    serde_json::json!({
        "cpu_percent": health.cpu_percent,
        "memory_used_percent": health.memory_used_percent,
        "swap_used_percent": health.swap_used_percent,
        "load": [health.load_1m, health.load_5m, health.load_15m],
        "uptime_secs": health.uptime_secs,
        "reboot_pending": health.reboot_pending,
        "filesystems": health.filesystems.iter().map(|f| serde_json::json!({
            "mount_point": f.mount_point,
            "used_percent": f.used_percent,
            "available_bytes": f.available_bytes,
        })).collect::<Vec<_>>(),
        "services": health.services.iter().map(|s| serde_json::json!({
            "name": s.name, "state": s.state,
        })).collect::<Vec<_>>(),
        "disks": health.disks.iter().map(|d| serde_json::json!({
            "device": d.device, "passed": d.passed, "temperature_celsius": d.temperature_celsius,
        })).collect::<Vec<_>>(),
        "posture": health.posture.as_ref().map(|p| serde_json::json!({
            "antivirus": state(p.antivirus),
            "firewall": state(p.firewall),
            "encryption": state(p.encryption),
        })),
    })
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::{
        Filesystem, LocalUser, NetworkInfo, NetworkInterface, OsInfo, Package, SoftwareInfo,
        StorageInfo, UsersInfo,
    };

    use super::*;

    #[test]
    fn evidence_and_json_use_the_same_posture_words() {
        use deskpulse_proto::v1::SecurityPosture;
        let sample = HealthSample {
            posture: Some(SecurityPosture {
                antivirus: 0,
                firewall: ProtectionState::On as i32,
                encryption: ProtectionState::Off as i32,
                checked_at_unix_ms: 0,
            }),
            ..Default::default()
        };
        let evidence = health_evidence(&sample);
        let json = serde_json::to_value(&sample).expect("json");
        for key in ["antivirus", "firewall", "encryption"] {
            assert_eq!(evidence["posture"][key], json["posture"][key], "{key}");
        }
        assert_eq!(
            (
                &json["posture"]["antivirus"],
                &json["posture"]["firewall"],
                &json["posture"]["encryption"]
            ),
            (
                &serde_json::json!("unknown"),
                &serde_json::json!("on"),
                &serde_json::json!("off")
            )
        );
    }

    #[test]
    fn facts_are_normalised_for_search() {
        let inv = Inventory {
            os: Some(OsInfo {
                name: "Debian GNU/Linux".into(),
                version: "12".into(),
                ..Default::default()
            }),
            users: Some(UsersInfo {
                users: vec![LocalUser {
                    name: "Alice".into(),
                    ..Default::default()
                }],
                last_login_user: "bob".into(),
                ..Default::default()
            }),
            network: Some(NetworkInfo {
                interfaces: vec![NetworkInterface {
                    mac: "A0-B1-C2-D3-E4-F5".into(),
                    ipv4: vec!["10.1.2.3/24".into()],
                    ipv6: vec!["FD00::2/64".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            storage: Some(StorageInfo {
                filesystems: vec![Filesystem {
                    mount_point: "/".into(),
                    total_bytes: 200,
                    available_bytes: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            software: Some(SoftwareInfo {
                packages: vec![Package {
                    ecosystem: "dpkg".into(),
                    name: "openssl".into(),
                    version: "3.0.11-1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = inventory_facts(&inv);
        for want in [
            ("os", "debian gnu/linux 12"),
            ("user", "alice"),
            ("user", "bob"),
            ("mac", "a0:b1:c2:d3:e4:f5"),
            ("ip", "10.1.2.3"),
            ("ip", "fd00::2"),
        ] {
            assert!(
                f.facts.contains(&(want.0, want.1.to_string())),
                "{want:?} in {:?}",
                f.facts
            );
        }
        assert_eq!(f.free, vec![("/".to_string(), 5.0)]);
        // With the used bytes, df's definition: root's reserve (200 − 150 −
        // 10 here) is neither used nor free.
        let mut df = inv.clone();
        df.storage.as_mut().expect("storage").filesystems[0].used_bytes = Some(150);
        let f = inventory_facts(&df);
        assert!((f.free[0].1 - 6.25).abs() < 1e-4, "{:?}", f.free);
        assert_eq!(f.packages.len(), 1);
    }

    #[test]
    fn health_readings_cover_each_metric_and_leave_out_what_was_not_measured() {
        use deskpulse_proto::v1::{
            DiskHealth, FilesystemUsage, SecurityPosture, ServiceHealth, TemperatureReading,
        };
        let sample = HealthSample {
            cpu_percent: 12.0,
            memory_used_percent: 40.0,
            load_5m: 6.0,
            logical_cpus: 4,
            filesystems: vec![FilesystemUsage {
                mount_point: "/".into(),
                used_percent: 93.0,
                available_bytes: 512 << 20,
            }],
            temperatures: vec![TemperatureReading {
                sensor: "coretemp Package id 0".into(),
                celsius: 71.0,
                critical_celsius: 100.0,
            }],
            services: vec![
                ServiceHealth {
                    name: "cups.service".into(),
                    state: "failed".into(),
                },
                ServiceHealth {
                    name: "sshd.service".into(),
                    state: "running".into(),
                },
            ],
            disks: vec![DiskHealth {
                device: "/dev/sda".into(),
                passed: false,
                ..Default::default()
            }],
            last_update_unix_ms: 1_000,
            posture: Some(SecurityPosture {
                antivirus: ProtectionState::Off as i32,
                firewall: ProtectionState::Unspecified as i32,
                encryption: ProtectionState::On as i32,
                checked_at_unix_ms: 1,
            }),
            ..Default::default()
        };
        let readings = health_readings(&sample, 1_000 + 40 * 86_400_000);
        let get = |metric: Metric, subject: &str| {
            readings
                .iter()
                .find(|(m, s, _)| *m == metric && s == subject)
                .map(|(_, _, v)| *v)
        };
        assert_eq!(get(Metric::LoadPerCpu, ""), Some(1.5));
        assert_eq!(get(Metric::DiskUsedPercent, "/"), Some(93.0));
        assert_eq!(get(Metric::DiskFreeMib, "/"), Some(512.0));
        assert_eq!(
            get(Metric::TemperatureCelsius, "coretemp Package id 0"),
            Some(71.0)
        );
        assert_eq!(get(Metric::ServiceDown, "cups.service"), Some(1.0));
        assert_eq!(get(Metric::ServiceDown, "sshd.service"), Some(0.0));
        assert_eq!(get(Metric::SmartFailed, "/dev/sda"), Some(1.0));
        assert_eq!(get(Metric::DaysSinceUpdate, ""), Some(40.0));
        assert_eq!(get(Metric::AntivirusOff, ""), Some(1.0));
        assert_eq!(get(Metric::EncryptionOff, ""), Some(0.0));
        // Not measured: no reading rather than a reading of 0.
        assert_eq!(get(Metric::FirewallOff, ""), None);
        assert_eq!(get(Metric::BatteryHealthPercent, ""), None);
        assert_eq!(get(Metric::UptimeDays, ""), None);
    }
}
