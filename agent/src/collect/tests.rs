//! Collection under a system root: the checked-in Debian-like tree read by
//! us and by the real `dpkg-query` and `findmnt`, the os-release fallback,
//! and unavailable values named with their reason.

use std::path::PathBuf;

use super::*;
use deskpulse_proto::render::render_inventory;

fn fixture_root() -> PathBuf {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let write = |path: &str, text: &str| {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    };
    write(
        "etc/os-release",
        "NAME=\"Fixture Linux\"\nVERSION_ID=\"7.1\"\n",
    );
    write("proc/filesystems", "nodev\tproc\nnodev\ttmpfs\n\text4\n");
    write(
        "proc/mounts",
        "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n",
    );
    write(
        "proc/stat",
        "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 1 1 1\n",
    );
    write(
        "proc/meminfo",
        "MemTotal:       8000 kB\nMemFree:        1000 kB\nMemAvailable:   2000 kB\n",
    );
    dir
}

#[test]
fn the_os_and_filesystems_come_from_the_system_root() {
    let root = fixture_root();
    let inv = collect_inventory(&root);
    let os = inv.os.clone().expect("os");
    assert_eq!(
        (os.name.as_str(), os.version.as_str()),
        ("Fixture Linux", "7.1")
    );
    let fs = &inv.storage.as_ref().expect("storage").filesystems;
    assert_eq!(fs.len(), 1, "proc and tmpfs are pseudo: {fs:?}");
    assert_eq!(fs[0].mount_point, "/");
    assert_eq!(fs[0].device, "/dev/sda1");
    assert_eq!(
        inv.schema_version,
        deskpulse_proto::INVENTORY_SCHEMA_VERSION
    );
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_missing_os_release_is_unavailable_not_empty() {
    let root = fixture_root();
    std::fs::remove_file(root.join("etc/os-release")).expect("rm");
    let inv = collect_inventory(&root);
    let missing = inv
        .unavailable
        .iter()
        .find(|u| u.field == "os.name")
        .expect("os.name listed");
    assert_eq!(missing.reason, UnavailableReason::NotPresent as i32);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn health_cpu_covers_the_interval_between_samples() {
    let root = fixture_root();
    let mut sampler = HealthSampler::new(&root);
    let first = sampler.sample();
    // Since boot: busy 200 (user+system) + 0 of 1000 ticks... idle 700 + iowait 100.
    assert!(
        (first.cpu_percent - 20.0).abs() < 0.01,
        "{}",
        first.cpu_percent
    );
    assert!((first.memory_used_percent - 75.0).abs() < 0.01);
    std::fs::write(root.join("proc/stat"), "cpu  190 0 110 800 100 0 0 0 0 0\n").expect("write");
    let second = sampler.sample();
    // Between samples: busy +100, total +200.
    assert!(
        (second.cpu_percent - 50.0).abs() < 0.01,
        "{}",
        second.cpu_percent
    );
    assert_eq!(second.filesystems.len(), 1);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn the_text_rendering_names_unavailable_values_with_their_reason() {
    let root = fixture_root();
    std::fs::remove_file(root.join("etc/os-release")).expect("rm");
    let text = render_inventory(&collect_inventory(&root));
    assert!(text.contains("[storage]"));
    assert!(text.contains("os.name: not present"), "{text}");
    let _ = std::fs::remove_dir_all(root);
}

/// The checked-in tree of a Debian-like machine (D13): os-release in both
/// places, a dpkg status database, and `/proc/{filesystems,mounts}`. dpkg
/// and findmnt read the same files in the tests below (D32).
fn checked_in_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/root")
}

/// The output of a Debian tool run on the fixture, or `None` when the tool
/// is missing outside CI.
fn tool_output(program: &str, args: &[&std::ffi::OsStr]) -> Option<String> {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        other => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{program} is required in CI: {other:?}"
            );
            eprintln!("SKIPPED: {program} did not run: {other:?}");
            None
        }
    }
}

fn dpkg_rows(inv: &Inventory) -> Vec<(String, String, String)> {
    inv.software
        .as_ref()
        .expect("software")
        .packages
        .iter()
        .filter(|p| p.ecosystem == "dpkg")
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect()
}

#[test]
fn the_checked_in_root_gives_the_file_based_fields() {
    let root = checked_in_root();
    let inv = collect_inventory(&root);
    assert_eq!(
        inv.schema_version,
        deskpulse_proto::INVENTORY_SCHEMA_VERSION
    );

    let os = inv.os.clone().expect("os");
    assert_eq!(
        (os.name.as_str(), os.version.as_str()),
        ("Fixture GNU/Linux", "12"),
        "etc/os-release wins over usr/lib/os-release"
    );

    let fs: Vec<(&str, &str, &str)> = inv
        .storage
        .as_ref()
        .expect("storage")
        .filesystems
        .iter()
        .map(|f| {
            (
                f.mount_point.as_str(),
                f.device.as_str(),
                f.fs_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        fs,
        [
            ("/", "/dev/nvme0n1p2", "ext4"),
            ("/boot/efi", "/dev/nvme0n1p1", "vfat"),
            ("/media/alice/USB Stick", "/dev/sda1", "vfat"),
            // Two mounts on /home: the later one hides the earlier.
            ("/home", "/dev/nvme1n1p1", "btrfs"),
        ],
        "sysfs, proc, devtmpfs, tmpfs and cgroup2 are nodev; squashfs and overlay (not nodev in this fixture) are pseudo by name (D35)"
    );

    let software = inv.software.as_ref().expect("software");
    assert!(
        software
            .packages
            .iter()
            .all(|p| p.ecosystem == "dpkg" && p.publisher == "Debian"),
        "every installed fixture package has a Debian maintainer address and no Origin"
    );
    let row = |n: &str, v: &str, a: &str| (n.to_owned(), v.to_owned(), a.to_owned());
    assert_eq!(
        dpkg_rows(&inv),
        [
            // The description's indented "Status:"/"Version:" lines are
            // continuation text, not fields.
            row("bash", "5.2.15-2+b8", "amd64"),
            row("libc6", "2.36-9+deb12u4", "amd64"),
            // old-editor is "deinstall ok config-files" (rc): not installed.
            row("tzdata", "2024a-0+deb12u1", "all"),
            row("vim-tiny", "2:9.0.1378-2", "amd64"),
        ]
    );

    // Health reports the same real filesystems.
    let health = HealthSampler::new(&root).sample();
    let points: Vec<&str> = health
        .filesystems
        .iter()
        .map(|f| f.mount_point.as_str())
        .collect();
    assert_eq!(
        points,
        ["/", "/boot/efi", "/media/alice/USB Stick", "/home"]
    );
}

#[test]
fn dpkg_query_reads_the_checked_in_root_as_we_do() {
    let admindir = checked_in_root().join("var/lib/dpkg");
    let mut arg = std::ffi::OsString::from("--admindir=");
    arg.push(&admindir);
    let Some(listing) = tool_output(
        "dpkg-query",
        &[
            &arg,
            "-W".as_ref(),
            "-f".as_ref(),
            "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\\n".as_ref(),
        ],
    ) else {
        return;
    };
    let theirs: Vec<(String, String, String)> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("ii |"))
        .filter_map(|l| {
            let mut f = l.split('|').map(str::to_owned);
            Some((f.next()?, f.next()?, f.next()?))
        })
        .collect();
    assert!(
        listing.contains("rc |old-editor"),
        "the fixture keeps a removed package: {listing}"
    );
    assert_eq!(dpkg_rows(&collect_inventory(&checked_in_root())), theirs);
}

#[test]
fn findmnt_decodes_the_checked_in_mounts_as_we_do() {
    let root = checked_in_root();
    let mounts = root.join("proc/mounts");
    let Some(json) = tool_output(
        "findmnt",
        &[
            "--tab-file".as_ref(),
            mounts.as_os_str(),
            "-J".as_ref(),
            "-l".as_ref(),
            "-o".as_ref(),
            "TARGET,SOURCE,FSTYPE".as_ref(),
        ],
    ) else {
        return;
    };
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("findmnt JSON");
    let pseudo = mounts::pseudo_types(
        &std::fs::read_to_string(root.join("proc/filesystems")).expect("filesystems"),
    );
    let mut theirs: Vec<(String, String, String)> = Vec::new();
    for fs in parsed["filesystems"].as_array().expect("filesystems") {
        let field = |k: &str| fs[k].as_str().unwrap_or_default().to_owned();
        if pseudo.contains(&field("fstype")) {
            continue;
        }
        theirs.retain(|(target, _, _)| *target != field("target"));
        theirs.push((field("target"), field("source"), field("fstype")));
    }
    let ours: Vec<(String, String, String)> = collect_inventory(&root)
        .storage
        .expect("storage")
        .filesystems
        .into_iter()
        .map(|f| (f.mount_point, f.device, f.fs_type))
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn usr_lib_os_release_is_the_fallback() {
    let root = fixture_root();
    std::fs::remove_file(root.join("etc/os-release")).expect("rm");
    let usr_lib = root.join("usr/lib");
    std::fs::create_dir_all(&usr_lib).expect("mkdir");
    std::fs::write(
        usr_lib.join("os-release"),
        "# vendor copy\nNAME='Fallback OS'\nVERSION_ID=3.2\n",
    )
    .expect("write");
    let inv = collect_inventory(&root);
    let os = inv.os.clone().expect("os");
    assert_eq!(
        (os.name.as_str(), os.version.as_str()),
        ("Fallback OS", "3.2")
    );
    assert!(
        inv.unavailable.iter().all(|u| u.field != "os.name"),
        "{:?}",
        inv.unavailable
    );
    let _ = std::fs::remove_dir_all(root);
}

/// One definition of disk use (issue 21): this machine's `/` as `df` sees
/// it, as the inventory lists it and as `disk_space` reads it, agree within
/// what a live filesystem moves between the calls and df's rounding up.
#[test]
fn disk_use_is_what_df_says() {
    let Some(out) = tool_output("df", &["-P".as_ref(), "-B1".as_ref(), "/".as_ref()]) else {
        return;
    };
    let row: Vec<u64> = out
        .lines()
        .nth(1)
        .expect("df prints a row for /")
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|v| v.trim_end_matches('%').parse().expect("a number"))
        .collect();
    let [size, used, available, percent] = row[..] else {
        panic!("df -P printed {out}");
    };
    let close = |ours: u64, theirs: u64, what: &str| {
        // 64 MiB: what another process may write between the two reads.
        assert!(
            ours.abs_diff(theirs) <= 64 << 20,
            "{what}: ours {ours}, df {theirs}"
        );
    };
    let space = super::disk_space(Path::new("/")).expect("statvfs /");
    assert_eq!(space.total, size, "capacity");
    close(space.used(), used, "used");
    close(space.available, available, "available");
    assert!(
        (f64::from(space.used_percent()).ceil() - percent as f64).abs() <= 1.0,
        "percent: ours {}, df {percent}",
        space.used_percent()
    );
    let mut inv = Inventory::default();
    let listed = super::filesystems(Path::new("/"), &mut inv);
    let root = listed
        .iter()
        .find(|fs| fs.mount_point == "/")
        .expect("/ is a real filesystem here");
    assert_eq!(root.total_bytes, size);
    close(
        root.used_bytes.expect("used is read"),
        used,
        "inventory used",
    );
    close(root.available_bytes, available, "inventory available");
}
