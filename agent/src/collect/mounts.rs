//! Mounted filesystems from `/proc/mounts`, with pseudo filesystems left out
//! as D35 defines them: a type marked `nodev` in `/proc/filesystems`, or
//! squashfs or overlay. The accuracy test uses the same definition.

use std::collections::HashSet;

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device, e.g. "/dev/nvme0n1p2".
    pub device: String,
    /// The mount point, with octal escapes (`\040`) decoded.
    pub mount_point: String,
    /// The filesystem type.
    pub fs_type: String,
}

/// The pseudo filesystem types: `nodev` lines of `/proc/filesystems`, plus
/// squashfs and overlay (D35).
pub fn pseudo_types(filesystems: &str) -> HashSet<String> {
    filesystems
        .lines()
        .filter_map(|line| line.strip_prefix("nodev"))
        .map(|rest| rest.trim().to_owned())
        .chain(["squashfs".to_owned(), "overlay".to_owned()])
        .collect()
}

/// The real filesystems of a `/proc/mounts` text, one per mount point (the
/// last mount on a point hides the earlier ones).
pub fn real_mounts(mounts: &str, pseudo: &HashSet<String>) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if pseudo.contains(fs_type) {
            continue;
        }
        let mount = Mount {
            device: unescape(device),
            mount_point: unescape(point),
            fs_type: fs_type.to_owned(),
        };
        out.retain(|m| m.mount_point != mount.mount_point);
        out.push(mount);
    }
    out
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\tvfat\n\tsquashfs\nnodev\toverlay\n\tbtrfs\n";

    #[test]
    fn pseudo_filesystems_are_left_out_as_d35_says() {
        let pseudo = pseudo_types(FILESYSTEMS);
        let mounts = "sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\n/dev/sda2 / ext4 rw 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n/dev/loop0 /snap/core/1 squashfs ro 0 0\n\
                      overlay /var/lib/docker/x overlay rw 0 0\n/dev/sda1 /boot/efi vfat rw 0 0\n";
        let real = real_mounts(mounts, &pseudo);
        let points: Vec<&str> = real.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/boot/efi"]);
        assert_eq!(real[0].device, "/dev/sda2");
        assert_eq!(real[0].fs_type, "ext4");
    }

    #[test]
    fn escaped_spaces_and_remounts() {
        let pseudo = pseudo_types(FILESYSTEMS);
        let mounts = "/dev/sdb1 /media/USB\\040Stick vfat rw 0 0\n/dev/sda2 /data ext4 rw 0 0\n\
                      /dev/sdc1 /data btrfs rw 0 0\nshort line\n";
        let real = real_mounts(mounts, &pseudo);
        assert_eq!(real[0].mount_point, "/media/USB Stick");
        assert_eq!(real.len(), 2, "the later mount on /data hides the earlier");
        assert_eq!(real[1].fs_type, "btrfs");
    }

    #[test]
    fn squashfs_and_overlay_are_pseudo_even_when_not_listed_nodev() {
        // squashfs is block-backed, so the kernel never lists it `nodev`;
        // overlay is missing when its module was loaded after the read.
        let pseudo = pseudo_types("nodev\tproc\n\text4\n\tsquashfs\n");
        let mounts = "/dev/loop3 /snap/firefox/1 squashfs ro 0 0\n\
                      overlay /merged overlay rw 0 0\n/dev/sda2 / ext4 rw 0 0\n";
        let real = real_mounts(mounts, &pseudo);
        assert_eq!(real.len(), 1, "{real:?}");
        assert_eq!(real[0].mount_point, "/");
    }

    #[test]
    fn a_trailing_backslash_is_kept() {
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\01"), "a\\01");
        assert_eq!(unescape("tab\\011x"), "tab\tx");
    }
}
