//! The agent's inventory of this very machine, compared with what the
//! system's own tools say (issue 4's accuracy check).

use std::collections::BTreeSet;
use std::process::Command;

use deskpulse_tests::{bin, run};

fn inventory() -> serde_json::Value {
    let out =
        run(Command::new(bin("deskpulse-agent")).args(["inventory", "--json"])).expect_code(0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("inventory --json is JSON ({e})"))
}

fn tool(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn installed_dpkg_packages_match_dpkg_query() {
    let Some(listing) = tool(
        "dpkg-query",
        &["-W", "-f", "${db:Status-Abbrev} ${binary:Package}\\n"],
    ) else {
        eprintln!("SKIPPED: dpkg-query is not installed here");
        return;
    };
    let want: BTreeSet<String> = listing
        .lines()
        .filter(|l| l.starts_with("ii "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|name| name.split(':').next().unwrap_or(name).to_owned())
        .collect();
    let inv = inventory();
    let have: BTreeSet<String> = inv["software"]["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["ecosystem"] == "dpkg")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(
        have, want,
        "dpkg packages differ from `dpkg-query -W` ii lines"
    );
}

#[test]
fn logical_cpus_match_nproc() {
    let nproc: u64 = tool("nproc", &["--all"])
        .and_then(|s| s.trim().parse().ok())
        .expect("nproc");
    let inv = inventory();
    assert_eq!(inv["cpu"]["logical_cores"].as_u64(), Some(nproc));
}

#[test]
fn total_memory_matches_proc_meminfo() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    let inv = inventory();
    assert_eq!(inv["memory"]["total_bytes"].as_u64(), Some(kib * 1024));
}

#[test]
fn interfaces_and_macs_match_sys_class_net() {
    let mut want = BTreeSet::new();
    for entry in std::fs::read_dir("/sys/class/net").expect("/sys/class/net") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let mac = std::fs::read_to_string(entry.path().join("address")).unwrap_or_default();
        want.insert((name, mac.trim().to_ascii_lowercase()));
    }
    let inv = inventory();
    let have: BTreeSet<(String, String)> = inv["network"]["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["mac"].as_str().unwrap_or_default().to_ascii_lowercase(),
            )
        })
        .collect();
    assert_eq!(have, want);
}

/// D35: a pseudo filesystem is `nodev` in /proc/filesystems, or squashfs or
/// overlay.
#[test]
fn real_filesystems_match_proc_mounts() {
    let filesystems = std::fs::read_to_string("/proc/filesystems").expect("filesystems");
    let pseudo: BTreeSet<&str> = filesystems
        .lines()
        .filter_map(|l| l.strip_prefix("nodev"))
        .map(str::trim)
        .chain(["squashfs", "overlay"])
        .collect();
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    let want: BTreeSet<String> = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (_dev, mount, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (!pseudo.contains(fstype)).then(|| mount.replace("\\040", " "))
        })
        .collect();
    let inv = inventory();
    let have: BTreeSet<String> = inv["storage"]["filesystems"]
        .as_array()
        .expect("filesystems")
        .iter()
        .filter_map(|f| f["mount_point"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(have, want);
}

#[test]
fn the_os_matches_etc_os_release() {
    let text = std::fs::read_to_string("/etc/os-release").expect("os-release");
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let inv = inventory();
    assert_eq!(inv["os"]["name"].as_str(), Some(field("NAME").as_str()));
    assert_eq!(
        inv["os"]["version"].as_str(),
        Some(field("VERSION_ID").as_str())
    );
}
