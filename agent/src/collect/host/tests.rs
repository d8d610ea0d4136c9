//! OS details, users, security posture and services of a workstation fixture,
//! the gaps named when running without root, and fast runs skipping the
//! slow probes.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use deskpulse_proto::v1::{Inventory, ProtectionState, UnavailableReason};

use super::*;

struct Tree(PathBuf);

impl Tree {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir").keep())
    }
    fn write(&self, path: &str, data: impl AsRef<[u8]>) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, data).expect("write");
        self
    }
    fn link(&self, target: &str, path: &str) -> &Self {
        let full = self.0.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        symlink(target, full).expect("symlink");
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

fn workstation() -> Tree {
    let t = Tree::new();
    let mut utmp = users::tests::record(7, "alice", "tty2", "", 1_700_000_000);
    utmp.extend(users::tests::record(6, "LOGIN", "tty1", "", 1_699_999_000));
    let mut wtmp = users::tests::record(7, "bob", "pts/0", "10.0.0.9", 1_690_000_000);
    wtmp.extend(users::tests::record(8, "", "pts/0", "", 1_690_000_500));
    wtmp.extend(users::tests::record(7, "alice", "tty2", "", 1_700_000_000));
    t.write("etc/os-release", "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n")
        .link("/usr/share/zoneinfo/Europe/Berlin", "etc/localtime")
        .write("var/log/installer/syslog", "x")
        .write("etc/sssd/sssd.conf", "[sssd]\nservices = nss, pam\n[domain/corp.example.com]\nid_provider = ad\n")
        .write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\nbob:x:1001:1001:Bob:/home/bob:/bin/bash\n")
        .write("etc/group", "sudo:x:27:alice\n")
        .write("etc/shadow", "root:*:19000:0:99999:7:::\nalice:$6$x:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n")
        .write("run/utmp", &utmp)
        .write("var/log/wtmp", &wtmp)
        .write("etc/ufw/ufw.conf", "# /etc/ufw/ufw.conf\nENABLED=yes\nLOGLEVEL=low\n")
        .write("proc/filesystems", "nodev\tproc\n\text4\n")
        .write("proc/mounts", "/dev/mapper/vg-root / ext4 rw 0 0\n/dev/sda1 /boot ext4 rw 0 0\nproc /proc proc rw 0 0\n")
        .write("sys/block/dm-0/dm/uuid", "CRYPT-LUKS2-0123456789abcdef-sda3_crypt\n")
        .write("sys/block/dm-0/dm/name", "sda3_crypt\n")
        .write("sys/block/dm-1/dm/uuid", "LVM-abcdef\n")
        .write("sys/block/dm-1/dm/name", "vg-root\n")
        .write("sys/block/dm-1/slaves/dm-0", "")
        .write("run/reboot-required", "*** System restart required ***\n")
        .write("var/lib/update-notifier/updates-available", "\n7 updates can be applied immediately.\n")
        .write("lib/systemd/system/ssh.service", "[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd\n[Install]\nWantedBy=multi-user.target\n")
        .write("lib/systemd/system/cups.service", "[Unit]\nDescription=CUPS Scheduler\n[Install]\nWantedBy=multi-user.target\n")
        .write("lib/systemd/system/systemd-journald.service", "[Unit]\nDescription=Journal Service\n[Service]\nType=notify\n")
        .write("lib/systemd/system/getty@.service", "[Unit]\nDescription=Getty on %I\n[Install]\nWantedBy=getty.target\n")
        .write("lib/systemd/system/bluetooth.service", "[Unit]\nDescription=Bluetooth\n[Install]\nWantedBy=bluetooth.target\n")
        .link("/lib/systemd/system/ssh.service", "etc/systemd/system/multi-user.target.wants/ssh.service")
        .link("/dev/null", "etc/systemd/system/bluetooth.service")
        .write("run/systemd/system/.keep", "")
        .link("../invocation-id", "run/systemd/units/invocation:ssh.service");
    t
}

fn collected(t: &Tree, slow: bool) -> Inventory {
    let mut inv = Inventory::default();
    collect(t.root(), &mut inv, slow);
    inv
}

#[test]
fn os_details_users_security_and_services_of_a_workstation() {
    let t = workstation();
    let inv = collected(&t, true);
    let os = inv.os.clone().expect("os");
    assert_eq!(os.build, "12 (bookworm)");
    assert_eq!(os.timezone, "Europe/Berlin");
    assert_eq!(os.domain, "corp.example.com");
    assert!(os.install_date_unix_s > 0);

    let users = inv.users.clone().expect("users");
    let summary: Vec<(&str, bool, bool)> = users
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.admin, u.disabled))
        .collect();
    assert_eq!(
        summary,
        [
            ("root", true, true),
            ("alice", true, false),
            ("bob", false, true)
        ]
    );
    assert_eq!(users.sessions.len(), 1);
    assert_eq!(users.sessions[0].user, "alice");
    assert_eq!(
        (users.last_login_user.as_str(), users.last_login_unix_s),
        ("alice", 1_700_000_000)
    );

    let sec = inv.security.clone().expect("security");
    assert_eq!(sec.firewall, ProtectionState::On as i32);
    assert_eq!(sec.firewall_product, "ufw");
    let enc: Vec<(&str, bool)> = sec
        .encryption
        .iter()
        .map(|e| (e.volume.as_str(), e.encrypted))
        .collect();
    assert_eq!(
        enc,
        [("/", true), ("/boot", false)],
        "LVM on LUKS counts as encrypted"
    );
    assert!(sec.reboot_pending);
    assert_eq!(sec.pending_updates, Some(7));

    let services = inv.services.clone().expect("services").services;
    let summary: Vec<(&str, &str, &str)> = services
        .iter()
        .map(|s| (s.name.as_str(), s.start_mode.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("bluetooth.service", "masked", "stopped"),
            ("cups.service", "disabled", "stopped"),
            ("ssh.service", "enabled", "running"),
            ("systemd-journald.service", "static", "stopped"),
        ],
        "templates are left out"
    );
    assert_eq!(services[2].display_name, "OpenBSD Secure Shell server");
}

#[test]
fn without_root_only_files_and_systemd_the_gaps_are_named() {
    let t = workstation();
    std::fs::remove_file(t.root().join("etc/shadow")).expect("rm");
    std::fs::remove_dir_all(t.root().join("run/systemd/system")).expect("rm");
    std::fs::remove_file(t.root().join("var/lib/update-notifier/updates-available")).expect("rm");
    std::fs::remove_file(t.root().join("etc/ufw/ufw.conf")).expect("rm");
    let inv = collected(&t, true);
    let reason = |field: &str| {
        inv.unavailable
            .iter()
            .find(|u| u.field == field)
            .map(|u| u.reason)
    };
    assert_eq!(
        reason("users.disabled"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(
        reason("services.state"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert_eq!(
        reason("security.pending_updates"),
        Some(UnavailableReason::NotSupported as i32)
    );
    assert_eq!(
        reason("security.firewall"),
        Some(UnavailableReason::NotPresent as i32)
    );
    assert!(
        inv.services
            .expect("services")
            .services
            .iter()
            .all(|s| s.state.is_empty())
    );
}

#[test]
fn fast_runs_skip_the_slow_probes() {
    let t = workstation();
    let inv = collected(&t, false);
    assert_eq!(inv.security.expect("security").pending_updates, None);
    assert!(
        !inv.unavailable
            .iter()
            .any(|u| u.field == "security.pending_updates")
    );
}

#[test]
fn domains_and_zones() {
    assert_eq!(
        domain("", "[libdefaults]\n default_realm = CORP.EXAMPLE.COM\n"),
        "CORP.EXAMPLE.COM"
    );
    assert_eq!(domain("", ""), "");
    assert_eq!(
        zone_from_link("../usr/share/zoneinfo/America/New_York").as_deref(),
        Some("America/New_York")
    );
    assert_eq!(zone_from_link("/etc/localtime.bak"), None);
}
