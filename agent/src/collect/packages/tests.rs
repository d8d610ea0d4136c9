//! Every Linux package database present under the root is read, an unreadable
//! rpmdb is named, and the real `pacman` reads our fixture as we do.

use std::path::{Path, PathBuf};

use deskpulse_proto::v1::{Inventory, UnavailableReason};

use super::*;

struct Tree(PathBuf);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir").keep())
    }
    fn write(&self, path: &str, text: &str) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
        self
    }
    fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mixed() -> Tree {
    let t = Tree::new();
    t.write(
        "var/lib/dpkg/status",
        "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b8\n\n\
         Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36-9+deb12u4\nOrigin: Debian\n\n\
         Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
    )
    .write("var/lib/dpkg/info/bash.list", "/bin/bash\n")
    .write("var/lib/dpkg/info/libc6:amd64.list", "/lib/x86_64-linux-gnu/libc.so.6\n")
    .write("lib/apk/db/installed", "P:musl\nV:1.2.4-r2\nA:x86_64\n\n")
    .write("var/lib/pacman/local/linux-6.6.7.arch1-1/desc", pacman::tests::DESC)
    .write("var/lib/pacman/local/ALPM_DB_VERSION", "9\n")
    .write("snap/firefox/current/meta/snap.yaml", "name: firefox\nversion: 121.0-1\n")
    .write(
        "var/lib/flatpak/app/org.gimp.GIMP/x86_64/stable/active/metadata",
        "[Application]\nname=org.gimp.GIMP\n",
    );
    std::os::unix::fs::symlink(
        "x86_64/stable",
        t.root().join("var/lib/flatpak/app/org.gimp.GIMP/current"),
    )
    .expect("symlink");
    t
}

fn collected(t: &Tree) -> Inventory {
    let mut inv = Inventory::default();
    collect(t.root(), &mut inv);
    inv
}

#[test]
fn every_linux_database_present_is_read() {
    let t = mixed();
    let inv = collected(&t);
    let pkgs = &inv.software.as_ref().expect("software").packages;
    let seen: Vec<(&str, &str, &str)> = pkgs
        .iter()
        .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("dpkg", "bash", "5.2.15-2+b8"),
            ("dpkg", "libc6", "2.36-9+deb12u4"),
            ("apk", "musl", "1.2.4-r2"),
            ("pacman", "linux", "6.6.7.arch1-1"),
            ("snap", "firefox", "121.0-1"),
            ("flatpak", "org.gimp.GIMP", "stable"),
        ]
    );
    assert!(pkgs[0].install_date_unix_s > 0, "from bash.list");
    assert!(pkgs[1].install_date_unix_s > 0, "from libc6:amd64.list");
    assert_eq!(pkgs[1].publisher, "Debian");
    assert_eq!(pkgs[5].arch, "x86_64");
}

#[test]
fn an_rpm_database_we_cannot_read_is_named() {
    let t = Tree::new();
    t.write("var/lib/rpm/Packages", "berkeley db");
    let inv = collected(&t);
    let rpm = inv
        .unavailable
        .iter()
        .find(|u| u.field == "software.rpm")
        .expect("listed");
    assert_eq!(rpm.reason, UnavailableReason::NotSupported as i32);
}

/// Without the system's libsqlite3 the rpm database is named unavailable,
/// in one line, rather than read as empty.
#[test]
fn an_rpm_database_without_the_system_sqlite_is_named() {
    let t = Tree::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm/rpmdb.sqlite");
    let db = t.root().join("var/lib/rpm/rpmdb.sqlite");
    std::fs::create_dir_all(db.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&fixture, &db).expect("copy");
    let mut inv = Inventory::default();
    let mut out = Vec::new();
    rpm_packages(
        t.root(),
        &mut inv,
        &mut out,
        "libdeskpulse-no-such-sqlite.so.0",
    );
    assert!(out.is_empty());
    let rpm = inv
        .unavailable
        .iter()
        .find(|u| u.field == "software.rpm")
        .expect("listed");
    assert_eq!(rpm.reason, UnavailableReason::NotSupported as i32);
    assert!(
        rpm.detail
            == "var/lib/rpm/rpmdb.sqlite: the system's SQLite library cannot be used (libdeskpulse-no-such-sqlite.so.0: cannot open shared object file: No such file or directory)",
        "{}",
        rpm.detail
    );
    assert!(!rpm.detail.contains('\n'));

    // With the library, the same tree reads.
    let mut inv = Inventory::default();
    rpm_packages(
        t.root(),
        &mut inv,
        &mut out,
        rpm::system_sqlite::SYSTEM_LIBRARY,
    );
    assert_eq!(out.len(), 3, "{:?}", inv.unavailable);
}

#[test]
fn pacman_reads_our_fixture_as_we_do() {
    let t = mixed();
    let db = t.root().join("var/lib/pacman");
    let out = match std::process::Command::new("pacman")
        .arg("-Q")
        .arg("--dbpath")
        .arg(&db)
        .output()
    {
        Ok(out) if out.status.success() => out,
        other => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "pacman is required in CI (apt-get install pacman-package-manager): {other:?}"
            );
            eprintln!("SKIPPED: pacman is not installed");
            return;
        }
    };
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let inv = collected(&t);
    let ours: Vec<String> = inv
        .software
        .as_ref()
        .expect("software")
        .packages
        .iter()
        .filter(|p| p.ecosystem == "pacman")
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    assert_eq!(ours.join("\n"), theirs);
}
