//! Installed software. On Linux every package database present is read:
//! dpkg, rpm, apk, pacman, snap and flatpak, all as files under the system
//! root, with no program spawned.
//!
//! # Layout
//! - [`dpkg`], [`rpm`], [`alpine`], [`pacman`], [`snap`]: each Linux database.
//! - [`macos`]: app bundles, installer receipts, Homebrew (file-based, so
//!   tested here on fixture roots).
//! - [`windows`]: the registry's Uninstall keys, from `.reg` export text.
//! - this module: finding the databases and filling `software`.

pub mod alpine;
pub mod dpkg;
pub mod macos;
pub mod pacman;
pub mod rpm;
pub mod snap;
pub mod windows;

use std::path::Path;
use std::time::UNIX_EPOCH;

use deskpulse_proto::v1::{Inventory, Package, SoftwareInfo, UnavailableReason};

use super::{reason_for, unavailable};

/// Fills `software.packages` from every package database present.
pub fn collect(root: &Path, inv: &mut Inventory) {
    let mut packages = Vec::new();
    if cfg!(target_os = "linux") {
        dpkg_packages(root, inv, &mut packages);
        #[cfg(target_os = "linux")]
        rpm_packages(root, inv, &mut packages, rpm::system_sqlite::SYSTEM_LIBRARY);
        if let Ok(text) = std::fs::read_to_string(root.join("lib/apk/db/installed")) {
            packages.extend(alpine::parse_installed(&text));
        }
        pacman_packages(root, &mut packages);
        packages.extend(snap::installed(root));
        packages.extend(snap::flatpaks(root));
    } else if cfg!(target_os = "macos") {
        packages.extend(macos::collect(root));
    } else if cfg!(windows) {
        #[cfg(windows)]
        packages.extend(windows::collect());
    } else {
        unavailable(
            inv,
            "software",
            UnavailableReason::NotSupported,
            "this agent build does not read this OS's software yet",
        );
    }
    // Only the packages: the Windows adapter has already put the hotfixes
    // from WMI in this section.
    inv.software
        .get_or_insert_with(SoftwareInfo::default)
        .packages = packages;
}

fn dpkg_packages(root: &Path, inv: &mut Inventory, out: &mut Vec<Package>) {
    let status = root.join("var/lib/dpkg/status");
    let text = match std::fs::read_to_string(&status) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            unavailable(
                inv,
                "software.dpkg",
                reason_for(&error),
                format!("var/lib/dpkg/status: {error}"),
            );
            return;
        }
    };
    let info = root.join("var/lib/dpkg/info");
    for p in dpkg::parse_status(&text) {
        // dpkg writes NAME.list, or NAME:ARCH.list for multi-arch packages;
        // its mtime is when the package was last installed or upgraded.
        let installed = [
            format!("{}.list", p.name),
            format!("{}:{}.list", p.name, p.arch),
        ]
        .iter()
        .find_map(|f| std::fs::metadata(info.join(f)).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let mut package = dpkg::to_package(p);
        package.install_date_unix_s = installed;
        out.push(package);
    }
}

/// rpm's SQLite database, read with the SQLite library named `sqlite`.
#[cfg(target_os = "linux")]
fn rpm_packages(root: &Path, inv: &mut Inventory, out: &mut Vec<Package>, sqlite: &str) {
    for db in [
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    ] {
        let path = root.join(db);
        if path.exists() {
            match rpm::read_db_with(sqlite, &path) {
                Ok(packages) => out.extend(packages),
                Err(error @ rpm::system_sqlite::SqliteError::NoLibrary(_)) => unavailable(
                    inv,
                    "software.rpm",
                    UnavailableReason::NotSupported,
                    format!("{db}: {error}"),
                ),
                Err(error) => unavailable(
                    inv,
                    "software.rpm",
                    UnavailableReason::Failed,
                    format!("{db}: {error}"),
                ),
            }
            return;
        }
    }
    if root.join("var/lib/rpm/Packages").exists() {
        unavailable(
            inv,
            "software.rpm",
            UnavailableReason::NotSupported,
            "var/lib/rpm/Packages is a Berkeley DB rpmdb (rpm < 4.16), which this agent does not read",
        );
    }
}

fn pacman_packages(root: &Path, out: &mut Vec<Package>) {
    let Ok(dir) = std::fs::read_dir(root.join("var/lib/pacman/local")) else {
        return;
    };
    let mut found: Vec<Package> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("desc")).ok())
        .filter_map(|text| pacman::parse_desc(&text))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(found);
}

// These drive `collect` on Linux system roots, which it reads only in a
// Linux build; each database's parser is tested in its own module.
#[cfg(all(test, target_os = "linux"))]
mod tests;
