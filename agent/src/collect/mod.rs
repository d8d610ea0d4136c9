//! Inventory and health collection. Every file-based source is read under a
//! system root (D13), so tests point the real code at a fixture tree.
//!
//! # Layout
//! - this module: [`collect_inventory`] puts the sections together.
//! - [`health`]: [`HealthSampler`] takes health samples, with the slow
//!   probes cached on their own intervals (D24).
//! - [`os_release`], [`mounts`]: the OS name and the real filesystems.
//! - [`hardware`]: system, CPU, memory, disks, network, GPU, battery.
//! - [`host`]: OS details, users, security posture, services.
//! - [`packages`]: installed software of every ecosystem.
//! - [`windows`], [`macos`]: every non-software section on those OSes,
//!   from one snapshot each (WMI; `system_profiler` and plist files).
//! - [`spawn`]: running a program with a timeout and no shell, for the
//!   facts no file holds.
//!
//! Parsers are plain functions over text or bytes, tested with fixtures;
//! platform adapters only read raw data.

pub mod hardware;
pub mod health;
pub mod host;
pub mod macos;
pub mod mounts;
pub mod os_release;
pub mod packages;
pub mod spawn;
pub mod windows;

use std::path::Path;

use deskpulse_proto::space::DiskSpace;
use deskpulse_proto::v1::{Inventory, OsInfo, StorageInfo, Unavailable, UnavailableReason};

pub use health::{HealthSampler, HealthSettings};

pub use deskpulse_proto::render::{render_health, render_inventory};

/// Records a value the agent could not collect.
pub fn unavailable(
    inv: &mut Inventory,
    field: &str,
    reason: UnavailableReason,
    detail: impl Into<String>,
) {
    inv.unavailable.push(Unavailable {
        field: field.to_owned(),
        reason: reason as i32,
        detail: detail.into(),
    });
}

/// The reason matching an I/O error: permission, absence, or failure.
pub fn reason_for(error: &std::io::Error) -> UnavailableReason {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => UnavailableReason::NotPermitted,
        std::io::ErrorKind::NotFound => UnavailableReason::NotPresent,
        _ => UnavailableReason::Failed,
    }
}

/// Collects the full inventory of the machine whose files are under
/// `system_root`.
pub fn collect_inventory(system_root: &Path) -> Inventory {
    let mut inv = Inventory {
        schema_version: deskpulse_proto::INVENTORY_SCHEMA_VERSION,
        ..Inventory::default()
    };
    inv.os = Some(os_basics(system_root, &mut inv));
    let filesystems = filesystems(system_root, &mut inv);
    inv.storage = Some(StorageInfo {
        filesystems,
        ..StorageInfo::default()
    });
    if cfg!(target_os = "linux") {
        hardware::collect(system_root, &mut inv);
        host::collect(system_root, &mut inv, true);
    } else {
        platform_sections(system_root, &mut inv);
    }
    packages::collect(system_root, &mut inv);
    // Sorted as snapshot hashes expect, so deltas compare like with like;
    // unordered lists too, so an OS's listing order makes no delta.
    deskpulse_proto::delta::sort_unordered(&mut inv);
    deskpulse_proto::delta::canonicalize(&mut inv);
    inv
}

/// Hands the heap pages a collection freed back to the OS. Parsing a
/// package database leaves many small freed blocks that glibc keeps; the
/// idle service is measured by its resident pages (D36), so it returns them
/// after each inventory.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // malloc_trim(3) has no safe wrapper; it only releases free heap pages
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hardware, OS details, users, security and services where they do not
/// come from Linux's files.
fn platform_sections(root: &Path, inv: &mut Inventory) {
    #[cfg(windows)]
    {
        let _ = root;
        windows::collect(inv);
    }
    #[cfg(target_os = "macos")]
    macos::collect(root, inv);
    #[cfg(not(any(windows, target_os = "macos")))]
    {
        let _ = root;
        for section in ["hardware", "users", "security", "services"] {
            unavailable(
                inv,
                section,
                UnavailableReason::NotSupported,
                "this agent build does not collect it on this OS",
            );
        }
    }
}

/// Host name, kernel, boot time and uptime come from the running kernel;
/// name and version from os-release under the root.
fn os_basics(root: &Path, inv: &mut Inventory) -> OsInfo {
    let mut os = OsInfo {
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        kernel_version: sysinfo::System::kernel_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        boot_time_unix_s: i64::try_from(sysinfo::System::boot_time().unwrap_or(0)).unwrap_or(0),
        uptime_secs: sysinfo::System::uptime().unwrap_or(0),
        ..OsInfo::default()
    };
    if cfg!(target_os = "linux") {
        let text = std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")));
        match text {
            Ok(text) => {
                let fields = os_release::parse(&text);
                let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
                os.name = get("NAME");
                os.version = get("VERSION_ID");
            }
            Err(error) => unavailable(
                inv,
                "os.name",
                reason_for(&error),
                format!("etc/os-release: {error}"),
            ),
        }
    } else {
        os.name = sysinfo::System::name().unwrap_or_default();
        os.version = sysinfo::System::os_version().unwrap_or_default();
    }
    os
}

/// Real filesystems with their sizes.
fn filesystems(root: &Path, inv: &mut Inventory) -> Vec<deskpulse_proto::v1::Filesystem> {
    #[cfg(target_os = "linux")]
    {
        let read = |p: &str| std::fs::read_to_string(root.join(p));
        let (mounts, types) = match (read("proc/mounts"), read("proc/filesystems")) {
            (Ok(m), Ok(t)) => (m, t),
            (Err(error), _) | (_, Err(error)) => {
                unavailable(
                    inv,
                    "storage.filesystems",
                    reason_for(&error),
                    format!("proc: {error}"),
                );
                return Vec::new();
            }
        };
        let pseudo = mounts::pseudo_types(&types);
        let removable = removable_devices(root);
        mounts::real_mounts(&mounts, &pseudo)
            .into_iter()
            .map(|m| {
                let space = disk_space(&root.join(m.mount_point.trim_start_matches('/')));
                let removable = removable
                    .iter()
                    .any(|dev| m.device.starts_with(dev.as_str()));
                let fs = deskpulse_proto::v1::Filesystem {
                    mount_point: m.mount_point,
                    device: m.device,
                    fs_type: m.fs_type,
                    removable,
                    ..Default::default()
                };
                with_space(fs, space, (0, 0))
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (root, inv);
        sysinfo::Disks::new_with_refreshed_list()
            .map(|disks| {
                disks
                    .iter()
                    .map(|d| {
                        let fs = deskpulse_proto::v1::Filesystem {
                            mount_point: d.mount_point().display().to_string(),
                            device: d.name().to_string_lossy().into_owned(),
                            fs_type: d.file_system().to_string_lossy().into_owned(),
                            removable: d.is_removable(),
                            ..Default::default()
                        };
                        with_space(
                            fs,
                            disk_space(d.mount_point()),
                            (d.total_space(), d.available_space()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `/dev/...` prefixes of block devices marked removable in sysfs.
#[cfg(target_os = "linux")]
fn removable_devices(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join("sys/block")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("removable")).is_ok_and(|v| v.trim() == "1")
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect()
}

/// The space of the filesystem holding `path` (`df`'s definition,
/// [`deskpulse_proto::space`]): statvfs on Unix.
#[cfg(unix)]
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let s = rustix::fs::statvfs(path)?;
    Ok(DiskSpace {
        total: s.f_blocks.saturating_mul(s.f_frsize),
        free: s.f_bfree.saturating_mul(s.f_frsize),
        available: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

/// The space of the volume holding `path` (`df`'s definition,
/// [`deskpulse_proto::space`]): `GetDiskFreeSpaceExW`, whose "free to the
/// caller" honours quotas as statvfs's `f_bavail` honours the root reserve.
#[cfg(windows)]
#[allow(unsafe_code)] // GetDiskFreeSpaceExW has no safe wrapper in windows-sys
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::windows::ffi::OsStrExt;
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let (mut available, mut total, mut free) = (0u64, 0u64, 0u64);
    // SAFETY: `wide` is NUL-terminated and outlives the call; the three
    // out-pointers are valid u64s.
    let ok = unsafe {
        windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut available,
            &mut total,
            &mut free,
        )
    };
    if ok == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(DiskSpace {
        total,
        free,
        available,
    })
}

/// No space reading on an OS that is neither Unix nor Windows.
#[cfg(not(any(unix, windows)))]
pub fn disk_space(_path: &Path) -> std::io::Result<DiskSpace> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// An inventory filesystem with its space filled from [`disk_space`], or
/// from `fallback` (total, available) when the call fails.
fn with_space(
    mut fs: deskpulse_proto::v1::Filesystem,
    space: std::io::Result<DiskSpace>,
    fallback: (u64, u64),
) -> deskpulse_proto::v1::Filesystem {
    match space {
        Ok(space) => {
            fs.total_bytes = space.total;
            fs.available_bytes = space.available;
            fs.used_bytes = Some(space.used());
        }
        Err(_) => (fs.total_bytes, fs.available_bytes) = fallback,
    }
    fs
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn meminfo(text: &str) -> (u64, u64) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

// They collect a Linux system root (os-release, /proc, dpkg) and compare
// with Linux's own tools; on Windows and macOS those sections come from WMI
// and system_profiler, tested in `windows` and `macos`.
#[cfg(all(test, target_os = "linux"))]
mod tests;
