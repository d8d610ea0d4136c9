//! The durable spool: every report is appended here before it is sent, and
//! leaves only when the collector acknowledges it (D14). It survives a
//! collector that is down for days, `kill -9` in mid-write, reboots and a
//! full disk.
//!
//! # On disk
//! One append-only file, `records.log` in the spool dir. Each record is a
//! 16-byte header (magic `DPSR`, kind, body length, CRC-32 of kind, length
//! and body) and a body:
//! - *meta*: the spool id, the next sequence number and the drop counters;
//!   every file starts with one;
//! - *report*: class, seq, collection time, then the encoded [`Report`];
//! - *resolved*: a seq and why it left (acknowledged, rejected, thinned,
//!   dropped, superseded).
//!
//! On open the file is replayed. A torn or corrupt record is skipped by
//! scanning for the next valid header; what was skipped is logged and the
//! file is rewritten without it. Resolved records and the reports they
//! resolve are removed by compaction: the live reports are copied into a
//! new file that replaces the old one by rename.
//!
//! # fsync policy
//! A report is fsynced (`fdatasync`) before `push` returns, so only durable
//! records are ever sent (D14). Resolutions are not fsynced: losing one in
//! a crash means resending a report the collector already has, which it
//! stores once. A compacted file is fsynced before the rename, and the
//! directory after it.
//!
//! # Bounds
//! Each class has a byte bound. Health samples are thinned first (every
//! other old sample, down to one an hour), then the oldest are dropped. A
//! new inventory snapshot supersedes older unacknowledged ones. Results are
//! never dropped: past their bound a new one is refused. Every drop is
//! counted, and the counts go to the collector. The counts survive a
//! restart: thinned, dropped and superseded reports are counted again from
//! their resolved records on replay; a refused or unwritable report leaves
//! no record, so its count is saved at once in a fresh meta record (the
//! last meta record's counts are the base replay counts on from), or, when
//! the disk refuses that too, in front of the next record written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use deskpulse_proto::v1::Report;
use deskpulse_proto::v1::report::Payload;
use prost::Message;
use serde::{Deserialize, Serialize};
use tracing::warn;

const MAGIC: &[u8; 4] = b"DPSR";
const HEADER: usize = 16;
/// No record is larger; a length beyond it is corruption, not a record.
const MAX_BODY: usize = 64 * 1024 * 1024;
const KIND_META: u8 = 1;
const KIND_REPORT: u8 = 2;
const KIND_RESOLVED: u8 = 3;
/// Health samples are thinned down to this spacing, no further.
const THINNED_GAP_MS: i64 = 3_600_000;
/// Compaction waits until this many bytes are dead.
const COMPACT_AFTER: u64 = 1024 * 1024;
const FILE_NAME: &str = "records.log";

/// What a report is, for its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Health samples.
    Health = 0,
    /// Inventory snapshots and deltas.
    Inventory = 1,
    /// Diagnostic results and user reports: never dropped.
    Results = 2,
}

impl Class {
    const ALL: [Class; 3] = [Class::Health, Class::Inventory, Class::Results];

    fn of(payload: &Payload) -> Self {
        match payload {
            Payload::Health(_) => Class::Health,
            Payload::Inventory(_) | Payload::InventoryDelta(_) => Class::Inventory,
            Payload::UserIssue(_) | Payload::DiagnosticResult(_) => Class::Results,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }
}

/// Why a report left the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The collector stored it.
    Acknowledged = 1,
    /// The collector can never store it.
    Rejected = 2,
    /// A health sample removed to thin old samples.
    Thinned = 3,
    /// The oldest of its class, removed for room.
    DroppedOldest = 4,
    /// An inventory snapshot replaced by a newer one.
    Superseded = 5,
}

impl Resolution {
    fn from_byte(b: u8) -> Option<Self> {
        [
            Self::Acknowledged,
            Self::Rejected,
            Self::Thinned,
            Self::DroppedOldest,
            Self::Superseded,
        ]
        .into_iter()
        .find(|r| *r as u8 == b)
    }
}

/// The byte bound of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Health samples.
    pub health_bytes: u64,
    /// Inventory snapshots and deltas.
    pub inventory_bytes: u64,
    /// Results.
    pub results_bytes: u64,
}

impl Default for Limits {
    /// 64 MiB in all. A health sample takes about 200 bytes, so 16 MiB holds
    /// some 80,000: 55 days at one a minute before any thinning.
    fn default() -> Self {
        Self {
            health_bytes: 16 << 20,
            inventory_bytes: 32 << 20,
            results_bytes: 16 << 20,
        }
    }
}

impl Limits {
    fn of(&self, class: Class) -> u64 {
        match class {
            Class::Health => self.health_bytes,
            Class::Inventory => self.inventory_bytes,
            Class::Results => self.results_bytes,
        }
    }
}

/// Reports the spool gave up, counted since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Health samples thinned out.
    pub health_thinned: u64,
    /// Health samples dropped, oldest first.
    pub health_dropped: u64,
    /// Inventory snapshots replaced by newer ones before being sent.
    pub inventory_superseded: u64,
    /// Results refused because their bound was reached.
    pub results_refused: u64,
    /// Reports lost because the disk refused the write.
    pub unwritable: u64,
}

impl Dropped {
    fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, v) in [
            self.health_thinned,
            self.health_dropped,
            self.inventory_superseded,
            self.results_refused,
            self.unwritable,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Self {
        let at = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        Self {
            health_thinned: at(0),
            health_dropped: at(1),
            inventory_superseded: at(2),
            results_refused: at(3),
            unwritable: at(4),
        }
    }

    fn count(&mut self, why: Resolution) {
        match why {
            Resolution::Thinned => self.health_thinned += 1,
            Resolution::DroppedOldest => self.health_dropped += 1,
            Resolution::Superseded => self.inventory_superseded += 1,
            Resolution::Acknowledged | Resolution::Rejected => {}
        }
    }
}

/// One class's waiting reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDepth {
    /// Reports waiting.
    pub records: u64,
    /// Their size on disk.
    pub bytes: u64,
    /// When the oldest was collected, ms since the Unix epoch.
    pub oldest_unix_ms: Option<i64>,
}

/// What `status` shows of the spool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStats {
    /// Health samples waiting.
    pub health: ClassDepth,
    /// Inventory snapshots waiting.
    pub inventory: ClassDepth,
    /// Results waiting.
    pub results: ClassDepth,
    /// What was given up.
    pub dropped: Dropped,
}

/// A spool failure, one line.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The disk refused a read or write.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A result past its class bound.
    #[error("the spool's results bound ({0} bytes) is reached; the result is refused")]
    ResultsFull(u64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    class: Class,
    offset: u64,
    len: u64,
    collected_at_ms: i64,
}

/// What opening found, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Reports waiting to be sent.
    pub pending: usize,
    /// Bytes of torn or corrupt records skipped.
    pub skipped_bytes: u64,
    /// Runs of bad bytes skipped.
    pub skipped_runs: usize,
    /// The file could not be read as a spool at all, so a new one was made.
    pub recreated: bool,
}

/// The open spool. One process at a time: the state-dir lock (D12).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    file: File,
    spool_id: String,
    next_seq: u64,
    pending: BTreeMap<u64, Entry>,
    bytes: [u64; 3],
    limits: Limits,
    dropped: Dropped,
    file_len: u64,
    live_len: u64,
    /// A count in `dropped` that no record on disk holds yet.
    counters_unsaved: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(kind, len, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn checksum(kind: u8, len: u32, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&len.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A valid record at `at`: (kind, body range end).
fn record_at(data: &[u8], at: usize) -> Option<(u8, usize)> {
    let header = data.get(at..at + HEADER)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let kind = header[4];
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let len_usize = usize::try_from(len).ok()?;
    if len_usize > MAX_BODY {
        return None;
    }
    let end = at + HEADER + len_usize;
    let body = data.get(at + HEADER..end)?;
    (checksum(kind, len, body) == crc).then_some((kind, end))
}

fn meta_body(spool_id: &str, next_seq: u64, dropped: Dropped) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + 8 + 40);
    body.extend_from_slice(spool_id.as_bytes());
    body.extend_from_slice(&next_seq.to_le_bytes());
    body.extend_from_slice(&dropped.to_bytes());
    body
}

fn new_spool_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// Opens a records file for reading and writing. Not in append mode: on
/// Windows that leaves out the right to change existing data, which
/// `set_len` needs to cut a torn record off after a failed write, so each
/// write seeks to the end the spool knows instead.
fn open_records(path: &Path, options: &mut OpenOptions) -> Result<File, SpoolError> {
    // The service's alone, whatever the umask of the process that made it
    // (reports hold diagnostic output and other users' problem reports).
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options.read(true).write(true).open(path).map_err(io(path))
}

/// Creates the spool dir, private to the service, when it is missing.
fn create_dir(dir: &Path) -> Result<(), SpoolError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn stats_of(pending: &BTreeMap<u64, Entry>, dropped: Dropped) -> SpoolStats {
    let mut depth = [ClassDepth::default(); 3];
    for entry in pending.values() {
        let d = &mut depth[entry.class as usize];
        d.records += 1;
        d.bytes += entry.len;
        d.oldest_unix_ms = Some(
            d.oldest_unix_ms
                .map_or(entry.collected_at_ms, |o| o.min(entry.collected_at_ms)),
        );
    }
    SpoolStats {
        health: depth[0],
        inventory: depth[1],
        results: depth[2],
        dropped,
    }
}

/// The raw spool file, empty when there is none yet.
fn read_file(path: &Path) -> Result<Vec<u8>, SpoolError> {
    match std::fs::read(path) {
        Ok(data) => Ok(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// What a spool file holds.
struct Replayed {
    spool_id: Option<String>,
    next_seq: u64,
    dropped: Dropped,
    pending: BTreeMap<u64, Entry>,
    recovery: Recovery,
}

/// Reads every record of a spool file, skipping torn or corrupt ones.
fn replay(data: &[u8]) -> Replayed {
    let mut recovery = Recovery::default();
    let mut spool_id = None;
    let mut next_seq = 1u64;
    let mut dropped = Dropped::default();
    let mut pending = BTreeMap::new();
    let mut at = 0usize;
    while at < data.len() {
        let Some((kind, end)) = record_at(data, at) else {
            // Skip to the next valid header: a torn tail, or a corrupt
            // record with good ones after it.
            let resume = (at + 1..data.len())
                .find(|&i| data[i..].starts_with(MAGIC) && record_at(data, i).is_some())
                .unwrap_or(data.len());
            recovery.skipped_bytes += (resume - at) as u64;
            recovery.skipped_runs += 1;
            at = resume;
            continue;
        };
        let body = &data[at + HEADER..end];
        match kind {
            KIND_META if body.len() >= 40 => {
                if let Ok(id) = std::str::from_utf8(&body[..32]) {
                    spool_id.get_or_insert_with(|| id.to_owned());
                }
                let seq = u64::from_le_bytes(body[32..40].try_into().unwrap_or([0; 8]));
                next_seq = next_seq.max(seq);
                dropped = Dropped::from_bytes(&body[40..]);
            }
            KIND_REPORT if body.len() >= 17 => {
                let class = Class::from_byte(body[0]);
                let seq = u64::from_le_bytes(body[1..9].try_into().unwrap_or([0; 8]));
                let collected = i64::from_le_bytes(body[9..17].try_into().unwrap_or([0; 8]));
                if let Some(class) = class {
                    let len = (end - at) as u64;
                    pending.insert(
                        seq,
                        Entry {
                            class,
                            offset: at as u64,
                            len,
                            collected_at_ms: collected,
                        },
                    );
                    next_seq = next_seq.max(seq + 1);
                }
            }
            KIND_RESOLVED if body.len() >= 9 => {
                let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or([0; 8]));
                if let (Some(_), Some(why)) = (pending.remove(&seq), Resolution::from_byte(body[8]))
                {
                    dropped.count(why);
                }
            }
            _ => {}
        }
        at = end;
    }
    Replayed {
        spool_id,
        next_seq,
        dropped,
        pending,
        recovery,
    }
}

impl Spool {
    /// Opens the spool in `dir`, creating it when absent, and replays it.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Self, Recovery), SpoolError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let data = read_file(&path)?;
        let Replayed {
            spool_id,
            next_seq,
            dropped,
            pending,
            mut recovery,
        } = replay(&data);
        if !data.is_empty() && spool_id.is_none() {
            // Without its meta record the sequence numbers cannot be trusted
            // to be new, so start a new spool id (D14) and keep the reports.
            recovery.recreated = true;
        }
        let mut bytes = [0u64; 3];
        let mut live_len = 0u64;
        for entry in pending.values() {
            bytes[entry.class as usize] += entry.len;
            live_len += entry.len;
        }
        let file = open_records(&path, OpenOptions::new().create(true))?;
        let mut spool = Self {
            dir: dir.to_owned(),
            file,
            spool_id: spool_id.unwrap_or_else(new_spool_id),
            next_seq,
            pending,
            bytes,
            limits,
            dropped,
            file_len: data.len() as u64,
            live_len,
            counters_unsaved: false,
        };
        recovery.pending = spool.pending.len();
        drop(data);
        if spool.file_len == 0 || recovery.skipped_bytes > 0 || recovery.recreated {
            spool.compact()?;
        }
        Ok((spool, recovery))
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stats of the spool in `dir` without opening it for writing: for
    /// `status` while no service runs.
    pub fn inspect(dir: &Path) -> Result<SpoolStats, SpoolError> {
        let replayed = replay(&read_file(&dir.join(FILE_NAME))?);
        Ok(stats_of(&replayed.pending, replayed.dropped))
    }

    /// The random id of this spool (D14).
    pub fn spool_id(&self) -> &str {
        &self.spool_id
    }

    fn append(&mut self, record: &[u8], sync: bool) -> Result<u64, SpoolError> {
        if self.counters_unsaved {
            self.save_counters()?;
        }
        self.append_raw(record, sync)
    }

    /// Writes the drop counts that no record holds yet, durably, as a meta
    /// record: replay takes the last meta record's counts.
    fn save_counters(&mut self) -> Result<(), SpoolError> {
        let meta = frame(
            KIND_META,
            &meta_body(&self.spool_id, self.next_seq, self.dropped),
        );
        self.append_raw(&meta, true)?;
        self.counters_unsaved = false;
        Ok(())
    }

    /// Counts a report lost without a record of its own, and saves the
    /// count if the disk lets it.
    fn count_lost(&mut self, count: impl FnOnce(&mut Dropped)) {
        count(&mut self.dropped);
        self.counters_unsaved = true;
        if let Err(error) = self.save_counters() {
            warn!(%error, "spool: cannot save the drop counts yet; they go with the next record");
        }
    }

    fn append_raw(&mut self, record: &[u8], sync: bool) -> Result<u64, SpoolError> {
        let offset = self.file_len;
        let path = self.path();
        let written = self
            .file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.write_all(record))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            // Never leave a torn record behind a failed write (a full disk).
            let _ = self.file.set_len(offset);
            return Err(io(&path)(error));
        }
        self.file_len += record.len() as u64;
        Ok(offset)
    }

    /// Appends a report durably and returns its seq. Older inventory
    /// snapshots are superseded, and health samples are thinned or dropped
    /// to stay within bounds.
    pub fn push(&mut self, payload: Payload, collected_at_ms: i64) -> Result<u64, SpoolError> {
        let class = Class::of(&payload);
        let seq = self.next_seq;
        let report = Report {
            sent_at_unix_ms: 0,
            spool_id: String::new(),
            seq,
            held_from_seq: 0,
            collected_at_unix_ms: collected_at_ms,
            payload: Some(payload),
        };
        let mut body = Vec::with_capacity(17 + report.encoded_len());
        body.push(class as u8);
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&collected_at_ms.to_le_bytes());
        report.encode(&mut body).unwrap_or_default();
        let record = frame(KIND_REPORT, &body);
        let len = record.len() as u64;
        if class == Class::Results && self.bytes[class as usize] + len > self.limits.of(class) {
            self.count_lost(|d| d.results_refused += 1);
            return Err(SpoolError::ResultsFull(self.limits.of(class)));
        }
        let offset = match self.append(&record, true) {
            Ok(offset) => offset,
            Err(error) => {
                self.count_lost(|d| d.unwritable += 1);
                return Err(error);
            }
        };
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Entry {
                class,
                offset,
                len,
                collected_at_ms,
            },
        );
        self.bytes[class as usize] += len;
        self.live_len += len;
        match class {
            Class::Inventory => {
                let older: Vec<u64> = self
                    .pending
                    .range(..seq)
                    .filter(|(_, e)| e.class == Class::Inventory)
                    .map(|(s, _)| *s)
                    .collect();
                for old in older {
                    self.resolve(old, Resolution::Superseded)?;
                }
            }
            Class::Health => self.make_room_for_health()?,
            Class::Results => {}
        }
        Ok(seq)
    }

    fn make_room_for_health(&mut self) -> Result<(), SpoolError> {
        let limit = self.limits.health_bytes;
        while self.bytes[Class::Health as usize] > limit {
            let health: Vec<(u64, i64)> = self
                .pending
                .iter()
                .filter(|(_, e)| e.class == Class::Health)
                .map(|(s, e)| (*s, e.collected_at_ms))
                .collect();
            // Thin the older half: drop every other sample while the spacing
            // stays under an hour.
            let mut thinned = Vec::new();
            let mut last_kept: Option<i64> = None;
            let mut drop_next = false;
            for &(seq, at) in &health[..health.len() / 2] {
                match last_kept {
                    Some(kept) if drop_next && at - kept < THINNED_GAP_MS => {
                        thinned.push(seq);
                        drop_next = false;
                    }
                    _ => {
                        last_kept = Some(at);
                        drop_next = true;
                    }
                }
            }
            if thinned.is_empty() {
                let Some(&(oldest, _)) = health.first() else {
                    return Ok(());
                };
                self.resolve(oldest, Resolution::DroppedOldest)?;
                continue;
            }
            for seq in thinned {
                if self.bytes[Class::Health as usize] <= limit {
                    break;
                }
                self.resolve(seq, Resolution::Thinned)?;
            }
        }
        Ok(())
    }

    /// Removes a report for a reason. False when it was not waiting (a
    /// second acknowledgement, or another spool's id).
    pub fn remove(
        &mut self,
        spool_id: &str,
        seq: u64,
        why: Resolution,
    ) -> Result<bool, SpoolError> {
        if spool_id != self.spool_id || !self.pending.contains_key(&seq) {
            return Ok(false);
        }
        self.resolve(seq, why)?;
        Ok(true)
    }

    fn resolve(&mut self, seq: u64, why: Resolution) -> Result<(), SpoolError> {
        let Some(entry) = self.pending.remove(&seq) else {
            return Ok(());
        };
        self.bytes[entry.class as usize] -= entry.len;
        self.live_len -= entry.len;
        self.dropped.count(why);
        let mut body = seq.to_le_bytes().to_vec();
        body.push(why as u8);
        self.append(&frame(KIND_RESOLVED, &body), false)?;
        let dead = self.file_len - self.live_len;
        if dead > COMPACT_AFTER && dead > self.live_len {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the live reports, behind a fresh meta
    /// record.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut out = open_records(&tmp, OpenOptions::new().create(true).truncate(true))?;
        let meta = frame(
            KIND_META,
            &meta_body(&self.spool_id, self.next_seq, self.dropped),
        );
        out.write_all(&meta).map_err(io(&tmp))?;
        let mut offset = meta.len() as u64;
        let mut moved = BTreeMap::new();
        let mut buf = Vec::new();
        for (seq, entry) in &self.pending {
            buf.resize(usize::try_from(entry.len).unwrap_or(0), 0);
            self.file
                .seek(SeekFrom::Start(entry.offset))
                .and_then(|_| self.file.read_exact(&mut buf))
                .map_err(io(&path))?;
            out.write_all(&buf).map_err(io(&tmp))?;
            moved.insert(*seq, Entry { offset, ..*entry });
            offset += entry.len;
        }
        out.sync_all().map_err(io(&tmp))?;
        // Windows' classic rename (Wine's, and any volume without POSIX
        // rename semantics) refuses to replace a file that is open: Access
        // denied. So the old file is closed first, and the new one, which
        // may be renamed while open, is already the spool's.
        self.file = out;
        if let Err(error) = std::fs::rename(&tmp, &path) {
            // The old file is whole: go on with it, as if never compacted.
            self.file = open_records(&path, &mut OpenOptions::new())?;
            return Err(io(&path)(error));
        }
        sync_dir(&self.dir);
        self.counters_unsaved = false;
        self.pending = moved;
        self.file_len = offset;
        self.live_len = offset - meta.len() as u64;
        Ok(())
    }

    /// Up to `max` waiting reports with a seq above `after`, in order, read
    /// back from disk, each stamped with the lowest seq the spool holds now.
    pub fn read_after(&mut self, after: u64, max: usize) -> Result<Vec<Report>, SpoolError> {
        let path = self.path();
        let held_from = self.pending.keys().next().copied().unwrap_or(self.next_seq);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for entry in self.pending.range(after + 1..).take(max).map(|(_, e)| *e) {
            buf.resize(usize::try_from(entry.len).unwrap_or(0), 0);
            self.file
                .seek(SeekFrom::Start(entry.offset))
                .and_then(|_| self.file.read_exact(&mut buf))
                .map_err(io(&path))?;
            let decoded = buf
                .get(HEADER + 17..)
                .and_then(|bytes| Report::decode(bytes).ok());
            if let Some(mut report) = decoded {
                report.spool_id.clone_from(&self.spool_id);
                report.held_from_seq = held_from;
                out.push(report);
            }
        }
        Ok(out)
    }

    /// The seq the next report will get: every lower one was assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// True when `seq` still waits.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending.contains_key(&seq)
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Depth per class and drop counts.
    pub fn stats(&self) -> SpoolStats {
        stats_of(&self.pending, self.dropped)
    }

    /// Logs what opening found, when it was not a clean start.
    pub fn log_recovery(recovery: &Recovery) {
        if recovery.skipped_bytes > 0 {
            warn!(
                bytes = recovery.skipped_bytes,
                runs = recovery.skipped_runs,
                kept = recovery.pending,
                "spool: skipped torn or corrupt records; the intact ones are kept"
            );
        }
        if recovery.recreated {
            warn!("spool: its header was unreadable, so it continues under a new spool id");
        }
    }
}

#[cfg(test)]
mod tests;
