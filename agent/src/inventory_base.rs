//! The inventory base: the last snapshot the collector acknowledged, which
//! the next inventory is sent as a delta against.
//!
//! Two files in `inventory/` under the state dir: `base.pb`, the
//! acknowledged snapshot, and `pending.pb`, the newest snapshot in the
//! spool with its seq (8 bytes, then the encoded inventory). When that seq
//! is acknowledged the pending snapshot becomes the base. Every inventory
//! record is a full snapshot or a delta against the acknowledged base, so a
//! newer one can supersede an older one in the spool. Anything unreadable
//! here only costs a full snapshot: the base is forgotten, never trusted.
//!
//! A third file, `limits`, keeps the inventory limits the collector last
//! sent (`deskpulse_proto::limits`), so inventories collected before the
//! next connection are cut to them too.

use std::path::{Path, PathBuf};

use deskpulse_proto::delta;
use deskpulse_proto::limits::Limits;
use deskpulse_proto::v1::Inventory;
use deskpulse_proto::v1::report::Payload;
use prost::Message;
use tracing::warn;

use crate::state::write_atomic;

/// Room kept below the collector's byte limit for the report around a
/// delta (its key, times, framing).
const ENVELOPE: u64 = 4 * 1024;

/// The acknowledged snapshot and the pending one.
#[derive(Debug)]
pub struct InventoryBase {
    dir: PathBuf,
    pending_seq: Option<u64>,
    limits: Option<Limits>,
}

impl InventoryBase {
    /// Opens the base files in `dir` (created when first written).
    pub fn open(dir: &Path) -> Self {
        let pending_seq = std::fs::read(dir.join("pending.pb"))
            .ok()
            .and_then(|b| b.get(..8).and_then(|s| s.try_into().ok()))
            .map(u64::from_le_bytes);
        let limits = std::fs::read_to_string(dir.join("limits"))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        Self {
            dir: dir.to_owned(),
            pending_seq,
            limits,
        }
    }

    /// The collector's inventory limits, as it last sent them.
    pub fn limits(&self) -> Option<Limits> {
        self.limits
    }

    /// Keeps the limits a session opened with; true when they are new.
    pub fn set_limits(&mut self, limits: Limits) -> bool {
        if self.limits == Some(limits) {
            return false;
        }
        self.limits = Some(limits);
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                write_atomic(
                    &self.dir.join("limits"),
                    limits.to_string().as_bytes(),
                    0o600,
                )
                .map_err(|e| e.to_string())
            });
        // Kept in memory regardless; after a restart the first inventory
        // may be refused once and is then collected again.
        if let Err(error) = written {
            warn!(%error, "cannot save the collector's inventory limits");
        }
        true
    }

    /// True when `seq` is the report that carried the pending snapshot.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending_seq == Some(seq)
    }

    /// Cuts a freshly collected (canonical) snapshot to the collector's
    /// limits, naming what was cut in its `unavailable` list.
    pub fn cut_to_limits(&self, snapshot: &mut Inventory) {
        if let Some(limits) = &self.limits
            && deskpulse_proto::limits::truncate(snapshot, limits)
        {
            let cut: Vec<&str> = snapshot
                .unavailable
                .iter()
                .filter(|u| u.reason == deskpulse_proto::v1::UnavailableReason::Truncated as i32)
                .map(|u| u.field.as_str())
                .collect();
            warn!(lists = %cut.join(", "), "the inventory is over the collector's limits; sending it cut to them");
        }
    }

    fn base(&self) -> Option<Inventory> {
        let bytes = std::fs::read(self.dir.join("base.pb")).ok()?;
        Inventory::decode(bytes.as_slice()).ok()
    }

    /// What to spool for a freshly collected (canonical) snapshot: a delta
    /// against the base, or the full snapshot when there is no base.
    pub fn payload_for(&self, next: &Inventory) -> Payload {
        let Some(base) = self.base() else {
            return Payload::Inventory(next.clone());
        };
        let delta = delta::diff(&base, next);
        // A delta can be larger than the snapshot (every item replaced and
        // the old keys removed), even past the collector's byte limit that
        // the cut snapshot fits: then the snapshot goes instead.
        let over = self.limits.is_some_and(|limits| {
            delta.encoded_len() as u64 > limits.max_bytes.saturating_sub(ENVELOPE)
        });
        if over {
            Payload::Inventory(next.clone())
        } else {
            Payload::InventoryDelta(delta)
        }
    }

    /// Remembers `snapshot` as the one spooled under `seq`.
    pub fn spooled(&mut self, seq: u64, snapshot: &Inventory) {
        let mut bytes = seq.to_le_bytes().to_vec();
        snapshot.encode(&mut bytes).unwrap_or_default();
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                write_atomic(&self.dir.join("pending.pb"), &bytes, 0o600).map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => self.pending_seq = Some(seq),
            // Without it the next delta uses an older base; the collector
            // then asks for a resync, which heals it.
            Err(error) => warn!(%error, "cannot save the pending inventory snapshot"),
        }
    }

    /// The report `seq` was acknowledged: if it carried the pending
    /// snapshot, that snapshot is the base now.
    pub fn acknowledged(&mut self, seq: u64) {
        if self.pending_seq != Some(seq) {
            return;
        }
        let pending = self.dir.join("pending.pb");
        let moved = std::fs::read(&pending)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                write_atomic(
                    &self.dir.join("base.pb"),
                    b.get(8..).unwrap_or_default(),
                    0o600,
                )
                .map_err(|e| e.to_string())
            });
        if let Err(error) = moved {
            warn!(%error, "cannot save the acknowledged inventory as the delta base");
            self.forget();
            return;
        }
        let _ = std::fs::remove_file(pending);
        self.pending_seq = None;
    }

    /// Drops the base, so the next inventory is sent whole.
    pub fn forget(&mut self) {
        for file in ["base.pb", "pending.pb"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
        self.pending_seq = None;
    }
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::OsInfo;

    use super::*;

    fn snapshot(hostname: &str) -> Inventory {
        Inventory {
            os: Some(OsInfo {
                hostname: hostname.into(),
                ..OsInfo::default()
            }),
            ..Inventory::default()
        }
    }

    #[test]
    fn full_first_then_deltas_against_the_acknowledged_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut base = InventoryBase::open(dir.path());
        let first = snapshot("a");
        assert!(matches!(base.payload_for(&first), Payload::Inventory(_)));
        base.spooled(1, &first);
        assert!(
            matches!(base.payload_for(&first), Payload::Inventory(_)),
            "no delta before the acknowledgement"
        );
        base.acknowledged(7);
        assert!(matches!(base.payload_for(&first), Payload::Inventory(_)));
        base.acknowledged(1);
        let Payload::InventoryDelta(d) = base.payload_for(&snapshot("b")) else {
            panic!("a delta once acknowledged");
        };
        assert_eq!(d.base_sha256, delta::snapshot_hash(&first));

        // The pending seq survives a restart.
        base.spooled(2, &snapshot("b"));
        let mut reopened = InventoryBase::open(dir.path());
        reopened.acknowledged(2);
        let Payload::InventoryDelta(d) = reopened.payload_for(&snapshot("c")) else {
            panic!("a delta");
        };
        assert_eq!(d.base_sha256, delta::snapshot_hash(&snapshot("b")));

        reopened.forget();
        assert!(matches!(
            reopened.payload_for(&snapshot("c")),
            Payload::Inventory(_)
        ));
    }

    #[test]
    fn a_corrupt_base_means_a_full_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("base.pb"), b"\xff\xff\xff garbage").expect("write");
        let base = InventoryBase::open(dir.path());
        assert!(matches!(
            base.payload_for(&snapshot("a")),
            Payload::Inventory(_)
        ));
    }

    #[test]
    fn the_limits_are_kept_cut_to_and_a_delta_past_them_goes_whole() {
        use deskpulse_proto::v1::{Package, SoftwareInfo};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut base = InventoryBase::open(dir.path());
        assert_eq!(base.limits(), None);
        let limits = Limits {
            max_packages: 1_000,
            max_services: 100,
            max_users: 100,
            max_bytes: 256 * 1024,
        };
        assert!(base.set_limits(limits));
        assert!(!base.set_limits(limits), "the same limits are not new");
        let reopened = InventoryBase::open(dir.path());
        assert_eq!(reopened.limits(), Some(limits), "kept across a restart");

        let with = |count: usize, prefix: &str| {
            let mut inv = snapshot("a");
            inv.software = Some(SoftwareInfo {
                packages: (0..count)
                    .map(|i| Package {
                        ecosystem: "dpkg".into(),
                        name: format!("{prefix}-package-with-a-long-name-{i:05}"),
                        version: "1".into(),
                        ..Package::default()
                    })
                    .collect(),
                ..SoftwareInfo::default()
            });
            inv
        };
        let mut big = with(5_000, "a");
        base.cut_to_limits(&mut big);
        assert_eq!(big.software.as_ref().map(|s| s.packages.len()), Some(1_000));
        assert_eq!(big.unavailable.len(), 1);
        base.spooled(1, &big);
        base.acknowledged(1);
        // Every package replaced by another: the delta holds them all and
        // the old keys, under the limit here, so a delta.
        let mut next = with(5_000, "b");
        base.cut_to_limits(&mut next);
        assert!(matches!(
            base.payload_for(&next),
            Payload::InventoryDelta(_)
        ));
        // Under a byte limit the delta passes and the snapshot fits: whole.
        let tight = Limits {
            max_bytes: 48 * 1024,
            ..limits
        };
        base.set_limits(tight);
        let mut next = with(5_000, "c");
        base.cut_to_limits(&mut next);
        assert!(next.encoded_len() as u64 <= tight.max_bytes);
        assert!(matches!(base.payload_for(&next), Payload::Inventory(_)));
    }
}
