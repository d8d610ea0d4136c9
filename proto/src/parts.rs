//! Large reports cross the session stream as [`ReportPart`]s.
//!
//! tonic keeps each stream's decode buffers (the compressed bytes and the
//! decompressed ones) at the size of the largest message the stream has
//! carried, for as long as the stream lives. One first inventory of 1,000
//! packages (about 60 KB encoded) left about 120 KB per connected agent on
//! the collector (heaptrack, 1,500 agents): 2.3 GB at 19,000 agents, for
//! data already stored. With parts of at most [`PART_BYTES`] and the
//! collector's 4 KiB stream window, those buffers stay within 8 KiB, and
//! the collector joins a report's parts in a buffer it frees as soon as the
//! report is decoded.

use prost::Message;

use crate::limits::{self, Limits};
use crate::v1::agent_message::Kind;
use crate::v1::{AgentMessage, Report, ReportPart};

/// The most bytes of an encoded report one part carries: with its framing,
/// and with one more 4 KiB HTTP/2 frame behind it (the collector's stream
/// window), it fits an 8 KiB buffer.
pub const PART_BYTES: usize = 4 * 1024;

/// The messages that carry `report`: the report itself when its encoding
/// fits one part, else consecutive parts of its encoding.
#[must_use]
pub fn report_messages(report: Report) -> Vec<AgentMessage> {
    if report.encoded_len() <= PART_BYTES {
        return vec![AgentMessage {
            kind: Some(Kind::Report(report)),
        }];
    }
    let encoded = report.encode_to_vec();
    let count = encoded.len().div_ceil(PART_BYTES);
    encoded
        .chunks(PART_BYTES)
        .enumerate()
        .map(|(i, data)| AgentMessage {
            kind: Some(Kind::ReportPart(ReportPart {
                data: data.to_vec(),
                last: i + 1 == count,
            })),
        })
        .collect()
}

/// Why a report's parts were refused.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The joined parts grew past the limit before the last one, and their
    /// first bytes do not name the report.
    #[error("a report sent in parts is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A whole report arrived while another's parts were unfinished.
    #[error("a report arrived before the last part of the report before it")]
    Interleaved,
    /// The joined parts are not an encoded report.
    #[error("the parts of a report do not decode: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// The report is over the inventory limits: it is answered `Rejected`
    /// by its key and the stream goes on (its remaining parts are skipped).
    #[error("{reason}")]
    Refused {
        /// The refused report's spool id.
        spool_id: String,
        /// Its seq.
        seq: u64,
        /// One line for the agent's log.
        reason: String,
    },
}

/// Bytes of a report's first part that are enough to read its key.
const KEY_PREFIX: usize = 256;

/// Joins one stream's report parts back into reports.
#[derive(Debug)]
pub struct Assembler {
    joined: Vec<u8>,
    limit: usize,
    limits: Option<Limits>,
    /// The rest of a refused report's parts are dropped as they come.
    skipping: bool,
}

impl Assembler {
    /// An assembler that refuses reports larger than `limit` bytes encoded.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            joined: Vec::new(),
            limit,
            limits: None,
            skipping: false,
        }
    }

    /// An assembler that also holds reports to the inventory `limits`: a
    /// report over them is refused by its key ([`PartError::Refused`])
    /// before it is decoded, and one larger than `limits.max_bytes` as
    /// soon as its parts pass that size (never past `limit`).
    #[must_use]
    pub fn with_limits(limit: usize, limits: Limits) -> Self {
        Self {
            limit: limit.min(usize::try_from(limits.max_bytes).unwrap_or(usize::MAX)),
            limits: Some(limits),
            ..Self::new(limit)
        }
    }

    /// True while a report's parts have started and not finished.
    #[must_use]
    pub fn in_progress(&self) -> bool {
        !self.joined.is_empty() || self.skipping
    }

    /// How many bytes of the report under way have arrived.
    #[must_use]
    pub fn joined_len(&self) -> usize {
        self.joined.len()
    }

    /// Checks a report that arrived whole: no other report's parts may be
    /// unfinished, and it must be within the inventory limits.
    ///
    /// # Errors
    /// [`PartError::Interleaved`] while another report's parts are
    /// unfinished; [`PartError::Refused`] over the limits.
    pub fn whole(&self, report: Report) -> Result<Report, PartError> {
        if self.in_progress() {
            return Err(PartError::Interleaved);
        }
        if let Some(reason) = self
            .limits
            .and_then(|l| l.refusal(&limits::count_decoded(&report)))
        {
            return Err(PartError::Refused {
                spool_id: report.spool_id,
                seq: report.seq,
                reason,
            });
        }
        Ok(report)
    }

    fn refused(&mut self, prefix: &[u8], last: bool, reason: String) -> PartError {
        let key = limits::report_key(prefix);
        self.joined = Vec::new();
        match key {
            Some((spool_id, seq)) => {
                self.skipping = !last;
                PartError::Refused {
                    spool_id,
                    seq,
                    reason,
                }
            }
            None => PartError::TooLarge { limit: self.limit },
        }
    }

    /// Adds a part: the finished report when it was the last.
    ///
    /// # Errors
    /// When the report grows past the limit, is over the inventory limits,
    /// or its joined parts do not decode; the parts so far are dropped
    /// either way.
    pub fn push(&mut self, part: ReportPart) -> Result<Option<Report>, PartError> {
        if self.skipping {
            self.skipping = !part.last;
            return Ok(None);
        }
        if self.joined.len() + part.data.len() > self.limit {
            let mut prefix = self.joined[..self.joined.len().min(KEY_PREFIX)].to_vec();
            prefix.extend(part.data.iter().take(KEY_PREFIX));
            let Some(limits) = self.limits else {
                self.joined = Vec::new();
                return Err(PartError::TooLarge { limit: self.limit });
            };
            let reason = limits
                .size_refusal(limits.max_bytes.saturating_add(1))
                .unwrap_or_default();
            return Err(self.refused(&prefix, part.last, reason));
        }
        self.joined.extend_from_slice(&part.data);
        if !part.last {
            return Ok(None);
        }
        // Taken, not cleared: the buffer is as large as the report was.
        let joined = std::mem::take(&mut self.joined);
        if let Some(limits) = self.limits {
            // Counted on the wire: a report over the limits is never
            // decoded. What the scan does not walk (groups, which prost
            // skips) is decoded first, within the byte limit.
            let counts = match limits::count_report(&joined) {
                Ok(counts) => counts,
                Err(_) => limits::count_decoded(&Report::decode(joined.as_slice())?),
            };
            if let Some(reason) = limits.refusal(&counts) {
                return Err(self.refused(&joined, true, reason));
            }
        }
        Ok(Some(Report::decode(joined.as_slice())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::report::Payload;
    use crate::v1::{HealthSample, Inventory, Package, SoftwareInfo};

    fn inventory_report(packages: usize) -> Report {
        Report {
            sent_at_unix_ms: 0,
            spool_id: "s1".into(),
            seq: 7,
            held_from_seq: 0,
            collected_at_unix_ms: 1_700_000_000_000,
            payload: Some(Payload::Inventory(Inventory {
                software: Some(SoftwareInfo {
                    packages: (0..packages)
                        .map(|i| Package {
                            ecosystem: "dpkg".into(),
                            name: format!("package-{i}"),
                            version: format!("1.{i}"),
                            ..Package::default()
                        })
                        .collect(),
                    ..SoftwareInfo::default()
                }),
                ..Inventory::default()
            })),
        }
    }

    fn parts(messages: Vec<AgentMessage>) -> Vec<ReportPart> {
        messages
            .into_iter()
            .map(|m| match m.kind {
                Some(Kind::ReportPart(part)) => part,
                other => panic!("expected a part, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_small_report_goes_whole() {
        let report = Report {
            sent_at_unix_ms: 0,
            spool_id: "s1".into(),
            seq: 1,
            held_from_seq: 0,
            collected_at_unix_ms: 1,
            payload: Some(Payload::Health(HealthSample::default())),
        };
        let messages = report_messages(report.clone());
        assert_eq!(
            messages,
            vec![AgentMessage {
                kind: Some(Kind::Report(report))
            }]
        );
    }

    #[test]
    fn a_large_report_goes_in_parts_that_join_back_into_it() {
        let report = inventory_report(2000);
        let parts = parts(report_messages(report.clone()));
        assert!(parts.len() > 2, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.data.len() <= PART_BYTES));
        assert_eq!(
            parts.iter().map(|p| p.last).collect::<Vec<_>>(),
            (0..parts.len())
                .map(|i| i + 1 == parts.len())
                .collect::<Vec<_>>()
        );
        let mut assembler = Assembler::new(1 << 20);
        let mut joined = None;
        for part in parts {
            assert!(joined.is_none(), "a report came back before its last part");
            joined = assembler.push(part).expect("part");
        }
        assert_eq!(joined, Some(report));
        assert!(!assembler.in_progress());
        assert!(!assembler.in_progress());
    }

    #[test]
    fn parts_past_the_limit_are_refused_and_dropped() {
        let mut parts = parts(report_messages(inventory_report(2000))).into_iter();
        let mut assembler = Assembler::new(PART_BYTES + 10);
        let first = parts.next().expect("a first part");
        assert!(assembler.push(first).expect("first part").is_none());
        let second = parts.next().expect("a second part");
        let error = assembler.push(second).expect_err("past the limit");
        assert_eq!(
            error.to_string(),
            format!(
                "a report sent in parts is larger than {} bytes",
                PART_BYTES + 10
            )
        );
        assert!(!assembler.in_progress());
    }

    #[test]
    fn a_whole_report_between_parts_is_refused() {
        let mut parts = parts(report_messages(inventory_report(2000))).into_iter();
        let mut assembler = Assembler::new(1 << 20);
        let first = parts.next().expect("a first part");
        assembler.push(first).expect("first part");
        let health = Report {
            payload: Some(Payload::Health(HealthSample::default())),
            ..inventory_report(0)
        };
        assert!(matches!(
            assembler.whole(health),
            Err(PartError::Interleaved)
        ));
    }

    #[test]
    fn parts_that_do_not_decode_are_refused() {
        let mut assembler = Assembler::new(1 << 20);
        let error = assembler
            .push(ReportPart {
                data: vec![0xff; 40],
                last: true,
            })
            .expect_err("not a report");
        assert!(
            error
                .to_string()
                .starts_with("the parts of a report do not decode:"),
            "{error}"
        );
        assert!(!assembler.in_progress());
    }

    fn limits(max_packages: u32, max_bytes: u64) -> Limits {
        Limits {
            max_packages,
            max_services: 100,
            max_users: 100,
            max_bytes,
        }
    }

    #[test]
    fn a_report_over_the_counts_is_refused_by_its_key_and_the_stream_goes_on() {
        let mut assembler = Assembler::with_limits(1 << 22, limits(200, 1 << 22));
        let mut answers = Vec::new();
        for part in parts(report_messages(inventory_report(2000))) {
            answers.push(assembler.push(part));
        }
        let last = answers.pop().expect("answers");
        assert!(answers.iter().all(|a| matches!(a, Ok(None))));
        match last {
            Err(PartError::Refused {
                spool_id,
                seq,
                reason,
            }) => {
                assert_eq!((spool_id.as_str(), seq), ("s1", 7));
                assert!(reason.contains("2,000 packages"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!assembler.in_progress());
        // The next report is taken as usual.
        let small = inventory_report(10);
        let mut joined = None;
        for part in parts(report_messages(inventory_report(190))) {
            joined = assembler.push(part).expect("within the limits");
        }
        assert!(joined.is_some());
        assert_eq!(assembler.whole(small.clone()).expect("whole"), small);
        let refused = assembler.whole(inventory_report(201));
        assert!(
            matches!(refused, Err(PartError::Refused { seq: 7, .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn a_report_past_the_byte_limit_is_refused_at_once_and_its_other_parts_skipped() {
        let mut assembler = Assembler::with_limits(1 << 22, limits(1_000_000, 3 * 4096));
        let all = parts(report_messages(inventory_report(3000)));
        let count = all.len();
        let mut refusals = 0;
        for (i, part) in all.into_iter().enumerate() {
            match assembler.push(part) {
                Ok(None) => assert!(assembler.joined_len() <= 3 * 4096),
                Err(PartError::Refused {
                    spool_id,
                    seq,
                    reason,
                }) => {
                    refusals += 1;
                    assert_eq!((spool_id.as_str(), seq, i), ("s1", 7, 3));
                    assert!(reason.contains("limit of 12 KiB"), "{reason}");
                }
                other => panic!("part {i} of {count}: {other:?}"),
            }
        }
        assert_eq!(refusals, 1);
        assert!(!assembler.in_progress());
    }
}
