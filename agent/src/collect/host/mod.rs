//! The host around the hardware: OS details, local users and sessions,
//! security posture and services. Linux reads files under the system root
//! only.
//!
//! # Layout
//! - [`users`]: accounts, admin rights, sessions, last login.
//! - [`security`]: firewall, encryption, antivirus, reboot.
//! - [`updates`]: the count of pending OS updates, kept between counts.
//! - [`services`]: systemd units from their files.
//! - this module: OS details and filling the sections.

pub mod security;
pub mod services;
pub mod updates;
pub mod users;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use deskpulse_proto::v1::{
    Inventory, SecurityInfo, ServicesInfo, UnavailableReason, UsersInfo, VolumeEncryption,
};

use super::{reason_for, unavailable};

pub(crate) fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

pub(crate) fn mtime_unix_s(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let secs = modified.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Fills the OS details, users, security and services on Linux. `slow` runs the
/// slow probes too (pending updates); the caller caches them (D24).
pub fn collect(root: &Path, inv: &mut Inventory, slow: bool) {
    os_details(root, inv);
    users_section(root, inv);
    security_section(root, inv, slow);
    let running = root.join("run/systemd/system").exists();
    if !running {
        unavailable(
            inv,
            "services.state",
            UnavailableReason::NotPresent,
            "systemd is not running, so run states are not known",
        );
    }
    inv.services = Some(ServicesInfo {
        services: services::services(root, running),
    });
}

/// The zone name inside a zoneinfo path, e.g. ".../zoneinfo/Europe/Berlin".
pub fn zone_from_link(target: &str) -> Option<String> {
    target
        .split_once("zoneinfo/")
        .map(|(_, zone)| zone.to_owned())
        .filter(|z| !z.is_empty())
}

/// The AD or Kerberos domain: sssd's `[domain/NAME]`, else krb5's
/// `default_realm`.
pub fn domain(sssd: &str, krb5: &str) -> String {
    if let Some(name) = sssd.lines().find_map(|l| {
        l.trim()
            .strip_prefix("[domain/")
            .and_then(|r| r.strip_suffix(']'))
    }) {
        return name.to_owned();
    }
    krb5.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "default_realm").then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn os_details(root: &Path, inv: &mut Inventory) {
    let release = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .map(|t| super::os_release::parse(&t))
        .unwrap_or_default();
    let timezone = std::fs::read_to_string(root.join("etc/timezone"))
        .map(|t| t.trim().to_owned())
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            let link = std::fs::read_link(root.join("etc/localtime")).ok()?;
            zone_from_link(&link.to_string_lossy())
        });
    // The installer's log dir is written once, at installation; lost+found
    // is made with the root filesystem. Neither is perfect; both are cheap.
    let installed = ["var/log/installer", "lost+found"]
        .iter()
        .filter_map(|p| mtime_unix_s(&root.join(p)))
        // Images built without a clock stamp 1970; that dates nothing.
        .find(|t| *t > 631_152_000);
    if installed.is_none() {
        unavailable(
            inv,
            "os.install_date_unix_s",
            UnavailableReason::NotPresent,
            "no installer log or lost+found to date the installation",
        );
    }
    if timezone.is_none() {
        unavailable(
            inv,
            "os.timezone",
            UnavailableReason::NotPresent,
            "neither etc/timezone nor an etc/localtime link names a zone",
        );
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let os = inv.os.get_or_insert_with(Default::default);
    os.build = release
        .get("VERSION")
        .or_else(|| release.get("BUILD_ID"))
        .cloned()
        .unwrap_or_default();
    os.install_date_unix_s = installed.unwrap_or(0);
    os.timezone = timezone.unwrap_or_default();
    os.domain = domain(&read("etc/sssd/sssd.conf"), &read("etc/krb5.conf"));
}

fn users_section(root: &Path, inv: &mut Inventory) {
    let passwd = match std::fs::read_to_string(root.join("etc/passwd")) {
        Ok(text) => text,
        Err(error) => {
            unavailable(
                inv,
                "users",
                reason_for(&error),
                format!("etc/passwd: {error}"),
            );
            return;
        }
    };
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let range = users::uid_range(&read("etc/login.defs"));
    let mut accounts = users::accounts(&passwd, &read("etc/group"), range);
    match std::fs::read_to_string(root.join("etc/shadow")) {
        Ok(shadow) => {
            let off = users::disabled(&shadow, now_unix_s() / 86_400);
            for user in &mut accounts {
                user.disabled = off.contains(&user.name);
            }
        }
        Err(error) => unavailable(
            inv,
            "users.disabled",
            reason_for(&error),
            format!("etc/shadow: {error}"),
        ),
    }
    let sessions = ["run/utmp", "var/run/utmp"]
        .iter()
        .find_map(|p| std::fs::read(root.join(p)).ok())
        .map(|data| users::utmp_sessions(&data))
        .unwrap_or_default();
    // wtmp grows for years; the last login is in its last records.
    let last = read_tail(&root.join("var/log/wtmp"), 256 * users::UTMP_RECORD)
        .and_then(|data| users::last_login(&data));
    inv.users = Some(UsersInfo {
        users: accounts,
        sessions,
        last_login_user: last.as_ref().map(|(u, _)| u.clone()).unwrap_or_default(),
        last_login_unix_s: last.map_or(0, |(_, at)| at),
    });
}

/// The last `max` bytes of a file, aligned to whole records from the end.
fn read_tail(path: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    let whole = len - len % users::UTMP_RECORD;
    let take = whole.min(max);
    file.seek(SeekFrom::Start(u64::try_from(whole - take).ok()?))
        .ok()?;
    let mut data = vec![0; take];
    file.read_exact(&mut data).ok()?;
    Some(data)
}

fn security_section(root: &Path, inv: &mut Inventory, slow: bool) {
    let sec = security_info(root, inv, slow);
    inv.security = Some(sec);
}

/// The security section under `root`; what it could not read goes into
/// `inv.unavailable`. The health sampler's posture probe calls it too, so
/// inventory and health never disagree on what is on.
pub fn security_info(root: &Path, inv: &mut Inventory, slow: bool) -> SecurityInfo {
    let mut sec = SecurityInfo::default();
    match security::firewall(root) {
        Some((state, product)) => {
            sec.firewall = state as i32;
            sec.firewall_product = product;
        }
        None => unavailable(
            inv,
            "security.firewall",
            UnavailableReason::NotPresent,
            "no ufw, firewalld or nftables configuration found",
        ),
    }
    let mounts = std::fs::read_to_string(root.join("proc/mounts")).unwrap_or_default();
    let types = std::fs::read_to_string(root.join("proc/filesystems")).unwrap_or_default();
    for m in super::mounts::real_mounts(&mounts, &super::mounts::pseudo_types(&types)) {
        let encrypted =
            security::dm_name(root, &m.device).is_some_and(|dm| security::is_luks(root, &dm, 0));
        sec.encryption.push(VolumeEncryption {
            volume: m.mount_point,
            method: if encrypted {
                "luks".into()
            } else {
                String::new()
            },
            encrypted,
        });
    }
    sec.antivirus.extend(security::clamav(root, now_unix_s()));
    sec.reboot_pending = security::reboot_pending(root);
    if slow {
        match updates::pending(root) {
            Ok(count) => sec.pending_updates = Some(count),
            Err((reason, detail)) => unavailable(inv, "security.pending_updates", reason, detail),
        }
    }
    sec
}

// The fixture roots hold symlinks (the time zone, enabled and running
// units) as a Linux system has them, which only Unix can make without
// privilege.
#[cfg(all(test, unix))]
mod tests;
