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
    /// The joined parts grew past the limit before the last one.
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
}

/// Joins one stream's report parts back into reports.
#[derive(Debug)]
pub struct Assembler {
    joined: Vec<u8>,
    limit: usize,
}

impl Assembler {
    /// An assembler that refuses reports larger than `limit` bytes encoded.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            joined: Vec::new(),
            limit,
        }
    }

    /// True while a report's parts have started and not finished.
    #[must_use]
    pub fn in_progress(&self) -> bool {
        !self.joined.is_empty()
    }

    /// Checks that a whole report may arrive now.
    ///
    /// # Errors
    /// [`PartError::Interleaved`] while another report's parts are unfinished.
    pub fn whole(&self) -> Result<(), PartError> {
        if self.in_progress() {
            Err(PartError::Interleaved)
        } else {
            Ok(())
        }
    }

    /// Adds a part: the finished report when it was the last.
    ///
    /// # Errors
    /// When the report grows past the limit or its joined parts do not
    /// decode; the parts so far are dropped either way.
    pub fn push(&mut self, part: ReportPart) -> Result<Option<Report>, PartError> {
        if self.joined.len() + part.data.len() > self.limit {
            self.joined = Vec::new();
            return Err(PartError::TooLarge { limit: self.limit });
        }
        self.joined.extend_from_slice(&part.data);
        if !part.last {
            return Ok(None);
        }
        // Taken, not cleared: the buffer is as large as the report was.
        let joined = std::mem::take(&mut self.joined);
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
        assembler.whole().expect("a whole report may follow");
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
        assert!(matches!(assembler.whole(), Err(PartError::Interleaved)));
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
}
