//! The outbox: reports waiting for the collector's acknowledgement, keyed
//! (spool_id, seq) as D14 defines. A report leaves only when acknowledged.
//!
//! This one lives in memory and is bounded: it survives disconnections but
//! not a restart of the agent. The durable on-disk spool replaces it (issue
//! "Nothing lost"); its interface is the one the session already uses.

use std::collections::BTreeMap;

use deskpulse_proto::v1::Report;
use deskpulse_proto::v1::report::Payload;

/// Reports kept at most; past it the oldest health samples go first.
pub const DEFAULT_CAPACITY: usize = 2048;

/// Reports awaiting acknowledgement.
#[derive(Debug)]
pub struct Outbox {
    spool_id: String,
    next_seq: u64,
    pending: BTreeMap<u64, Report>,
    capacity: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox with a fresh random spool id.
    pub fn new(capacity: usize) -> Self {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        Self {
            spool_id: hex::encode(bytes),
            next_seq: 1,
            pending: BTreeMap::new(),
            capacity: capacity.max(2),
            dropped: 0,
        }
    }

    /// Adds a report and returns its sequence number.
    pub fn push(&mut self, payload: Payload, collected_at_unix_ms: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Report {
                spool_id: self.spool_id.clone(),
                seq,
                collected_at_unix_ms,
                payload: Some(payload),
            },
        );
        while self.pending.len() > self.capacity {
            let victim = self
                .pending
                .iter()
                .find(|(_, r)| matches!(r.payload, Some(Payload::Health(_))))
                .or_else(|| self.pending.iter().next())
                .map(|(seq, _)| *seq);
            if let Some(victim) = victim {
                self.pending.remove(&victim);
                self.dropped += 1;
            }
        }
        seq
    }

    /// Removes an acknowledged (or rejected) report. False if it was not
    /// pending, e.g. a duplicate acknowledgement.
    pub fn remove(&mut self, spool_id: &str, seq: u64) -> bool {
        spool_id == self.spool_id && self.pending.remove(&seq).is_some()
    }

    /// Pending reports with a sequence number above `after`, in order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &Report> {
        self.pending.range(after + 1..).map(|(_, r)| r)
    }

    /// True when `seq` still waits for its acknowledgement.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending.contains_key(&seq)
    }

    /// How many reports wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many reports were dropped for lack of room.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use deskpulse_proto::v1::{HealthSample, Inventory};

    use super::*;

    #[test]
    fn acknowledged_reports_leave_and_others_stay_in_order() {
        let mut outbox = Outbox::new(10);
        let a = outbox.push(Payload::Inventory(Inventory::default()), 1);
        let b = outbox.push(Payload::Health(HealthSample::default()), 2);
        let c = outbox.push(Payload::Health(HealthSample::default()), 3);
        assert_eq!((a, b, c), (1, 2, 3));
        let spool = outbox.after(0).next().expect("first").spool_id.clone();
        assert!(outbox.remove(&spool, b));
        assert!(!outbox.remove(&spool, b), "a second ack changes nothing");
        assert!(!outbox.remove("other-spool", a));
        let left: Vec<u64> = outbox.after(0).map(|r| r.seq).collect();
        assert_eq!(left, vec![1, 3]);
        let later: Vec<u64> = outbox.after(1).map(|r| r.seq).collect();
        assert_eq!(later, vec![3]);
    }

    #[test]
    fn when_full_health_goes_before_inventory_and_is_counted() {
        let mut outbox = Outbox::new(2);
        outbox.push(Payload::Inventory(Inventory::default()), 1);
        outbox.push(Payload::Health(HealthSample::default()), 2);
        outbox.push(Payload::Health(HealthSample::default()), 3);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.dropped(), 1);
        let left: Vec<u64> = outbox.after(0).map(|r| r.seq).collect();
        assert_eq!(left, vec![1, 3]);
    }
}
