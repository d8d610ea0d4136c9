//! Collections off the loop, against a fixture root whose first file each
//! collection reads is a FIFO the test holds open: the job waits in its
//! read until the test writes, so "while it runs" needs no timing. Ticks
//! and reports meanwhile join the job under way; nothing piles up.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Collected, Collection};
use crate::collect::HealthSettings;
use crate::issue::IssueRequest;

/// A FIFO at `root/relative`, held open for writing so the reader's open
/// succeeds and its read waits.
struct StuckFile {
    path: PathBuf,
    writer: File,
}

impl StuckFile {
    fn new(root: &Path, relative: &str) -> Self {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        // Opening a FIFO for reading and writing never blocks on Linux.
        let writer = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the FIFO");
        Self { path, writer }
    }

    /// How many descriptors of this process have the FIFO open: one is the
    /// test's own, each more is a reader.
    fn opened(&self) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == self.path))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Polls until a collection has the FIFO open.
    async fn wait_for_reader(&self) {
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while self.opened() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "a collection opens {}", self.path.display());
    }

    /// Gives the reader `content` and puts a plain file with it in place.
    fn release(mut self, content: &str) {
        let mut plain = self.path.clone().into_os_string();
        plain.push(".plain");
        std::fs::write(&plain, content).expect("write");
        std::fs::rename(&plain, &self.path).expect("rename over the FIFO");
        self.writer.write_all(content.as_bytes()).expect("write");
    }
}

fn report(text: &str) -> (IssueRequest, oneshot::Receiver<Result<bool, String>>) {
    let (reply, answer) = oneshot::channel();
    let request = IssueRequest {
        text: text.to_owned(),
        os_user: "alice".to_owned(),
        reported_at_unix_ms: None,
        report_key: crate::issue::new_report_key(),
        reporter_email: None,
        reply,
    };
    (request, answer)
}

/// A second result within half a second would be a second job: after the
/// release nothing blocks, so one would finish at once.
async fn nothing_more(collection: &mut Collection) {
    let more = tokio::time::timeout(Duration::from_millis(500), collection.finished()).await;
    assert!(more.is_err(), "a second job ran: {more:?}");
}

#[tokio::test]
async fn a_tick_and_reports_during_a_stuck_sample_share_it() {
    let root = tempfile::tempdir().expect("temp root");
    let root = root.path().canonicalize().expect("canonical");
    let loadavg = StuckFile::new(&root, "proc/loadavg");
    let mut collection = Collection::new(root.clone(), HealthSettings::default());

    let (first, _first_answer) = report("the printer is jammed");
    collection.sample_for_issue(first);
    loadavg.wait_for_reader().await;
    collection.start_sample();
    let (second, _second_answer) = report("and the screen flickers");
    collection.sample_for_issue(second);
    assert_eq!(loadavg.opened(), 2, "one reader: no second sample started");

    loadavg.release("3.25 2.50 1.75 1/100 4242\n");
    let collected = tokio::time::timeout(Duration::from_secs(60), collection.finished())
        .await
        .expect("the sample finishes once its file gives way");
    let Collected::Health {
        sample,
        periodic,
        issues,
    } = collected
    else {
        panic!("a health sample, got {collected:?}");
    };
    assert_eq!(sample.load_1m, 3.25);
    assert!(periodic, "the tick shares the sample");
    let texts: Vec<&str> = issues.iter().map(|i| i.text.as_str()).collect();
    assert_eq!(texts, ["the printer is jammed", "and the screen flickers"]);
    nothing_more(&mut collection).await;

    // The sampler came back: the next sample reads the plain file.
    collection.start_sample();
    let Collected::Health { sample, .. } = collection.finished().await else {
        panic!("a health sample");
    };
    assert_eq!(sample.load_1m, 3.25);
}

#[tokio::test]
async fn ticks_during_a_stuck_inventory_start_no_second_one() {
    let root = tempfile::tempdir().expect("temp root");
    let root = root.path().canonicalize().expect("canonical");
    let os_release = StuckFile::new(&root, "etc/os-release");
    let mut collection = Collection::new(root.clone(), HealthSettings::default());

    collection.start_inventory();
    os_release.wait_for_reader().await;
    collection.start_inventory();
    collection.start_inventory();
    assert_eq!(os_release.opened(), 2, "one reader: no second inventory");

    os_release.release("NAME=\"Slowpoke Linux\"\nVERSION_ID=\"1\"\n");
    let collected = tokio::time::timeout(Duration::from_secs(60), collection.finished())
        .await
        .expect("the inventory finishes once its file gives way");
    let Collected::Inventory(snapshot) = collected else {
        panic!("an inventory, got {collected:?}");
    };
    assert_eq!(
        snapshot.os.as_ref().map(|os| os.name.as_str()),
        Some("Slowpoke Linux")
    );
    nothing_more(&mut collection).await;
}
