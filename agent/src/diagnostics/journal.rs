//! The job journal: which diagnostic job ids this agent has started or
//! answered, kept in `STATE/diagnostics/jobs` so it outlives a restart.
//!
//! Why: the collector delivers a queued request again whenever the agent
//! reconnects until it holds the result, and a result waits in the spool
//! until acknowledged. Without a record, a request delivered again after a
//! disconnect (or after the agent restarted mid-run) would run twice, and a
//! state-changing one (restart a service) would change the PC twice. So a
//! job's start is written and fsynced before it runs, and its end once its
//! result is in the spool. A job id in the journal is never run again: its
//! answer is the result already spooled, or, when the agent stopped while
//! it ran, a FAILED result made at the next start.
//!
//! The file is text, one `S <job> <diagnostic>` or `F <job>` per line (job
//! ids are checked to `[A-Za-z0-9_-]`), and is rewritten to the last
//! [`KEEP`] ids when it grows past four times that. A request for a job id
//! older than that has long expired (ids are kept for far more than a
//! request's 24 h TTL at any plausible rate), so the expiry check refuses it.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::warn;

/// Job ids remembered.
pub const KEEP: usize = 1024;

/// The journal of one state dir.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Job id → the diagnostic while it runs, `None` once answered.
    jobs: HashMap<String, Option<String>>,
    order: VecDeque<String>,
    lines: usize,
}

impl Journal {
    /// Opens (or starts) the journal in `dir`. Returns the jobs that
    /// started and never finished, as (job id, diagnostic), and marks them
    /// finished: the caller answers them. An unreadable journal starts
    /// empty, with a warning.
    pub fn open(dir: &Path) -> (Self, Vec<(String, String)>) {
        let path = dir.join("jobs");
        let mut journal = Self {
            path,
            jobs: HashMap::new(),
            order: VecDeque::new(),
            lines: 0,
        };
        match std::fs::read_to_string(&journal.path) {
            Ok(mut text) => {
                // A last line without its newline is a write the crash cut
                // short. Its fsync never returned, so that job never ran:
                // the line is dropped, and cut from the file so the next
                // line starts clean.
                if !text.is_empty() && !text.ends_with('\n') {
                    let keep = text.rfind('\n').map_or(0, |i| i + 1);
                    text.truncate(keep);
                    if let Err(error) = OpenOptions::new()
                        .write(true)
                        .open(&journal.path)
                        .and_then(|f| f.set_len(keep as u64))
                    {
                        warn!(%error, "cannot cut the torn end off the diagnostics journal");
                    }
                }
                for line in text.lines() {
                    journal.lines += 1;
                    let mut parts = line.split(' ');
                    match (parts.next(), parts.next()) {
                        (Some("S"), Some(job)) if super::valid_job_id(job) => {
                            let diagnostic = parts.next().unwrap_or("").to_owned();
                            journal.remember(job, Some(diagnostic));
                        }
                        (Some("F"), Some(job)) if super::valid_job_id(job) => {
                            journal.remember(job, None);
                        }
                        // Garbage: skipped.
                        _ => {}
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                warn!(%error, path = %journal.path.display(), "cannot read the diagnostics journal; starting a new one");
            }
        }
        let interrupted: Vec<(String, String)> = journal
            .order
            .iter()
            .filter_map(|job| match journal.jobs.get(job) {
                Some(Some(diagnostic)) => Some((job.clone(), diagnostic.clone())),
                _ => None,
            })
            .collect();
        for (job, _) in &interrupted {
            if let Err(error) = journal.finished(job) {
                warn!(%error, "cannot write the diagnostics journal");
            }
        }
        (journal, interrupted)
    }

    fn remember(&mut self, job: &str, running: Option<String>) {
        // Once answered, always answered.
        if let Some(known) = self.jobs.get_mut(job) {
            if running.is_none() {
                *known = None;
            }
            return;
        }
        {
            self.jobs.insert(job.to_owned(), running);
            self.order.push_back(job.to_owned());
            while self.order.len() > KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.jobs.remove(&old);
                }
            }
        }
    }

    /// True when `job` was started or answered before.
    pub fn contains(&self, job: &str) -> bool {
        self.jobs.contains_key(job)
    }

    /// Records a start, fsynced before the job runs.
    pub fn started(&mut self, job: &str, diagnostic: &str) -> std::io::Result<()> {
        self.append(&format!("S {job} {diagnostic}\n"))?;
        self.remember(job, Some(diagnostic.to_owned()));
        Ok(())
    }

    /// Records that `job` is answered.
    pub fn finished(&mut self, job: &str) -> std::io::Result<()> {
        self.append(&format!("F {job}\n"))?;
        self.remember(job, None);
        if self.lines > KEEP * 4 {
            self.compact()?;
        }
        Ok(())
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the file with the remembered ids only, then renames it over
    /// the old one, so a crash leaves either file whole.
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("new");
        let mut text = String::new();
        for job in &self.order {
            if let Some(Some(diagnostic)) = self.jobs.get(job) {
                text.push_str(&format!("S {job} {diagnostic}\n"));
            } else {
                text.push_str(&format!("F {job}\n"));
            }
        }
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.lines = self.order.len();
        Ok(())
    }
}
