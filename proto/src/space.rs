//! Disk use, defined once as `df` defines it, for the health samples, the
//! inventory's filesystems, the `disk_usage` diagnostic and the collector's
//! disk facts: used = capacity − free blocks, and the percent used is
//! used / (used + space available to unprivileged users). Blocks reserved
//! for root count as neither, so a full disk reads 100 % when users can
//! write no more, as `df` says.

/// One filesystem's space, in bytes, as the OS reports it: statvfs
/// `f_blocks`, `f_bfree` and `f_bavail` times `f_frsize` on Unix;
/// `GetDiskFreeSpaceExW`'s total, total free and free to the caller on
/// Windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Capacity.
    pub total: u64,
    /// Free space, reserved blocks included.
    pub free: u64,
    /// Free space an unprivileged user may fill.
    pub available: u64,
}

impl DiskSpace {
    /// Used space: capacity minus free.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }

    /// Percent used, 0..=100, as `df` computes it (before its rounding up).
    pub fn used_percent(&self) -> f32 {
        used_percent(self.used(), self.available)
    }
}

/// Percent used from used and available bytes: used / (used + available);
/// 0 for a filesystem with neither.
pub fn used_percent(used: u64, available: u64) -> f32 {
    let denominator = used as f64 + available as f64;
    if denominator == 0.0 {
        0.0
    } else {
        (used as f64 * 100.0 / denominator) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_blocks_count_as_neither_used_nor_available() {
        // 100 GiB ext4 with its 5 % root reserve: 30 GiB used, 70 GiB free,
        // 65 GiB of it available to users. df says 30 / 95 → 32 % (rounded
        // up); 30 % of capacity and 35 % ((total − available) / total) are
        // the two wrong readings the issue saw.
        let gib = 1u64 << 30;
        let space = DiskSpace {
            total: 100 * gib,
            free: 70 * gib,
            available: 65 * gib,
        };
        assert_eq!(space.used(), 30 * gib);
        assert!((space.used_percent() - 31.578_947).abs() < 1e-3);
    }

    #[test]
    fn full_for_users_is_100_percent_and_empty_is_0() {
        let full = DiskSpace {
            total: 1000,
            free: 50,
            available: 0,
        };
        assert_eq!(full.used_percent(), 100.0);
        assert_eq!(DiskSpace::default().used_percent(), 0.0);
        let empty = DiskSpace {
            total: 1000,
            free: 1000,
            available: 950,
        };
        assert_eq!(empty.used_percent(), 0.0);
        // A filesystem reporting more free than capacity reads 0 used.
        let odd = DiskSpace {
            total: 10,
            free: 20,
            available: 20,
        };
        assert_eq!((odd.used(), odd.used_percent()), (0, 0.0));
    }
}
