//! The text form of an inventory and a health sample, shared by
//! `deskpulse-agent inventory`/`health` and `deskpulse inventory`: one
//! section per heading, one line per item, and every unavailable value with
//! its reason at the end.

use std::fmt::Write;

use crate::v1::{
    DiskKind, HealthSample, Inventory, InventorySection, ProtectionState, UnavailableReason,
};

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first second of the year 10000: RFC 3339 ends before it.
const YEAR_10000_S: i64 = 253_402_300_800;

fn date(unix_s: i64) -> String {
    if unix_s <= 0 {
        return "unknown".into();
    }
    // An agent's clock may claim any time (issue 20); past 9999 humantime's
    // formatter fails, which `to_string` would turn into a panic.
    if unix_s >= YEAR_10000_S {
        return format!("after 9999 ({unix_s} s since 1970)");
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_s.unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// The OS as one line, as each OS names itself: "Debian GNU/Linux 12
/// (bookworm)", "Ubuntu 22.04.4 LTS (Jammy Jellyfish)", "Microsoft Windows
/// 11 Pro 23H2 (22631.4460)", "macOS 14.4 (23E224)". On Linux the build is
/// os-release's `VERSION`, which already starts with the version and holds
/// the codename in its own parentheses: it stands in for the version
/// instead of being wrapped in parentheses again. The fleet filter `hosts
/// --os` searches this line.
pub fn os_line(name: &str, version: &str, build: &str) -> String {
    let (name, version, build) = (name.trim(), version.trim(), build.trim());
    // "12 (bookworm)" and "22.04.4 LTS" carry the version "12" and "22.04";
    // "10.0" does not carry "1".
    let carries_version = build.strip_prefix(version).is_some_and(|rest| {
        !version.is_empty() && !rest.starts_with(|c: char| c.is_ascii_alphanumeric())
    });
    let shown = if build.is_empty() || build == version {
        version.to_owned()
    } else if carries_version {
        build.to_owned()
    } else if version.is_empty() {
        format!("({build})")
    } else {
        format!("{version} ({build})")
    };
    [name, shown.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn state(value: i32) -> &'static str {
    match ProtectionState::try_from(value) {
        Ok(ProtectionState::On) => "on",
        Ok(ProtectionState::Off) => "off",
        _ => "unknown",
    }
}

fn reason(value: i32) -> &'static str {
    match UnavailableReason::try_from(value) {
        Ok(UnavailableReason::NotPermitted) => "not permitted",
        Ok(UnavailableReason::NotPresent) => "not present",
        Ok(UnavailableReason::NotSupported) => "not supported",
        Ok(UnavailableReason::Failed) => "failed",
        Ok(UnavailableReason::Truncated) => "truncated",
        _ => "unknown",
    }
}

/// The whole inventory as text.
pub fn render_inventory(inv: &Inventory) -> String {
    render_sections(inv, &crate::sections::ALL)
}

/// The chosen sections of an inventory as text, with the unavailable
/// values that concern them.
pub fn render_sections(inv: &Inventory, sections: &[InventorySection]) -> String {
    let wants = |s: InventorySection| sections.contains(&s);
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    if wants(InventorySection::System)
        && let Some(s) = &inv.system
    {
        line("[system]".into());
        line(format!(
            "  {} {} (chassis {})",
            or_dash(&s.vendor),
            or_dash(&s.model),
            or_dash(&s.chassis_type)
        ));
        line(format!(
            "  serial {}  uuid {}",
            or_dash(&s.serial),
            or_dash(&s.hardware_uuid)
        ));
        line(format!(
            "  bios {} {} {}",
            or_dash(&s.bios_vendor),
            or_dash(&s.bios_version),
            or_dash(&s.bios_date)
        ));
        line(format!(
            "  baseboard {} {} serial {}",
            or_dash(&s.baseboard_vendor),
            or_dash(&s.baseboard_model),
            or_dash(&s.baseboard_serial)
        ));
    }
    if wants(InventorySection::Os)
        && let Some(os) = &inv.os
    {
        line("[os]".into());
        line(format!(
            "  {} kernel {} {}",
            or_dash(&os_line(&os.name, &os.version, &os.build)),
            or_dash(&os.kernel_version),
            os.arch
        ));
        line(format!(
            "  hostname {}  domain {}  timezone {}",
            or_dash(&os.hostname),
            or_dash(&os.domain),
            or_dash(&os.timezone)
        ));
        line(format!(
            "  installed {}  booted {}  up {}s",
            date(os.install_date_unix_s),
            date(os.boot_time_unix_s),
            os.uptime_secs
        ));
    }
    if wants(InventorySection::Cpu)
        && let Some(cpu) = &inv.cpu
    {
        line("[cpu]".into());
        line(format!(
            "  {} ({}) {} physical / {} logical cores, {} MHz, {}",
            or_dash(&cpu.model),
            or_dash(&cpu.vendor),
            cpu.physical_cores,
            cpu.logical_cores,
            cpu.frequency_mhz,
            or_dash(&cpu.arch)
        ));
    }
    if wants(InventorySection::Memory)
        && let Some(mem) = &inv.memory
    {
        line("[memory]".into());
        line(format!(
            "  {} total, {} available, {} swap",
            size(mem.total_bytes),
            size(mem.available_bytes),
            size(mem.swap_total_bytes)
        ));
        for m in &mem.modules {
            line(format!(
                "  {} {} {} {} MT/s {} {} serial {}",
                or_dash(&m.slot),
                size(m.size_bytes),
                or_dash(&m.memory_type),
                m.speed_mts,
                or_dash(&m.manufacturer),
                or_dash(&m.part_number),
                or_dash(&m.serial)
            ));
        }
    }
    if wants(InventorySection::Storage)
        && let Some(storage) = &inv.storage
    {
        line("[storage]".into());
        for d in &storage.disks {
            let kind = match DiskKind::try_from(d.kind) {
                Ok(DiskKind::Hdd) => "HDD",
                Ok(DiskKind::Ssd) => "SSD",
                Ok(DiskKind::Nvme) => "NVMe",
                _ => "disk",
            };
            line(format!(
                "  {} {kind} {} {} serial {}{}",
                d.name,
                size(d.size_bytes),
                or_dash(&d.model),
                or_dash(&d.serial),
                if d.removable { " removable" } else { "" }
            ));
        }
        for fs in &storage.filesystems {
            line(format!(
                "  {} {} on {} {} free of {}{}",
                fs.mount_point,
                fs.fs_type,
                fs.device,
                size(fs.available_bytes),
                size(fs.total_bytes),
                fs.used_bytes
                    .map(|used| format!(
                        ", {:.0}% used",
                        f64::from(crate::space::used_percent(used, fs.available_bytes)).ceil()
                    ))
                    .unwrap_or_default()
            ));
        }
    }
    if wants(InventorySection::Network)
        && let Some(net) = &inv.network
    {
        line("[network]".into());
        for i in &net.interfaces {
            let addrs: Vec<&str> = i.ipv4.iter().chain(&i.ipv6).map(String::as_str).collect();
            line(format!(
                "  {} {} {}{}{} {}",
                i.name,
                or_dash(&i.mac),
                if i.up { "up" } else { "down" },
                if i.speed_mbps > 0 {
                    format!(" {} Mbit/s", i.speed_mbps)
                } else {
                    String::new()
                },
                if i.wireless { " wireless" } else { "" },
                addrs.join(" ")
            ));
        }
        line(format!(
            "  gateways {}  dns {}",
            net.default_gateways.join(" "),
            net.dns_servers.join(" ")
        ));
    }
    if wants(InventorySection::Gpu)
        && let Some(gpu) = &inv.gpu
    {
        line("[gpu]".into());
        for g in &gpu.gpus {
            line(format!(
                "  {} {} (driver {})",
                or_dash(&g.vendor),
                or_dash(&g.model),
                or_dash(&g.driver)
            ));
        }
    }
    if wants(InventorySection::Battery)
        && let Some(battery) = &inv.battery
    {
        line("[battery]".into());
        for b in &battery.batteries {
            line(format!(
                "  {} {} {} health {:.0}% ({} of {} mWh) {} cycles",
                b.name,
                or_dash(&b.manufacturer),
                or_dash(&b.model),
                b.health_percent,
                b.full_charge_capacity_mwh,
                b.design_capacity_mwh,
                b.cycle_count
            ));
        }
    }
    if wants(InventorySection::Users)
        && let Some(users) = &inv.users
    {
        line("[users]".into());
        for u in &users.users {
            line(format!(
                "  {} ({}) id {}{}{}",
                u.name,
                or_dash(&u.full_name),
                u.id,
                if u.admin { " admin" } else { "" },
                if u.disabled { " disabled" } else { "" }
            ));
        }
        for s in &users.sessions {
            line(format!(
                "  logged in: {} on {} {} since {}",
                s.user,
                s.terminal,
                s.host,
                date(s.started_unix_s)
            ));
        }
        line(format!(
            "  last login: {} at {}",
            or_dash(&users.last_login_user),
            date(users.last_login_unix_s)
        ));
    }
    if wants(InventorySection::Security)
        && let Some(sec) = &inv.security
    {
        line("[security]".into());
        line(format!(
            "  firewall {} ({})",
            state(sec.firewall),
            or_dash(&sec.firewall_product)
        ));
        for e in &sec.encryption {
            line(format!(
                "  {} {}",
                e.volume,
                if e.encrypted {
                    e.method.as_str()
                } else {
                    "not encrypted"
                }
            ));
        }
        for a in &sec.antivirus {
            line(format!(
                "  antivirus {} {}{}",
                a.product,
                state(a.state),
                if a.up_to_date { "" } else { " out of date" }
            ));
        }
        // An update count that was not read is not 0: it says why.
        let updates = match sec.pending_updates {
            Some(count) => count.to_string(),
            None => inv
                .unavailable
                .iter()
                .find(|u| u.field == "security.pending_updates")
                .map_or_else(|| "unknown".to_owned(), |u| reason(u.reason).to_owned()),
        };
        line(format!(
            "  reboot pending: {}  pending updates: {updates}",
            sec.reboot_pending
        ));
    }
    if wants(InventorySection::Services)
        && let Some(services) = &inv.services
    {
        line(format!("[services] {}", services.services.len()));
        for s in &services.services {
            line(format!(
                "  {} {} {}",
                s.name,
                or_dash(&s.state),
                or_dash(&s.start_mode)
            ));
        }
    }
    if wants(InventorySection::Software)
        && let Some(software) = &inv.software
    {
        line(format!("[software] {} packages", software.packages.len()));
        for p in &software.packages {
            line(format!(
                "  {} {} {} {} {}{}",
                p.ecosystem,
                p.name,
                p.version,
                or_dash(&p.arch),
                or_dash(&p.publisher),
                if p.state.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.state)
                }
            ));
        }
        for h in &software.hotfixes {
            line(format!(
                "  hotfix {} {} {}",
                h.id,
                h.description,
                date(h.installed_unix_s)
            ));
        }
    }
    let relevant: Vec<_> = inv
        .unavailable
        .iter()
        .filter(|u| {
            let head = u.field.split('.').next().unwrap_or("");
            crate::sections::parse(head).is_ok_and(|s| s.iter().any(|x| sections.contains(x)))
        })
        .collect();
    if !relevant.is_empty() {
        line("[unavailable]".into());
        for u in relevant {
            line(format!(
                "  {}: {} ({})",
                u.field,
                reason(u.reason),
                u.detail
            ));
        }
    }
    out
}

/// The health sample as text: the cheap readings, then the cached slow
/// probes (services, disks, last update, posture), then what is missing.
pub fn render_health(h: &HealthSample) -> String {
    let mut out = format!(
        "cpu {:.1}%  memory {:.1}%  swap {:.1}%  up {}s\n",
        h.cpu_percent, h.memory_used_percent, h.swap_used_percent, h.uptime_secs
    );
    let _ = writeln!(
        out,
        "load {:.2} {:.2} {:.2} on {} logical CPUs",
        h.load_1m, h.load_5m, h.load_15m, h.logical_cpus
    );
    for fs in &h.filesystems {
        let _ = writeln!(
            out,
            "{} {:.1}% used, {} free",
            fs.mount_point,
            fs.used_percent,
            size(fs.available_bytes)
        );
    }
    for t in &h.temperatures {
        let critical = if t.critical_celsius > 0.0 {
            format!(" (critical {:.0} °C)", t.critical_celsius)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "temperature {} {:.1} °C{critical}",
            t.sensor, t.celsius
        );
    }
    for b in &h.batteries {
        let _ = writeln!(
            out,
            "battery {} health {:.0}%, charge {:.0}%, {} cycles",
            b.name, b.health_percent, b.charge_percent, b.cycle_count
        );
    }
    let _ = writeln!(out, "reboot pending: {}", h.reboot_pending);
    for s in &h.services {
        let _ = writeln!(out, "service {} {}", s.name, s.state);
    }
    for d in &h.disks {
        let wear = if d.percentage_used > 0 {
            format!(", {}% worn", d.percentage_used)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "disk {} {} ({}) SMART {}, {:.0} °C, {} reallocated/media errors{wear}",
            d.device,
            or_dash(&d.model),
            or_dash(&d.serial),
            if d.passed { "passed" } else { "FAILED" },
            d.temperature_celsius,
            d.reallocated_sectors
        );
    }
    if h.last_update_unix_ms > 0 {
        let _ = writeln!(out, "last OS update {}", date(h.last_update_unix_ms / 1000));
    }
    if let Some(p) = &h.posture {
        let _ = writeln!(
            out,
            "posture: antivirus {}, firewall {}, encryption {}",
            state(p.antivirus),
            state(p.firewall),
            state(p.encryption)
        );
    }
    if !h.unavailable.is_empty() {
        out.push_str("[unavailable]\n");
        for u in &h.unavailable {
            let _ = writeln!(out, "  {}: {} ({})", u.field, reason(u.reason), u.detail);
        }
    }
    out
}

#[cfg(test)]
mod date_tests {
    //! Dates an agent's clock made up are shown, never a panic.

    #[test]
    fn dates_past_9999_and_before_1970_are_words_not_panics() {
        assert_eq!(super::date(0), "unknown");
        assert_eq!(super::date(-5), "unknown");
        assert_eq!(super::date(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            super::date(i64::MAX),
            format!("after 9999 ({} s since 1970)", i64::MAX)
        );
        assert!(super::date(super::YEAR_10000_S - 1).starts_with("9999-12-31"));
    }
}

#[cfg(test)]
mod os_line_tests {
    //! The OS line names each OS once, with no doubled parentheses.

    use super::os_line;

    #[test]
    fn every_os_form_reads_as_the_os_names_itself() {
        for (name, version, build, line) in [
            // Linux with a codename: VERSION is "12 (bookworm)".
            (
                "Debian GNU/Linux",
                "12",
                "12 (bookworm)",
                "Debian GNU/Linux 12 (bookworm)",
            ),
            (
                "Ubuntu",
                "22.04",
                "22.04.4 LTS (Jammy Jellyfish)",
                "Ubuntu 22.04.4 LTS (Jammy Jellyfish)",
            ),
            // Linux without a codename, or without a VERSION.
            ("Alpine Linux", "3.19.1", "", "Alpine Linux 3.19.1"),
            ("Fedora Linux", "40", "40", "Fedora Linux 40"),
            ("Arch Linux", "", "rolling", "Arch Linux (rolling)"),
            // Windows and macOS: the build is a build number.
            (
                "Microsoft Windows 11 Pro",
                "23H2",
                "22631.4460",
                "Microsoft Windows 11 Pro 23H2 (22631.4460)",
            ),
            (
                "Microsoft Windows 10 Pro",
                "10.0.19045",
                "19045.4529",
                "Microsoft Windows 10 Pro 10.0.19045 (19045.4529)",
            ),
            ("macOS", "14.4", "23E224", "macOS 14.4 (23E224)"),
            // A build that only starts with the version's digits is not it.
            ("Example OS", "1", "10 (ten)", "Example OS 1 (10 (ten))"),
            ("", "", "", ""),
        ] {
            assert_eq!(
                os_line(name, version, build),
                line,
                "{name} {version} {build}"
            );
        }
    }
}

#[cfg(test)]
mod unread_tests {
    //! A value the agent did not read is absent, in text and in JSON,
    //! never a 0 (issue 21).

    use crate::v1::{
        Filesystem, Inventory, SecurityInfo, StorageInfo, Unavailable, UnavailableReason,
    };

    fn inventory(pending: Option<u32>) -> Inventory {
        Inventory {
            security: Some(SecurityInfo {
                pending_updates: pending,
                ..SecurityInfo::default()
            }),
            storage: Some(StorageInfo {
                filesystems: vec![Filesystem {
                    mount_point: "/".into(),
                    total_bytes: 100 << 30,
                    available_bytes: 65 << 30,
                    used_bytes: pending.map(|_| 30 << 30),
                    ..Filesystem::default()
                }],
                ..StorageInfo::default()
            }),
            unavailable: match pending {
                Some(_) => vec![],
                None => vec![Unavailable {
                    field: "security.pending_updates".into(),
                    reason: UnavailableReason::NotSupported as i32,
                    detail: "not counted here".into(),
                }],
            },
            ..Inventory::default()
        }
    }

    #[test]
    fn an_unread_update_count_is_not_a_zero() {
        let text = super::render_inventory(&inventory(None));
        assert!(text.contains("pending updates: not supported"), "{text}");
        assert!(!text.contains("pending updates: 0"), "{text}");
        let json = serde_json::to_value(inventory(None)).expect("json");
        assert!(json["security"].get("pending_updates").is_none(), "{json}");
        assert!(
            json["storage"]["filesystems"][0]
                .get("used_bytes")
                .is_none(),
            "{json}"
        );

        let text = super::render_inventory(&inventory(Some(0)));
        assert!(text.contains("pending updates: 0"), "{text}");
        let json = serde_json::to_value(inventory(Some(0))).expect("json");
        assert_eq!(json["security"]["pending_updates"], 0, "{json}");
    }

    #[test]
    fn filesystems_show_dfs_percent() {
        let text = super::render_inventory(&inventory(Some(1)));
        // 30 used, 65 available: 31.6 %, rounded up as df does.
        assert!(
            text.contains("65.0 GiB free of 100.0 GiB, 32% used"),
            "{text}"
        );
    }
}
