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
