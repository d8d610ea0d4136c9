//! Suggestion quality (issue 23): a knowledge base of 1,000 resolved
//! tickets is seeded through the store's real paths (employee reports,
//! health samples that fire the default rules, inventories whose changes
//! name the software), each of one of 32 known problems, resolved by a
//! technician in one of the problem's own wordings; beside them, rule
//! tickets that only recovered by themselves, which must never be
//! suggested. Then new tickets of known problems open (held-out wordings,
//! other context, unrelated package upgrades on their hosts as noise), and
//! the bench prints the share whose true earlier resolution (a ticket of
//! the same problem) is the first suggestion, and among the first three,
//! and what opening a ticket costs: the `store_reports` call that opens
//! it, with the knowledge base empty and with it seeded.
//!
//! `cargo bench -p deskpulse-collector --bench suggestions`
//! Sizes: DESKPULSE_BENCH_KB (default 1000), DESKPULSE_BENCH_QUERIES
//! (default 300), DESKPULSE_BENCH_AUTO (default 200);
//! DESKPULSE_BENCH_STORE_URL for another store (a PostgreSQL database URL),
//! else a SQLite file in a temporary directory. `RUST_LOG=sqlx::query=debug`
//! prints every statement with its time, for finding where opening spends it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deskpulse_collector::rules::model::Metric;
use deskpulse_collector::store::{
    self, AuditEntry, HealthReading, IncomingReport, ReportPayload, SharedStore, TicketChange,
    TicketQuery,
};
use deskpulse_proto::v1::{Inventory, OsInfo, Package, SoftwareInfo};

mod support;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator: the same KB and queries every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// How a problem shows: a rule firing on a reading, or an employee's words.
#[derive(Clone, Copy)]
enum Shows {
    /// A rule's metric over its threshold, on a subject.
    Rule(Metric, &'static str, f64),
    /// An employee's report.
    Report,
}

/// One known problem: how it shows, the package whose upgrade comes
/// before it (if any), how people describe it (the last wording is held
/// out of the knowledge base) and how technicians wrote up its fix.
struct Problem {
    shows: Shows,
    software: Option<&'static str>,
    symptoms: &'static [&'static str],
    fixes: &'static [&'static str],
}

const DISK: Metric = Metric::DiskUsedPercent;
const SERVICE: Metric = Metric::ServiceDown;
const CPU: Metric = Metric::CpuPercent;
const MEMORY: Metric = Metric::MemoryUsedPercent;

fn problems() -> Vec<Problem> {
    let rule = |m, s, v| Shows::Rule(m, s, v);
    vec![
        Problem {
            shows: rule(DISK, "/", 96.0),
            software: Some("docker.io"),
            symptoms: &[],
            fixes: &[
                "Pruned unused docker images and volumes (docker system prune -a)",
                "docker had kept every old image layer; ran docker image prune and set up a weekly prune",
                "Freed 40 GB by removing stopped docker containers and dangling images",
            ],
        },
        Problem {
            shows: rule(DISK, "/", 97.0),
            software: Some("rsyslog"),
            symptoms: &[],
            fixes: &[
                "rsyslog wrote a message loop into /var/log/syslog; truncated the log, fixed the filter and restarted rsyslog",
                "syslog grew to 30 GB after the rsyslog update; rotated logs and restarted rsyslog",
            ],
        },
        Problem {
            shows: rule(DISK, "/", 95.0),
            software: Some("apport"),
            symptoms: &[],
            fixes: &[
                "Removed crash dumps from /var/crash written by apport",
                "apport kept core dumps of a crashing app; cleared /var/crash and disabled apport",
            ],
        },
        Problem {
            shows: rule(DISK, "/home", 98.0),
            software: None,
            symptoms: &[],
            fixes: &[
                "Home folder full of ISO downloads; moved them to the file server",
                "User kept video recordings in Downloads; archived them to the NAS and emptied the trash",
            ],
        },
        Problem {
            shows: rule(DISK, "/var", 96.0),
            software: Some("snapd"),
            symptoms: &[],
            fixes: &[
                "Old snap revisions filled /var/lib/snapd; set refresh.retain=2 and removed disabled snaps",
                "snapd kept three revisions of every snap; removed the disabled revisions",
            ],
        },
        Problem {
            shows: rule(SERVICE, "cups", 1.0),
            software: Some("cups"),
            symptoms: &[],
            fixes: &[
                "cups failed after its update with the old printer driver; reinstalled the driver and restarted cups",
                "Printer driver PPD incompatible with the new cups; installed the vendor driver again",
            ],
        },
        Problem {
            shows: rule(SERVICE, "sshd", 1.0),
            software: Some("openssh-server"),
            symptoms: &[],
            fixes: &[
                "sshd_config carried an option the new openssh-server rejects; removed it and restarted sshd",
                "sshd would not start after the upgrade: deprecated option in sshd_config, fixed",
            ],
        },
        Problem {
            shows: rule(SERVICE, "docker", 1.0),
            software: Some("containerd"),
            symptoms: &[],
            fixes: &[
                "The containerd upgrade broke the docker daemon; pinned containerd to the previous version",
                "docker would not start with the new containerd; downgraded containerd and held the package",
            ],
        },
        Problem {
            shows: rule(SERVICE, "NetworkManager", 1.0),
            software: None,
            symptoms: &[],
            fixes: &[
                "NetworkManager crashed on a broken VPN connection profile; deleted the profile and restarted it",
                "Removed the corrupt connection file under system-connections; NetworkManager runs again",
            ],
        },
        Problem {
            shows: rule(CPU, "", 99.0),
            software: Some("tracker-miner-fs"),
            symptoms: &[],
            fixes: &[
                "tracker-miner-fs was indexing in a loop; reset the tracker database (tracker3 reset -s -r)",
                "GNOME file indexer tracker-miner-fs stuck at 100% CPU; excluded the build folders from indexing",
            ],
        },
        Problem {
            shows: rule(CPU, "", 98.0),
            software: Some("clamav"),
            symptoms: &[],
            fixes: &[
                "clamav full scan ran during working hours; moved the scheduled scan to the night",
                "Antivirus clamav scan every hour by mistake; set it to daily at 02:00",
            ],
        },
        Problem {
            shows: rule(CPU, "", 99.0),
            software: Some("chromium"),
            symptoms: &[],
            fixes: &[
                "A chromium extension was mining; removed the extension and reset the browser profile",
                "Malicious browser extension in chromium used all cores; removed it and blocked it by policy",
            ],
        },
        Problem {
            shows: rule(MEMORY, "", 97.0),
            software: Some("firefox"),
            symptoms: &[],
            fixes: &[
                "firefox leaked memory with the new version; upgraded firefox to the fixed release",
                "Memory leak in firefox with many tabs; updated firefox and disabled the leaking add-on",
            ],
        },
        Problem {
            shows: rule(MEMORY, "", 96.0),
            software: Some("openjdk-17-jre"),
            symptoms: &[],
            fixes: &[
                "The IDE's Java heap was set to 12 GB; lowered -Xmx in the IDE settings",
                "openjdk application started with a huge heap; set Xmx to 4g",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Outlook crashes every time I open the calendar",
                "outlook closes by itself when I click on calendar",
                "Mail program keeps crashing, calendar view never loads",
                "Outlook not responding then shuts down",
                "my outlook dies as soon as i go to the calendar tab",
            ],
            fixes: &[
                "Repaired the Office installation and rebuilt the Outlook profile",
                "Corrupt Outlook profile: created a new profile and re-added the mailbox",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "VPN disconnects every hour",
                "The VPN keeps dropping, I have to reconnect all the time",
                "cannot stay connected to the VPN from home",
                "vpn connection lost after about 60 minutes",
                "I lose the VPN tunnel each hour and my calls drop",
            ],
            fixes: &[
                "Renewed the expired VPN client certificate",
                "VPN certificate had expired, issued a new one and reinstalled the VPN profile",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Printer prints blank pages",
                "pages come out of the printer empty",
                "printouts are very faint and streaky",
                "the printer on floor 3 only prints white pages",
                "printing gives empty sheets",
            ],
            fixes: &[
                "Replaced the empty toner cartridge",
                "Toner was out; put in a new cartridge and printed a test page",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Wifi drops in the meeting room",
                "wireless keeps disconnecting in conference room B",
                "no wifi signal during meetings, laptop loses network",
                "WLAN connection unstable in meeting rooms",
                "my laptop loses the wireless network when I move to the meeting room",
            ],
            fixes: &[
                "Updated the wifi driver and the iwlwifi firmware",
                "Old wireless driver roamed badly between access points; updated iwlwifi firmware",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "No sound in Teams calls",
                "people cannot hear me in teams meetings",
                "Teams audio is silent, headset works elsewhere",
                "microphone not working in Teams",
                "nobody hears me on teams and I hear nothing",
            ],
            fixes: &[
                "Selected the headset as audio device in Teams and updated the headset firmware",
                "Teams used the wrong microphone; set the headset as default device",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Excel takes minutes to open files",
                "spreadsheets open very slowly in excel",
                "Excel freezes when opening any workbook",
                "excel is extremely slow since monday",
                "opening an xlsx file hangs excel for two minutes",
            ],
            fixes: &[
                "Disabled the slow COM add-in in Excel",
                "An Excel add-in scanned every workbook on open; disabled the add-in",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "My password expired and I cannot log in",
                "cannot sign in, it says my password has expired",
                "account locked after the password change",
                "login refused, password expired message",
                "I am locked out of my account this morning",
            ],
            fixes: &[
                "Reset the password and unlocked the account in Active Directory",
                "Account was locked after failed logins; unlocked it and set a temporary password",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Screen flickers all the time",
                "the external monitor keeps flickering and going black",
                "display blinks on and off",
                "monitor flashes black every few seconds",
                "my second screen flickers when I move the laptop",
            ],
            fixes: &[
                "Replaced the worn display cable",
                "Loose DisplayPort cable; replaced it with a new cable",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Laptop does not charge",
                "battery stays at 0% when plugged in",
                "the charger light is off and the laptop won't charge",
                "power adapter not charging the notebook",
                "my notebook runs on battery even with the charger",
            ],
            fixes: &[
                "Replaced the faulty power adapter",
                "Charger was broken, swapped the power supply",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Shared drive S: is missing",
                "network drive not mapped after restart",
                "cannot access the team share on the file server",
                "the S drive disappeared from explorer",
                "mapped drive shows a red cross and will not open",
            ],
            fixes: &[
                "Re-mapped the network drive with the user's credentials",
                "Saved credentials for the file server were stale; removed them and mapped the share again",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Certificate error on the intranet site",
                "browser says the intranet connection is not private",
                "intranet page shows a security warning about the certificate",
                "cannot open the HR portal, certificate not trusted",
                "the company wiki gives an untrusted certificate error",
            ],
            fixes: &[
                "Installed the company root CA in the browser's certificate store",
                "The internal CA was missing from the trust store; deployed the root certificate",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Clock shows the wrong time",
                "the time on my PC is 10 minutes off",
                "calendar invites appear at the wrong hour, clock is wrong",
                "system time drifts every day",
                "my computer time is wrong and meetings show late",
            ],
            fixes: &[
                "Enabled time synchronisation (timedatectl set-ntp true)",
                "NTP was off; turned network time sync back on",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Camera not detected in video calls",
                "webcam shows a black image",
                "no camera found when I join a meeting",
                "the laptop camera stopped working",
                "video is black in every meeting app",
            ],
            fixes: &[
                "Enabled the camera in the BIOS privacy settings",
                "Camera privacy switch was on in firmware settings; turned it off",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Laptop gets very hot and the fan is loud",
                "fan noise is constant and the notebook is burning hot",
                "computer overheats and turns off",
                "the fan spins at full speed all day",
                "my laptop is too hot to touch and very noisy",
            ],
            fixes: &[
                "Cleaned the dust out of the fan and renewed the thermal paste",
                "Blocked air vent and dusty fan; cleaned it",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: Some("zoom"),
            symptoms: &[
                "Zoom crashes when I share my screen",
                "zoom closes as soon as screen sharing starts",
                "screen share in zoom freezes the app",
                "zoom quits during meetings since the update",
                "the zoom client crashes on share screen",
            ],
            fixes: &[
                "The new zoom release crashes on Wayland screen sharing; rolled zoom back to the previous version",
                "zoom update broke screen sharing; installed the previous zoom package and held it",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: Some("libreoffice-writer"),
            symptoms: &[
                "Documents lose their formatting when I open them",
                "my docx files look broken, fonts are wrong",
                "Word files open with wrong layout",
                "the text editor shows boxes instead of letters",
                "since yesterday documents have strange fonts",
            ],
            fixes: &[
                "libreoffice update lost the Microsoft core fonts; reinstalled ttf-mscorefonts",
                "Missing fonts after the libreoffice upgrade; installed the core fonts again",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Keyboard keys do not work",
                "some letters on my keyboard stopped typing",
                "the space bar and E key are dead",
                "keyboard types wrong characters",
                "several keys on the laptop keyboard don't respond",
            ],
            fixes: &[
                "Replaced the keyboard",
                "Coffee spill under the keys; replaced the keyboard",
            ],
        },
        Problem {
            shows: Shows::Report,
            software: None,
            symptoms: &[
                "Email attachments are blocked",
                "cannot send a large file by mail, it bounces",
                "my email with the presentation attached never arrives",
                "attachment too big error when sending",
                "mail with a zip file is rejected",
            ],
            fixes: &[
                "Explained the 25 MB size limit and shared the file through a file server link",
                "Attachment was over the mail size limit; sent a share link instead",
            ],
        },
    ]
}

const OPENERS: &[&str] = &["", "", "Hi, ", "Hello IT, ", "Good morning, ", "Help: "];
const CONTEXTS: &[&str] = &[
    "",
    "",
    " since this morning",
    " after the update yesterday",
    " in building 2",
    " when working from home",
    " since I came back from holiday",
    " again today",
];
const CLOSERS: &[&str] = &[
    "",
    "",
    ". Please help",
    ". Urgent, I have a deadline",
    ". Thanks",
    ". Can someone look at it?",
];
/// Packages upgraded on a host for reasons of their own: the noise in the
/// software signal.
const NOISE_PACKAGES: &[&str] = &[
    "libc6",
    "tzdata",
    "curl",
    "libssl3",
    "openssl",
    "python3",
    "systemd",
    "bash",
    "vim",
    "git",
    "linux-firmware",
    "ca-certificates",
    "gnome-shell",
    "libreoffice-calc",
    "sudo",
];

fn report_text(rng: &mut Rng, symptom: &str) -> String {
    format!(
        "{}{}{}{}",
        rng.pick(OPENERS),
        symptom,
        rng.pick(CONTEXTS),
        rng.pick(CLOSERS)
    )
}

fn health(
    host: &str,
    seq: u64,
    at_ms: i64,
    metric: Metric,
    subject: &str,
    value: f64,
) -> IncomingReport {
    let readings = vec![(metric, subject.to_owned(), value)];
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "health".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::Health {
            encoded: Vec::new(),
            free: Vec::new(),
            reading: HealthReading {
                cpu_percent: 10.0,
                memory_used_percent: 40.0,
                disk_used_max_percent: 50.0,
                temperature_max_celsius: None,
            },
            readings,
        },
    }
}

fn issue(host: &str, seq: u64, at_ms: i64, text: &str) -> IncomingReport {
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "issues".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::UserIssue {
            text: text.to_owned(),
            os_user: "employee".into(),
            report_key: None,
            health: serde_json::json!({}),
            reporter_email: None,
        },
    }
}

fn inventory(host: &str, seq: u64, at_ms: i64, packages: &[(&str, &str)]) -> IncomingReport {
    let inv = Inventory {
        os: Some(OsInfo {
            hostname: "pc".into(),
            ..OsInfo::default()
        }),
        software: Some(SoftwareInfo {
            packages: packages
                .iter()
                .map(|(name, version)| Package {
                    ecosystem: "dpkg".into(),
                    name: (*name).into(),
                    version: (*version).into(),
                    arch: "amd64".into(),
                    ..Package::default()
                })
                .collect(),
            ..SoftwareInfo::default()
        }),
        ..Inventory::default()
    };
    IncomingReport {
        host_id: host.to_owned(),
        spool_id: "inventory".into(),
        seq,
        held_from_seq: 0,
        collected_at_ms: at_ms,
        payload: ReportPayload::Inventory {
            facts: Box::new(deskpulse_collector::facts::inventory_facts(&inv)),
            inventory: Box::new(inv),
            hostname: "pc".into(),
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
        },
    }
}

/// The newest ticket of `host`.
async fn newest(store: &SharedStore, host: &str) -> Option<deskpulse_collector::store::TicketRow> {
    store
        .list_tickets(&TicketQuery {
            host_id: Some(host.to_owned()),
            limit: 100,
            ..TicketQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .max_by_key(|t| t.id)
}

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// A fixed "now" for the queries; the knowledge base is older.
const NOW: i64 = 1_796_000_000_000;

/// Opens one ticket of `problem` on `host` at `at_ms`, through what an
/// agent sends: for a rule, the host's package upgrades the day before
/// (the problem's own, if it has one, and `noise`), then two samples over
/// the threshold past the rule's duration; for a report, the employee's
/// words. Returns the time of the `store_reports` call that opened it.
#[allow(clippy::too_many_arguments)] // the bench's one place that opens tickets; a struct would only rename them
async fn open(
    store: &SharedStore,
    host: &str,
    problem: &Problem,
    symptom: &str,
    noise: &[&str],
    seq: &mut u64,
    at_ms: i64,
    with_changes: bool,
) -> Duration {
    let mut next = || {
        *seq += 1;
        *seq
    };
    if with_changes {
        let mut before: Vec<(&str, &str)> = noise.iter().map(|p| (*p, "1.0")).collect();
        let mut after: Vec<(&str, &str)> = noise.iter().map(|p| (*p, "1.1")).collect();
        if let Some(software) = problem.software {
            before.push((software, "2.0"));
            after.push((software, "2.1"));
        }
        store
            .store_reports(
                &[inventory(host, next(), at_ms - DAY, &before)],
                at_ms - DAY,
            )
            .await
            .expect("inventory");
        store
            .store_reports(
                &[inventory(host, next(), at_ms - 3 * 3_600_000, &after)],
                at_ms - 3 * 3_600_000,
            )
            .await
            .expect("inventory");
    }
    match problem.shows {
        Shows::Rule(metric, subject, value) => {
            store
                .store_reports(
                    &[health(
                        host,
                        next(),
                        at_ms - 40 * MINUTE,
                        metric,
                        subject,
                        value,
                    )],
                    at_ms - 40 * MINUTE,
                )
                .await
                .expect("health");
            let report = health(host, next(), at_ms, metric, subject, value);
            let started = Instant::now();
            store.store_reports(&[report], at_ms).await.expect("health");
            started.elapsed()
        }
        Shows::Report => {
            let report = issue(host, next(), at_ms, symptom);
            let started = Instant::now();
            store.store_reports(&[report], at_ms).await.expect("issue");
            started.elapsed()
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len().max(1)).unwrap_or(1);
    format!(
        "mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
        mean.as_secs_f64() * 1e3,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3
    )
}

/// A symptom of a problem: for the knowledge base one of its wordings but
/// the last, for a query any (the last is never seen before).
fn symptom(rng: &mut Rng, problem: &Problem, held_out_ok: bool) -> String {
    if problem.symptoms.is_empty() {
        return String::new();
    }
    let n = if held_out_ok {
        problem.symptoms.len()
    } else {
        problem.symptoms.len() - 1
    };
    let wording = problem.symptoms[rng.below(n)];
    report_text(rng, wording)
}

fn noise(rng: &mut Rng) -> Vec<&'static str> {
    let mut picked: Vec<&'static str> = Vec::new();
    for _ in 0..3 {
        let p = rng.pick(NOISE_PACKAGES);
        if !picked.contains(&p) {
            picked.push(p);
        }
    }
    picked
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let kb_size = env("DESKPULSE_BENCH_KB", 1000);
    let queries = env("DESKPULSE_BENCH_QUERIES", 300);
    let auto = env("DESKPULSE_BENCH_AUTO", 200);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("DESKPULSE_BENCH_STORE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = store::backend::open(&url).await.expect("open store");
    let problems = problems();
    let baseline_runs = 100.min(queries);
    let hosts = support::enroll_hosts(&store, baseline_runs + kb_size + auto + queries).await;
    let (baseline_hosts, rest) = hosts.split_at(baseline_runs);
    let (kb_hosts, rest) = rest.split_at(kb_size);
    let (auto_hosts, query_hosts) = rest.split_at(auto);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let by = AuditEntry::system("bench", "", "");

    // Opening tickets with an empty knowledge base: the cost without
    // anything to suggest.
    let mut empty_kb = Vec::new();
    for (i, host) in baseline_hosts.iter().enumerate() {
        let problem = &problems[i % problems.len()];
        let text = symptom(&mut rng, problem, true);
        let mut seq = 0;
        let noise = noise(&mut rng);
        empty_kb.push(
            open(
                &store,
                host,
                problem,
                &text,
                &noise,
                &mut seq,
                NOW - 200 * DAY,
                false,
            )
            .await,
        );
    }

    // The knowledge base: each ticket of a known problem, resolved by a
    // technician in one of the problem's wordings, over the last 180 days.
    let seeding = Instant::now();
    let mut problem_of: HashMap<i64, usize> = HashMap::new();
    for (i, host) in kb_hosts.iter().enumerate() {
        let p = rng.below(problems.len());
        let problem = &problems[p];
        let at = NOW - 180 * DAY + i64::try_from(i).expect("small") * 150 * MINUTE;
        let text = symptom(&mut rng, problem, false);
        let noise = noise(&mut rng);
        let mut seq = 0;
        open(&store, host, problem, &text, &noise, &mut seq, at, false).await;
        let ticket = newest(&store, host).await.expect("a ticket opened");
        let fix = rng.pick(problem.fixes);
        store
            .update_ticket(
                ticket.id,
                &TicketChange::Resolve(fix.into()),
                "tech",
                &by,
                at + 3_600_000,
            )
            .await
            .expect("update")
            .expect("resolved");
        problem_of.insert(ticket.id, p);
    }
    // Tickets that recovered by themselves: the rule problems' symptoms,
    // whose only "resolution" is that the condition went away.
    let mut auto_ids = Vec::new();
    for (i, host) in auto_hosts.iter().enumerate() {
        let rule_problems: Vec<&Problem> = problems
            .iter()
            .filter(|p| matches!(p.shows, Shows::Rule(..)))
            .collect();
        let problem = rule_problems[i % rule_problems.len()];
        let Shows::Rule(metric, subject, value) = problem.shows else {
            continue;
        };
        let at = NOW - 100 * DAY + i64::try_from(i).expect("small") * 30 * MINUTE;
        let mut seq = 0;
        open(&store, host, problem, "", &[], &mut seq, at, false).await;
        seq += 1;
        let recovered = if metric == Metric::ServiceDown {
            0.0
        } else {
            value - 60.0
        };
        store
            .store_reports(
                &[health(
                    host,
                    seq,
                    at + 5 * MINUTE,
                    metric,
                    subject,
                    recovered,
                )],
                at + 5 * MINUTE,
            )
            .await
            .expect("recovered");
        auto_ids.push(newest(&store, host).await.expect("ticket").id);
    }
    store
        .advance_rule_timers(NOW - 10 * DAY)
        .await
        .expect("timers");
    let auto_resolved = store
        .list_tickets(&TicketQuery {
            status: Some("resolved".into()),
            limit: 100_000,
            ..TicketQuery::default()
        })
        .await
        .expect("list")
        .iter()
        .filter(|t| t.resolution.as_deref() == Some(store::AUTO_RESOLUTION))
        .count();
    let seeded_in = seeding.elapsed();

    // New tickets of known problems.
    let mut with_kb = Vec::new();
    let mut rule_times = Vec::new();
    let mut report_times = Vec::new();
    let (mut top1, mut top3, mut none, mut auto_suggested) = (0, 0, 0, 0);
    let (mut rule_n, mut rule_top3, mut report_n, mut report_top3) = (0, 0, 0, 0);
    for (i, host) in query_hosts.iter().enumerate() {
        let p = rng.below(problems.len());
        let problem = &problems[p];
        let text = symptom(&mut rng, problem, true);
        let noise = noise(&mut rng);
        let mut seq = 0;
        let at = NOW + i64::try_from(i).expect("small") * MINUTE;
        let took = open(&store, host, problem, &text, &noise, &mut seq, at, true).await;
        with_kb.push(took);
        match problem.shows {
            Shows::Rule(..) => rule_times.push(took),
            Shows::Report => report_times.push(took),
        }
        let ticket = newest(&store, host).await.expect("a ticket opened");
        let suggestions = store
            .ticket_suggestions(ticket.id)
            .await
            .expect("suggestions");
        let right: Vec<bool> = suggestions
            .iter()
            .map(|s| problem_of.get(&s.ticket_id) == Some(&p))
            .collect();
        auto_suggested += suggestions
            .iter()
            .filter(|s| auto_ids.contains(&s.ticket_id))
            .count();
        if suggestions.is_empty() {
            none += 1;
        }
        if right.first() == Some(&true) {
            top1 += 1;
        }
        let in_top3 = right.iter().take(3).any(|r| *r);
        if in_top3 {
            top3 += 1;
        }
        match problem.shows {
            Shows::Rule(..) => {
                rule_n += 1;
                rule_top3 += usize::from(in_top3);
            }
            Shows::Report => {
                report_n += 1;
                report_top3 += usize::from(in_top3);
            }
        }
    }
    let share = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    println!(
        "knowledge base: {} resolved tickets of {} problems, {auto_resolved} that recovered by themselves; seeded in {:.1} s ({})",
        problem_of.len(),
        problems.len(),
        seeded_in.as_secs_f64(),
        if url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!(
        "{queries} new tickets: true resolution first {:.1} %, in the top 3 {:.1} % (rule tickets {:.1} % of {rule_n}, employee reports {:.1} % of {report_n}); none suggested {:.1} %; auto-resolved suggested {auto_suggested}",
        share(top1, queries),
        share(top3, queries),
        share(rule_top3, rule_n),
        share(report_top3, report_n),
        share(none, queries),
    );
    println!(
        "opening a ticket, empty knowledge base: {}",
        summary(empty_kb)
    );
    println!(
        "opening a ticket, seeded knowledge base: {}",
        summary(with_kb)
    );
    println!(
        "  of which rule tickets: {}; employee reports: {}",
        summary(rule_times),
        summary(report_times)
    );
    assert_eq!(
        auto_suggested, 0,
        "a ticket that recovered by itself was suggested"
    );
}
