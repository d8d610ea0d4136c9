//! Security posture on Linux, from files: the host firewall manager that is
//! enabled (ufw, firewalld, nftables), LUKS encryption under each real
//! filesystem (following device-mapper slaves, so LVM on LUKS counts),
//! ClamAV as the antivirus when installed, and a pending reboot (the count
//! of pending updates is `updates`').

use std::path::Path;

use deskpulse_proto::v1::{Antivirus, ProtectionState};

/// The firewall state and the product that decides it. `None` when no known
/// firewall manager is installed and nothing else can be told.
pub fn firewall(root: &Path) -> Option<(ProtectionState, String)> {
    if let Ok(conf) = std::fs::read_to_string(root.join("etc/ufw/ufw.conf")) {
        let on = conf.lines().any(|l| {
            l.trim()
                .trim_matches('"')
                .eq_ignore_ascii_case("ENABLED=yes")
        });
        return Some((
            if on {
                ProtectionState::On
            } else {
                ProtectionState::Off
            },
            "ufw".into(),
        ));
    }
    let wants = |target: &str, unit: &str| {
        std::fs::symlink_metadata(root.join("etc/systemd/system").join(target).join(unit)).is_ok()
    };
    if root
        .join("usr/lib/systemd/system/firewalld.service")
        .exists()
        || root.join("lib/systemd/system/firewalld.service").exists()
    {
        let on = wants("multi-user.target.wants", "firewalld.service");
        return Some((
            if on {
                ProtectionState::On
            } else {
                ProtectionState::Off
            },
            "firewalld".into(),
        ));
    }
    if root.join("etc/nftables.conf").exists() {
        let on = wants("sysinit.target.wants", "nftables.service")
            || wants("multi-user.target.wants", "nftables.service");
        return Some((
            if on {
                ProtectionState::On
            } else {
                ProtectionState::Off
            },
            "nftables".into(),
        ));
    }
    None
}

/// True when the block device `dm` (e.g. "dm-0") is a LUKS mapping or sits
/// on one.
pub fn is_luks(root: &Path, dm: &str, depth: u8) -> bool {
    if depth > 8 {
        return false;
    }
    let base = root.join("sys/block").join(dm);
    let uuid = std::fs::read_to_string(base.join("dm/uuid")).unwrap_or_default();
    if uuid.starts_with("CRYPT-LUKS") {
        return true;
    }
    std::fs::read_dir(base.join("slaves"))
        .map(|d| {
            d.flatten()
                .any(|s| is_luks(root, &s.file_name().to_string_lossy(), depth + 1))
        })
        .unwrap_or(false)
}

/// The `dm-N` name behind a mount's device, for /dev/dm-N and
/// /dev/mapper/NAME.
pub fn dm_name(root: &Path, device: &str) -> Option<String> {
    if let Some(dm) = device
        .strip_prefix("/dev/")
        .filter(|d| d.starts_with("dm-"))
    {
        return Some(dm.to_owned());
    }
    let mapped = device.strip_prefix("/dev/mapper/")?;
    std::fs::read_dir(root.join("sys/block"))
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dm_name = std::fs::read_to_string(e.path().join("dm/name")).ok()?;
            (dm_name.trim() == mapped).then_some(name)
        })
}

/// ClamAV when installed: on when its daemon is enabled, up to date when
/// the signature database changed within a week.
pub fn clamav(root: &Path, now_unix_s: i64) -> Option<Antivirus> {
    let installed = root.join("usr/sbin/clamd").exists() || root.join("usr/bin/clamscan").exists();
    if !installed {
        return None;
    }
    let enabled = std::fs::symlink_metadata(
        root.join("etc/systemd/system/multi-user.target.wants/clamav-daemon.service"),
    )
    .is_ok();
    let fresh = ["var/lib/clamav/daily.cld", "var/lib/clamav/daily.cvd"]
        .iter()
        .any(|f| {
            std::fs::metadata(root.join(f))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|d| now_unix_s - i64::try_from(d.as_secs()).unwrap_or(0) < 7 * 86_400)
        });
    Some(Antivirus {
        product: "ClamAV".into(),
        state: if enabled {
            ProtectionState::On
        } else {
            ProtectionState::Off
        } as i32,
        up_to_date: fresh,
    })
}

/// True when a package asked for a reboot (Debian's and Ubuntu's
/// `reboot-required` flag file).
pub fn reboot_pending(root: &Path) -> bool {
    root.join("run/reboot-required").exists() || root.join("var/run/reboot-required").exists()
}
