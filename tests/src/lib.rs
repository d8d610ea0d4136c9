//! Support for the end-to-end tests: finds the real binaries, starts a
//! collector on 127.0.0.1:0 (reading its `listening` line, never sleeping),
//! enrolls agents in temp state dirs, runs the CLI, and builds gRPC clients
//! with or without a host certificate.
//!
//! # Layout
//! - [`bin`]: the path of a built binary, or a failure naming the build command.
//! - [`Collector`]: a `deskpulse-collector serve` child process.
//! - [`Agent`]: a state dir and the `deskpulse-agent` commands on it.
//! - [`notify`]: an HTTP receiver for webhooks and a real SMTP server on
//!   loopback (aiosmtpd) with a test CA, for the notification tests.
//! - [`raw`]: a gRPC codec that sends arbitrary bytes, for malformed input.
//! - [`web`]: a small HTTPS client with a cookie jar, for the web console.
//! - [`browser`]: the web console's flows in Debian's Chromium
//!   (`tests/web/*.mjs`, driven by playwright-core installed by `npm ci`).
//! - [`wine`]: the Windows agent's `.exe` and `wine` commands, under the
//!   prefix `cargo xtask test` prepared.
//! - [`postgres_database`]: a fresh PostgreSQL database, when the run has
//!   one (`DESKPULSE_TEST_DATABASE_URL`).
//! - [`require_tool`]: a program a test needs, or a `SKIPPED` line.

pub mod browser;
pub mod notify;
pub mod raw;
pub mod triage;
pub mod web;
pub mod wine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A policy under which every real agent's first health sample opens a
/// ticket (rule `memory-in-use`: more than 1 % of memory in use), and three
/// such tickets within 15 minutes make a fleet-wide problem.
pub const MEMORY_PROBLEM_POLICY: &str = r#"
[problems]
hosts = 3
window = "15m"

[[rule]]
name = "memory-in-use"
metric = "memory_used_percent"
op = ">"
threshold = 1
recover = 0.5
severity = "low"
"#;

/// The path of a workspace binary built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Output of a finished command, as text.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Stdout parsed as JSON; a failure quoting it when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The ticket number `report-issue` printed ("Reported. Ticket #N.");
    /// a failure quoting both streams when it printed none.
    pub fn reported_ticket(&self) -> String {
        self.stdout
            .trim()
            .strip_prefix("Reported. Ticket #")
            .and_then(|rest| rest.strip_suffix('.'))
            .unwrap_or_else(|| panic!("no ticket number in {:?} ({})", self.stdout, self.stderr))
            .to_owned()
    }

    /// The last stderr line: where the one-line error is.
    pub fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

/// Runs a command to completion with a timeout.
pub fn run(cmd: &mut Command) -> Run {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("{cmd:?} failed to run: {e}"));
    Run::from(output)
}

/// A running `deskpulse-collector serve`.
#[derive(Debug)]
pub struct Collector {
    child: Option<Child>,
    /// The bound address.
    pub addr: std::net::SocketAddr,
    /// The web console's own address, when started with `--web-listen`.
    pub web_addr: Option<std::net::SocketAddr>,
    /// The data dir (kept alive with the collector).
    pub data_dir: tempfile::TempDir,
    /// The `--database` URL it was started with, which admin commands
    /// need too.
    database: Option<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Closed when the reader has copied the collector's last stderr line.
    stderr_read: Option<mpsc::Receiver<()>>,
}

impl Collector {
    /// Starts a collector on 127.0.0.1:0 with a fresh data dir.
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp data dir"), &[])
    }

    /// Starts a collector on 127.0.0.1:0 with `data_dir` and extra args.
    pub fn start_in(data_dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts a collector listening on `listen` with `data_dir` and extra
    /// args.
    pub fn start_on(data_dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, listen, extra, &[])
    }

    /// `start_on`, with `env` set for the collector (e.g. the debug build's
    /// test panic point, `deskpulse_collector::panics::TEST_PANIC_VAR`).
    pub fn start_with_env(
        data_dir: tempfile::TempDir,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(bin("deskpulse-collector"));
        command.envs(env.iter().copied());
        Self::spawn(command, data_dir, listen, extra)
    }

    /// Starts a collector on 127.0.0.1:0 whose open-file limit is
    /// `open_files` (soft and hard), through util-linux `prlimit`.
    pub fn start_with_open_file_limit(open_files: u64, extra: &[&str]) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(bin("deskpulse-collector"));
        Self::spawn(
            command,
            tempfile::tempdir().expect("temp data dir"),
            "127.0.0.1:0",
            extra,
        )
    }

    fn spawn(
        mut command: Command,
        data_dir: tempfile::TempDir,
        listen: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir.path())
            .args(extra)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start deskpulse-collector");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let (stderr_done, stderr_read) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
            drop(stderr_done);
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let wait_for_line = |prefix: &str| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        if let Some(rest) = line.strip_prefix(prefix) {
                            return Some(rest.to_owned());
                        }
                    }
                    Err(_) => return None,
                }
            }
        };
        let addr = match wait_for_line("listening ") {
            Some(addr) => addr.parse().expect("listening line holds an address"),
            None => {
                let _ = child.kill();
                let logs = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("the collector printed no `listening` line within 60 s; stderr:\n{logs}");
            }
        };
        // The console's own address follows the `listening` line.
        let web_addr = if extra.contains(&"--web-listen") {
            let line = wait_for_line("web console https://")
                .expect("the collector printed no `web console` line");
            Some(
                line.trim_end_matches('/')
                    .parse()
                    .expect("the web console line holds an address"),
            )
        } else {
            None
        };
        let database = extra
            .iter()
            .position(|arg| *arg == "--database")
            .and_then(|i| extra.get(i + 1))
            .map(|url| (*url).to_owned());
        Self {
            child: Some(child),
            addr,
            web_addr,
            data_dir,
            database,
            stderr,
            stderr_read: Some(stderr_read),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The collector's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CA certificate file in the data dir.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.path().join("ca.pem")
    }

    /// The initial admin API token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("initial-admin-token"))
            .expect("initial-admin-token")
            .trim()
            .to_owned()
    }

    /// Runs a `deskpulse-collector` admin command on this data dir.
    pub fn admin(&self, args: &[&str]) -> Run {
        run(&mut self.admin_command(args))
    }

    /// A `deskpulse-collector` admin command on this data dir, to spawn
    /// and wait for later.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("deskpulse-collector"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir.path());
        if let Some(database) = &self.database {
            command.args(["--database", database]);
        }
        command
    }

    /// `user create NAME --role ROLE` on this data dir, the password on
    /// stdin: a local account for the web console.
    pub fn create_user(&self, name: &str, role: &str, password: &str) {
        let mut child = self
            .admin_command(&["user", "create", name, "--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run user create");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write the password");
        let out = child.wait_with_output().expect("user create finished");
        assert!(
            out.status.success(),
            "user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new enrollment token with `uses` uses.
    pub fn enrollment_token(&self, uses: u32) -> String {
        let uses = uses.to_string();
        let out = self
            .admin(&["enroll-token", "create", "--uses", &uses])
            .expect_code(0);
        out.stdout.trim().to_owned()
    }

    /// A new API token for a technician.
    pub fn api_token(&self, name: &str, role: &str) -> String {
        let out = self
            .admin(&["token", "create", "--name", name, "--role", role])
            .expect_code(0);
        out.stdout.trim().to_owned()
    }

    /// Applies `text` as the fleet policy with the admin token, through
    /// `deskpulse rules apply FILE`; the run, to check its outcome.
    pub fn apply_rules(&self, text: &str) -> Run {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, text).expect("write the policy");
        self.cli(
            &self.admin_token(),
            &["rules", "apply", file.to_str().expect("utf-8 path")],
        )
    }

    /// Runs the technician CLI against this collector with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> Run {
        run(&mut self.cli_command(token, args))
    }

    /// The technician CLI command against this collector, to spawn and
    /// wait for later. HOME points nowhere, so no user config is read.
    pub fn cli_command(&self, token: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin("deskpulse"));
        command
            .env("HOME", "/nonexistent")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DESKPULSE_URL")
            .env_remove("DESKPULSE_TOKEN")
            .env_remove("DESKPULSE_CA_FILE")
            .arg("--collector")
            .arg(self.url())
            .arg("--token")
            .arg(token)
            .arg("--ca-file")
            .arg(self.ca_file())
            .args(args);
        command
    }

    /// The collector's stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The address of `--metrics-listen`, from its "metrics listening"
    /// log line (waited for).
    pub fn metrics_addr(&self) -> String {
        wait_for(Duration::from_secs(30), || {
            let logs = strip_ansi(&self.logs());
            let line = logs.lines().find(|l| l.contains("metrics listening"))?;
            let at = line.find("addr=")? + 5;
            let addr: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
                .collect();
            Some(addr)
        })
        .expect("the collector logs its metrics address")
    }

    /// Stops the collector (SIGTERM) and hands back its data dir.
    pub fn into_data_dir(mut self) -> tempfile::TempDir {
        self.terminate();
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Kills the collector with SIGKILL, as a crash would, and hands back
    /// its data dir.
    pub fn kill_9(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_stderr_read();
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Sends SIGTERM and waits for the exit code, and for its last log
    /// lines to be in [`Collector::logs`].
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).ok()?;
        // SAFETY-free: kill(2) through libc is the only way to send SIGTERM.
        send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.wait_stderr_read();
        code
    }

    /// Waits (a few seconds at most) until the stderr reader has copied
    /// everything an exited collector wrote.
    fn wait_stderr_read(&mut self) {
        if let Some(read) = self.stderr_read.take() {
            // Err(Disconnected) is the reader's end; a timeout leaves the
            // logs as far as they got.
            let _ = read.recv_timeout(Duration::from_secs(5));
        }
    }

    /// A TLS channel to the collector, with a client identity or without.
    pub async fn channel(&self, identity: Option<(&str, &str)>) -> Channel {
        let ca = std::fs::read_to_string(self.ca_file()).expect("ca.pem");
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(self.url())
            .expect("url")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect")
    }
}

/// Sends a signal to a process.
pub fn send_signal(pid: i32, signal: i32) {
    #[allow(unsafe_code)] // kill(2) has no safe std wrapper; pid and signal are plain integers
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `deskpulse-agent run` service.
#[derive(Debug)]
pub struct AgentService(Child);

impl AgentService {
    /// Starts `deskpulse-agent run --health-interval 1s ARGS`.
    pub fn start(agent: &Agent, args: &[&str]) -> Self {
        Self::start_with_env(agent, args, &[])
    }

    /// Starts the service with extra environment variables.
    pub fn start_with_env(agent: &Agent, args: &[&str], env: &[(&str, &str)]) -> Self {
        let child = agent
            .cmd(&[&["run", "--health-interval", "1s"], args].concat())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("DESKPULSE_TEST_AGENT_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start the agent service");
        Self(child)
    }

    /// Starts `agent`'s service and waits until it is connected and
    /// `collector` has stored its host's inventory. A session acknowledges
    /// its reports in order, so an employee's report sent behind a fresh
    /// agent's first, full inventory waits for that inventory's commit:
    /// tests that read `report-issue`'s ticket number (which it waits a
    /// few seconds for) start here.
    pub fn start_ready(agent: &Agent, collector: &Collector) -> Self {
        let service = Self::start(agent, &[]);
        agent.wait_service_connected();
        let token = collector.admin_token();
        let host = agent.host_id();
        wait_for(Duration::from_secs(60), || {
            let shown = collector.cli(&token, &["--json", "host", "show", &host]);
            let shown: serde_json::Value = serde_json::from_str(&shown.stdout).ok()?;
            shown["inventory"].is_object().then_some(())
        })
        .expect("the agent's inventory is stored");
        service
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops it with SIGTERM; its exit code.
    pub fn stop(mut self) -> Option<i32> {
        send_signal(i32::try_from(self.0.id()).ok()?, libc::SIGTERM);
        let status = wait_for(Duration::from_secs(20), || self.0.try_wait().ok().flatten());
        status.and_then(|s| s.code())
    }

    /// Kills it with SIGKILL, wherever it is.
    pub fn kill_9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AgentService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent state dir and the `deskpulse-agent` commands on it.
#[derive(Debug)]
pub struct Agent {
    /// The state dir.
    pub state_dir: tempfile::TempDir,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    /// A fresh, unenrolled agent.
    pub fn new() -> Self {
        Self {
            state_dir: tempfile::tempdir().expect("temp state dir"),
        }
    }

    /// A fresh agent enrolled to `collector` with a one-use token.
    pub fn enrolled_to(collector: &Collector) -> Self {
        let agent = Self::new();
        agent
            .enroll(collector, &collector.enrollment_token(1))
            .expect_code(0);
        agent
    }

    /// Waits until `status --json` says this agent's service runs and is
    /// connected to its collector.
    pub fn wait_service_connected(&self) {
        wait_for(Duration::from_secs(30), || {
            let out = self.command(&["status", "--json"]);
            let s: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            (s["service_running"] == true && s["connected"] == true).then_some(())
        })
        .expect("the service connects");
    }

    /// Runs `deskpulse-agent ARGS --state-dir DIR`.
    pub fn command(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    /// The command, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("deskpulse-agent"));
        cmd.args(args).arg("--state-dir").arg(self.state_dir.path());
        for var in [
            "DESKPULSE_AGENT_CONFIG",
            "DESKPULSE_AGENT_STATE_DIR",
            "DESKPULSE_AGENT_SYSTEM_ROOT",
        ] {
            cmd.env_remove(var);
        }
        cmd.env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Enrolls with `collector` using the CA file and a token.
    pub fn enroll(&self, collector: &Collector, token: &str) -> Run {
        self.enroll_with(collector, token, &[])
    }

    /// Enrolls a state dir that is enrolled already (`--force`): after its
    /// host was revoked, or its certificate expired.
    pub fn enroll_again(&self, collector: &Collector, token: &str) -> Run {
        self.enroll_with(collector, token, &["--force"])
    }

    fn enroll_with(&self, collector: &Collector, token: &str, flags: &[&str]) -> Run {
        let ca = collector.ca_file();
        self.command(
            &[
                &["enroll"][..],
                flags,
                &[
                    "--collector",
                    &collector.url(),
                    "--token",
                    token,
                    "--ca-file",
                    ca.to_str().expect("utf-8 path"),
                ],
            ]
            .concat(),
        )
    }

    /// The host id after enrollment.
    pub fn host_id(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir.path().join("enrollment.toml"))
            .expect("enrollment.toml");
        text.lines()
            .find_map(|l| l.strip_prefix("host_id = "))
            .expect("host_id line")
            .trim_matches('"')
            .to_owned()
    }

    /// The host certificate and key, PEM.
    pub fn identity(&self) -> (String, String) {
        let read = |name: &str| {
            std::fs::read_to_string(self.state_dir.path().join(name)).expect("state file")
        };
        (read("agent.pem"), read("agent.key"))
    }
}

/// What a stopped agent's spool holds, read with the agent's own spool code
/// (the file format is the same on every OS).
pub struct SpoolView {
    /// The spool's id, half of every report's idempotency key.
    pub id: String,
    /// Every waiting report: seq → (is a health sample, collected at, ms).
    pub records: BTreeMap<u64, (bool, i64)>,
    /// The seq the next report will get.
    pub next_seq: u64,
}

impl SpoolView {
    /// Reads the spool in `state_dir`; the agent must not be running.
    pub fn read(state_dir: &Path) -> SpoolView {
        use deskpulse_agent::spool::{Limits, Spool};
        use deskpulse_proto::v1::report::Payload;
        let (mut spool, _) =
            Spool::open(&state_dir.join("spool"), Limits::default()).expect("open the spool");
        let records = spool
            .read_after(0, usize::MAX)
            .expect("read the spool")
            .into_iter()
            .map(|r| {
                let health = matches!(r.payload, Some(Payload::Health(_)));
                (r.seq, (health, r.collected_at_unix_ms))
            })
            .collect();
        SpoolView {
            id: spool.spool_id().to_owned(),
            records,
            next_seq: spool.next_seq(),
        }
    }

    /// The seqs of every waiting report.
    pub fn waiting(&self) -> BTreeSet<u64> {
        self.records.keys().copied().collect()
    }

    /// The seqs of the waiting health samples.
    pub fn health(&self) -> BTreeSet<u64> {
        self.records
            .iter()
            .filter(|(_, (health, _))| *health)
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Which of these reports the collector in `data_dir` has stored. The
    /// idempotency keys alone cannot tell: the collector forgets a key once
    /// the agent's spool has moved past it (D14), which can happen between
    /// two polls. So a health sample also counts as stored when the host's
    /// health history holds its sample, and an inventory when the host's
    /// stored inventory is at least as new.
    pub fn stored(&self, data_dir: &Path, host: &str) -> BTreeSet<u64> {
        let keys: BTreeSet<u64> = received_seqs(data_dir, host, &self.id)
            .into_iter()
            .collect();
        let history = health_history_ms(data_dir, host);
        let inventory_at = inventory_at_ms(data_dir, host);
        self.records
            .iter()
            .filter(|(seq, (health, at))| {
                keys.contains(seq)
                    || if *health {
                        history.contains(at)
                    } else {
                        inventory_at >= Some(*at)
                    }
            })
            .map(|(seq, _)| *seq)
            .collect()
    }
}

/// A collector's SQLite database, opened beside the running collector.
pub fn open_database(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data_dir.join("deskpulse.db")).expect("open the database")
}

/// The times of a host's raw health samples in a collector's SQLite database.
pub fn health_history_ms(data_dir: &Path, host: &str) -> BTreeSet<i64> {
    let db = open_database(data_dir);
    let mut query = db
        .prepare("SELECT at_ms FROM health_samples WHERE host_id = ?1 AND resolution_s = 0")
        .expect("prepare");
    query
        .query_map([host], |row| row.get::<_, i64>(0))
        .expect("query")
        .map(|at| at.expect("row"))
        .collect()
}

/// When a host's stored inventory was collected, if one is stored.
fn inventory_at_ms(data_dir: &Path, host: &str) -> Option<i64> {
    use rusqlite::OptionalExtension as _;
    open_database(data_dir)
        .query_row(
            "SELECT inventory_at_ms FROM host_inventories WHERE host_id = ?1",
            [host],
            |row| row.get(0),
        )
        .optional()
        .expect("query")
}

/// The seqs a collector's SQLite database holds for one host's spool (its
/// idempotency keys in `received_reports`). Keys of reports the agent no
/// longer holds are forgotten: [`SpoolView::stored`] tells what arrived.
pub fn received_seqs(data_dir: &Path, host: &str, spool_id: &str) -> Vec<u64> {
    let db = open_database(data_dir);
    let mut query = db
        .prepare(
            "SELECT seq FROM received_reports WHERE host_id = ?1 AND spool_id = ?2 ORDER BY seq",
        )
        .expect("prepare");
    query
        .query_map([host, spool_id], |row| row.get::<_, i64>(0))
        .expect("query")
        .map(|seq| u64::try_from(seq.expect("row")).expect("seq"))
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Hello a hand-written agent session opens with: an agent of version
/// "test" on the current inventory schema, health every 60 s.
pub fn test_hello() -> deskpulse_proto::v1::AgentMessage {
    use deskpulse_proto::v1::{AgentMessage, Hello, agent_message::Kind};
    AgentMessage {
        kind: Some(Kind::Hello(Hello {
            agent_version: "test".into(),
            inventory_schema_version: 1,
            health_interval_secs: 60,
            ..Hello::default()
        })),
    }
}

/// Sends `reports` on one session of `agent` (opened with [`test_hello`])
/// and waits for the collector to acknowledge each: once this returns,
/// every report is stored.
pub async fn send_reports(
    collector: &Collector,
    agent: &Agent,
    reports: Vec<deskpulse_proto::v1::AgentMessage>,
) {
    use deskpulse_proto::v1::agent_service_client::AgentServiceClient;
    use deskpulse_proto::v1::collector_message::Kind as Reply;
    let (cert, key) = agent.identity();
    let channel = collector.channel(Some((&cert, &key))).await;
    let expected = reports.len();
    let mut messages = vec![test_hello()];
    messages.extend(reports);
    let mut replies = AgentServiceClient::new(channel)
        .session(tokio_stream::iter(messages))
        .await
        .expect("session")
        .into_inner();
    for _ in 0..expected {
        let reply = replies.message().await.expect("reply").expect("some");
        assert!(matches!(reply.kind, Some(Reply::Ack(_))), "{reply:?}");
    }
}

/// The variable naming the PostgreSQL server the tests may use (an admin
/// URL such as `postgres://postgres@127.0.0.1:5432/postgres`).
pub const TEST_DATABASE_VAR: &str = "DESKPULSE_TEST_DATABASE_URL";

/// Whether `program`, which `test` runs (directly or through the agent), is
/// on `PATH`. When it is not, the test says `SKIPPED` with the reason and
/// gets `false`; with `CI=true` it fails instead, so CI never skips
/// silently. `cargo xtask test` installs every such program as root
/// (`xtask/src/provision.rs` lists them; a test there finds this call).
pub fn require_tool(program: &str, test: &str) -> bool {
    // The agent looks in the sbin dirs too (`diagnostics::run::which`).
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| dir.join(program).is_file())
    });
    if found {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{test}: {program} is not installed, and CI runs every test; `cargo xtask provision` installs it"
    );
    eprintln!(
        "SKIPPED {test}: {program} is not installed (`cargo xtask provision` installs it, as root)"
    );
    false
}

/// A fresh, empty PostgreSQL database for one test, dropped (with any
/// connections still open to it) when this is dropped: declare it before
/// the collectors that use it, so they are gone first.
#[derive(Debug)]
pub struct PostgresDatabase {
    /// The database's URL, for `--database`.
    pub url: String,
    admin: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = on_admin_connection(&self.admin, sql);
        if let Err(error) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Runs one statement on the admin URL's database.
fn on_admin_connection(admin: &str, sql: String) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .map_err(|e| format!("{TEST_DATABASE_VAR}={admin}: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(())
    })
}

/// A fresh, empty PostgreSQL database for one test, made on the server
/// `DESKPULSE_TEST_DATABASE_URL` names. Without that variable the test says
/// loudly that it skipped and gets `None`; with `CI=true` it fails instead,
/// so CI never skips silently (D31).
pub fn postgres_database(test: &str) -> Option<PostgresDatabase> {
    let Ok(admin) = std::env::var(TEST_DATABASE_VAR) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{TEST_DATABASE_VAR} is not set: CI runs every PostgreSQL test (D31)");
        }
        eprintln!("SKIPPED {test}: set {TEST_DATABASE_VAR} to run the PostgreSQL tests");
        return None;
    };
    let name = format!("dp_e2e_{}", uuid::Uuid::new_v4().simple());
    on_admin_connection(&admin, format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    Some(PostgresDatabase {
        url: with_database(&admin, &name),
        admin,
        name,
    })
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    }
}

/// A plain HTTP/1.1 `GET path` to `addr`: the response head and body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// `text` without terminal colour codes (the collector's log colours its
/// field names when stderr looks like a terminal).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_is_pointed_at_another_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
