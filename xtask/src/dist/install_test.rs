//! `cargo xtask test-packages`: installs the packages of `dist` on this
//! machine, as root, and checks them against a real collector on loopback.
//!
//! 1. The collector's `.deb`: `dpkg -i`, its files, its system user and
//!    data dir, `systemd-analyze verify` of its unit; then the installed
//!    collector is started the way its unit starts it (as its user, with its
//!    config; `--listen 127.0.0.1:0` on top), since CI has no systemd as
//!    PID 1.
//! 2. The agent's `.deb`: with a broken `/etc/deskpulse/enroll.toml` the
//!    install still succeeds (postinst exit 0, one line) and `service
//!    status` says not enrolled; purge. With a good one: the files, the unit
//!    (`systemd-analyze verify`), the enrollment (state dir, the token gone
//!    from enroll.toml, the host at the collector); the unit's own
//!    `ExecStart` run as systemd would, up to the host's first inventory at
//!    the collector (timed from `dpkg -i`); `dpkg -i` again keeps the
//!    enrollment; purge removes the state.
//! 3. The `.rpm`s: listed with `rpm -qpl`, their config files and scripts
//!    checked.
//! 4. The launchd plist: converted to binary and back by `plistutil`.
//! 5. The `.msi` under Wine ([`msi`]).
//!
//! Sizes and install-to-first-report times are printed, not asserted.
//!
//! It changes the machine (/usr/bin, /etc/deskpulse, /var/lib, a system
//! user), so it refuses to run where Deskpulse is installed, purges what it
//! installed even when a check fails, and must never run beside the Linux
//! test suite: an installed /etc/deskpulse/agent.toml is every agent's
//! default config.

mod msi;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::linux::{AGENT_PACKAGE, COLLECTOR_PACKAGE, deb_name, rpm_name};
use super::tools::{self, PLISTUTIL, RPM, SYSTEMD_ANALYZE};
use super::{DistArgs, Kind, Layout, human_size, output, run_checked};

/// Options of `cargo xtask test-packages`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestPackagesArgs {
    /// Test the packages already in target/dist instead of building them.
    #[arg(long)]
    pub skip_build: bool,
    /// Leave out the .msi (no Wine, no Windows build).
    #[arg(long)]
    pub skip_windows: bool,
}

const COLLECTOR_USER: &str = "deskpulse-collector";
const COLLECTOR_DATA_DIR: &str = "/var/lib/deskpulse-collector";
const COLLECTOR_CONFIG: &str = "/etc/deskpulse/collector.toml";
const AGENT_STATE_DIR: &str = "/var/lib/deskpulse-agent";
const AGENT_CONFIG: &str = "/etc/deskpulse/agent.toml";
const ENROLL_FILE: &str = "/etc/deskpulse/enroll.toml";
const AGENT_UNIT: &str = "/usr/lib/systemd/system/deskpulse-agent.service";
const COLLECTOR_UNIT: &str = "/usr/lib/systemd/system/deskpulse-collector.service";
/// How long a first inventory may take to reach the collector.
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// A figure for the closing summary.
#[derive(Debug)]
struct Figure {
    what: String,
    value: String,
}

/// Builds the packages (unless asked not to) and runs every install test.
pub fn run(root: &Path, args: &TestPackagesArgs) -> Result<()> {
    let layout = Layout::new(root);
    if !tools::is_root() {
        bail!("the package tests install packages: run `sudo cargo xtask test-packages`");
    }
    refuse_if_installed()?;
    let mut kinds = vec![Kind::Deb, Kind::Rpm];
    if !args.skip_windows {
        kinds.push(Kind::Msi);
    }
    if !args.skip_build {
        super::run(
            root,
            &DistArgs {
                only: kinds.clone(),
                skip_build: false,
            },
        )?;
    }
    tools::debian_tools(&[RPM, PLISTUTIL, SYSTEMD_ANALYZE])?;

    let out = layout.out_dir();
    let mut figures = Vec::new();
    for name in [
        deb_name(AGENT_PACKAGE),
        deb_name(COLLECTOR_PACKAGE),
        rpm_name(AGENT_PACKAGE),
        rpm_name(COLLECTOR_PACKAGE),
    ] {
        figures.push(size_figure(&out.join(name))?);
    }

    figures.push(size_figure(
        &layout
            .stage_dir(super::AGENT_PROFILE, AGENT_PACKAGE)
            .join("deskpulse-agent"),
    )?);
    if let Some(last) = figures.last_mut() {
        last.what.push_str(" (Linux x86_64, stripped)");
    }
    if !args.skip_windows {
        figures.push(size_figure(
            &layout
                .stage_dir(super::AGENT_PROFILE, "deskpulse-agent-windows")
                .join("deskpulse-agent.exe"),
        )?);
    }

    let started = Instant::now();
    check_rpms(&out)?;
    println!("test-packages: rpm -qpl: files, config files and scripts as expected");
    check_plist(&layout)?;
    println!("test-packages: launchd plist: plistutil converts it to binary and back");

    // Purged at the end whatever happens in between.
    let _purge = Purge;
    install_collector(&out)?;
    let collector = InstalledCollector::start(&out.join("collector.log"))?;
    println!(
        "test-packages: collector .deb installed and serving on {}",
        collector.url
    );

    broken_enroll_file(&out)?;
    println!("test-packages: a broken enroll.toml leaves the agent installed and not enrolled");
    figures.push(agent_deb(&out, &collector)?);

    if !args.skip_windows {
        let msi_path = super::msi::msi_path(&layout);
        figures.push(size_figure(&msi_path)?);
        figures.extend(msi::test(&layout, &msi_path, &collector)?);
    }
    drop(collector);
    purge(COLLECTOR_PACKAGE)?;
    ensure!(
        !Path::new(COLLECTOR_DATA_DIR).exists(),
        "{COLLECTOR_DATA_DIR} is still there after purging {COLLECTOR_PACKAGE}"
    );
    ensure!(
        !user_exists(COLLECTOR_USER),
        "the user {COLLECTOR_USER} is still there after purging {COLLECTOR_PACKAGE}"
    );
    println!("test-packages: collector purged: data dir and system user gone");

    println!("\nfigures (not asserted):");
    for figure in &figures {
        println!("  {:<52} {}", figure.what, figure.value);
    }
    println!(
        "test-packages: all package tests passed ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn size_figure(path: &Path) -> Result<Figure> {
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("{} is missing: run `cargo xtask dist`", path.display()))?
        .len();
    Ok(Figure {
        what: format!(
            "size of {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        value: human_size(bytes),
    })
}

/// Stops here when this machine has Deskpulse installed: the tests would
/// purge it.
fn refuse_if_installed() -> Result<()> {
    for package in [AGENT_PACKAGE, COLLECTOR_PACKAGE] {
        if package_installed(package) {
            bail!(
                "{package} is installed on this machine and the package tests would purge it; remove it first (`dpkg --purge {package}`)"
            );
        }
    }
    for path in ["/etc/deskpulse", AGENT_STATE_DIR, COLLECTOR_DATA_DIR] {
        if Path::new(path).exists() {
            bail!(
                "{path} exists on this machine and the package tests would replace it; move it away first"
            );
        }
    }
    Ok(())
}

/// True when dpkg has `package` installed (or half-installed).
fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && !out.stdout.is_empty() && out.stdout != b"not-installed"
        })
}

fn user_exists(user: &str) -> bool {
    Command::new("getent")
        .args(["passwd", user])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Purges both packages when dropped, so a failed check leaves the machine
/// as it was.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        for package in [AGENT_PACKAGE, COLLECTOR_PACKAGE] {
            if package_installed(package) {
                let _ = purge(package);
            }
        }
        let _ = std::fs::remove_file(ENROLL_FILE);
        let _ = std::fs::remove_dir("/etc/deskpulse");
    }
}

/// `dpkg -i`, returning what its scripts printed.
fn dpkg_install(deb: &Path) -> Result<String> {
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running dpkg -i")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "dpkg -i {} failed ({}): {}",
            deb.display(),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

fn purge(package: &str) -> Result<()> {
    run_checked(
        Command::new("dpkg")
            .args(["--purge", package])
            .stdout(Stdio::null()),
    )
}

fn ensure_files(paths: &[&str]) -> Result<()> {
    for path in paths {
        ensure!(Path::new(path).exists(), "{path} was not installed");
    }
    Ok(())
}

/// `systemd-analyze verify` of an installed unit. Without systemd as PID 1
/// it still checks the syntax, the directives and the ExecStart binary.
fn verify_unit(unit: &str) -> Result<()> {
    let out = Command::new(SYSTEMD_ANALYZE.program)
        .args(["verify", unit])
        .stdin(Stdio::null())
        .output()
        .context("running systemd-analyze verify")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Other units of this machine may draw warnings; only ours count.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("deskpulse"))
        .collect();
    if !out.status.success() || !ours.is_empty() {
        bail!(
            "systemd-analyze verify {unit} ({}): {}",
            out.status,
            if ours.is_empty() {
                super::last_line(&stderr)
            } else {
                ours.join(" | ")
            }
        );
    }
    Ok(())
}

fn install_collector(out: &Path) -> Result<()> {
    dpkg_install(&out.join(deb_name(COLLECTOR_PACKAGE)))?;
    ensure_files(&[
        "/usr/bin/deskpulse-collector",
        "/usr/bin/deskpulse",
        COLLECTOR_UNIT,
        COLLECTOR_CONFIG,
        "/usr/lib/sysusers.d/deskpulse-collector.conf",
    ])?;
    ensure!(
        user_exists(COLLECTOR_USER),
        "the postinst made no user {COLLECTOR_USER}"
    );
    let owner = output(Command::new("stat").args(["-c", "%U %a", COLLECTOR_DATA_DIR]))?;
    ensure!(
        owner.trim() == format!("{COLLECTOR_USER} 750"),
        "{COLLECTOR_DATA_DIR} is {} (owner, mode), not {COLLECTOR_USER} 750",
        owner.trim()
    );
    verify_unit(COLLECTOR_UNIT)
}

/// The collector installed by its package, run as its unit runs it.
pub struct InstalledCollector {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    uid: u32,
    gid: u32,
}

impl InstalledCollector {
    /// Starts it with its log in `log`.
    fn start(log: &Path) -> Result<Self> {
        let uid = id_number("-u")?;
        let gid = id_number("-g")?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("/usr/bin/deskpulse-collector");
        command
            .args([
                "serve",
                "--config",
                COLLECTOR_CONFIG,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        as_user(&mut command, uid, gid);
        let mut child = command
            .spawn()
            .context("starting the installed collector")?;
        let stdout = child.stdout.take().context("the collector's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let collector = |url: String| Self {
            child,
            url,
            uid,
            gid,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Ok(collector(format!("https://{addr}"))),
            Err(_) => {
                drop(collector(String::new()));
                bail!(
                    "the installed collector did not start within 60 s; see {}",
                    log.display()
                )
            }
        }
    }

    /// An admin command of the installed collector, as its user.
    fn admin(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new("/usr/bin/deskpulse-collector");
        command
            .args(args)
            .args(["--data-dir", COLLECTOR_DATA_DIR])
            .stdin(Stdio::null());
        as_user(&mut command, self.uid, self.gid);
        let out = command
            .output()
            .with_context(|| format!("running deskpulse-collector {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "deskpulse-collector {} failed ({}): {}",
                args.join(" "),
                out.status,
                super::last_line(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(out)
    }

    /// A fresh one-use enrollment token.
    pub fn enrollment_token(&self) -> Result<String> {
        let out = self.admin(&["enroll-token", "create"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The CA's pin, from the `ca-sha256 HEX` line `ca export` writes to
    /// stderr.
    pub fn ca_pin(&self) -> Result<String> {
        let out = self.admin(&["ca", "export"])?;
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|line| line.trim().strip_prefix("ca-sha256 "))
            .map(str::to_owned)
            .context("`ca export` printed no ca-sha256 line")
    }

    /// `deskpulse --json host show HOST` with the initial admin token.
    pub fn host(&self, host_id: &str) -> Result<serde_json::Value> {
        let token =
            std::fs::read_to_string(Path::new(COLLECTOR_DATA_DIR).join("initial-admin-token"))
                .context("reading the collector's initial admin token")?;
        let text = output(
            Command::new("/usr/bin/deskpulse")
                .args(["--json", "host", "show", host_id])
                .env("DESKPULSE_URL", &self.url)
                .env("DESKPULSE_TOKEN", token.trim())
                .env(
                    "DESKPULSE_CA_FILE",
                    Path::new(COLLECTOR_DATA_DIR).join("ca.pem"),
                ),
        )?;
        serde_json::from_str(&text).context("parsing `deskpulse --json host show`")
    }

    /// Waits until the collector holds an inventory of `host_id`.
    pub fn wait_for_first_inventory(&self, host_id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let host = self.host(host_id)?;
            if !host["inventory_at"].is_null() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no inventory of host {host_id} reached the collector within {}s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for InstalledCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_number(flag: &str) -> Result<u32> {
    let text = output(Command::new("id").args([flag, COLLECTOR_USER]))?;
    text.trim()
        .parse()
        .with_context(|| format!("`id {flag} {COLLECTOR_USER}` printed {text:?}"))
}

fn as_user(command: &mut Command, uid: u32, gid: u32) {
    use std::os::unix::process::CommandExt;
    command
        .uid(uid)
        .gid(gid)
        .env("HOME", COLLECTOR_DATA_DIR)
        .current_dir("/");
}

fn write_enroll_file(text: &str) -> Result<()> {
    std::fs::create_dir_all("/etc/deskpulse").context("creating /etc/deskpulse")?;
    std::fs::write(ENROLL_FILE, text).with_context(|| format!("writing {ENROLL_FILE}"))
}

/// A broken enroll.toml: the package installs, the postinst says why in
/// one line, and the agent is not enrolled.
fn broken_enroll_file(out: &Path) -> Result<()> {
    write_enroll_file("collector = \"not a url\"\ntoken = \"dpe_x\"\nca_sha256 = \"00\"\n")?;
    let printed = dpkg_install(&out.join(deb_name(AGENT_PACKAGE)))?;
    ensure!(
        package_installed(AGENT_PACKAGE),
        "{AGENT_PACKAGE} is not installed after a broken enroll.toml"
    );
    let ours: Vec<&str> = printed
        .lines()
        .filter(|line| line.starts_with("deskpulse-agent:"))
        .collect();
    ensure!(
        ours.len() == 1 && ours[0].contains("not enrolled"),
        "the postinst should print one `not enrolled` line, printed: {ours:?}"
    );
    let status =
        output(Command::new("/usr/bin/deskpulse-agent").args(["service", "status", "--json"]))?;
    let status: serde_json::Value =
        serde_json::from_str(&status).context("parsing `service status --json`")?;
    ensure!(
        status["enrolled"] == false,
        "`service status` should say not enrolled: {status}"
    );
    let text = output(Command::new("/usr/bin/deskpulse-agent").args(["service", "status"]))?;
    ensure!(
        text.contains("enrolled:  no"),
        "`service status` should say not enrolled: {text}"
    );
    purge(AGENT_PACKAGE)?;
    std::fs::remove_file(ENROLL_FILE).ok();
    Ok(())
}

/// The agent's .deb against the installed collector; returns the
/// install-to-first-report time.
fn agent_deb(out: &Path, collector: &InstalledCollector) -> Result<Figure> {
    let token = collector.enrollment_token()?;
    let pin = collector.ca_pin()?;
    write_enroll_file(&format!(
        "collector = \"{}\"\ntoken = \"{token}\"\nca_sha256 = \"{pin}\"\n",
        collector.url
    ))?;
    let deb = out.join(deb_name(AGENT_PACKAGE));
    let installing = Instant::now();
    let printed = dpkg_install(&deb)?;
    let installed_in = installing.elapsed();
    ensure!(
        printed.contains("deskpulse-agent: enrolled as host"),
        "the postinst did not enroll: {}",
        printed.trim()
    );
    ensure_files(&["/usr/bin/deskpulse-agent", AGENT_UNIT, AGENT_CONFIG])?;
    let mode = output(Command::new("stat").args(["-c", "%a", AGENT_CONFIG]))?;
    ensure!(
        mode.trim() == "644",
        "{AGENT_CONFIG} has mode {} (employees' `status` reads it)",
        mode.trim()
    );
    verify_unit(AGENT_UNIT)?;
    let enroll_text = std::fs::read_to_string(ENROLL_FILE)?;
    ensure!(
        !enroll_text.contains("token =") && !enroll_text.contains(&token),
        "{ENROLL_FILE} still holds the token"
    );
    let host_id = enrolled_host(Path::new(AGENT_STATE_DIR))?;
    let host = collector.host(&host_id)?;
    ensure!(
        host["host_id"] == host_id.as_str(),
        "the collector does not list host {host_id}: {host}"
    );
    println!(
        "test-packages: agent .deb installed and enrolled as host {host_id} (dpkg -i took {:.1} s)",
        installed_in.as_secs_f64()
    );

    // What systemd would start: the installed unit's own ExecStart.
    let exec_start = unit_exec_start(AGENT_UNIT)?;
    let mut service = Command::new(&exec_start[0])
        .args(&exec_start[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exec_start.join(" ")))?;
    let reported = collector.wait_for_first_inventory(&host_id, FIRST_REPORT_TIMEOUT);
    let first_report = installing.elapsed();
    let _ = service.kill();
    let _ = service.wait();
    reported?;
    println!(
        "test-packages: the unit's ExecStart reported; first inventory at the collector {:.1} s after dpkg -i began",
        first_report.as_secs_f64()
    );

    // An upgrade (here: the same package again) keeps the enrollment.
    dpkg_install(&deb)?;
    ensure!(
        enrolled_host(Path::new(AGENT_STATE_DIR))? == host_id,
        "installing over the package changed the enrollment"
    );
    println!("test-packages: dpkg -i over the installed agent kept host {host_id}");

    purge(AGENT_PACKAGE)?;
    for path in [
        AGENT_STATE_DIR,
        "/usr/bin/deskpulse-agent",
        AGENT_UNIT,
        AGENT_CONFIG,
        ENROLL_FILE,
    ] {
        ensure!(
            !Path::new(path).exists(),
            "{path} is still there after dpkg --purge {AGENT_PACKAGE}"
        );
    }
    println!("test-packages: dpkg --purge removed the agent, its config and its state");
    Ok(Figure {
        what: "deb: dpkg -i to first inventory at the collector".into(),
        value: format!("{:.1} s", first_report.as_secs_f64()),
    })
}

/// The host id in a state dir's enrollment.
pub fn enrolled_host(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("enrollment.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (not enrolled?)", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    table
        .get("host_id")
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{} has no host_id", path.display()))
}

/// The words of a unit's `ExecStart=` (our units quote nothing).
fn unit_exec_start(unit: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(unit).with_context(|| format!("reading {unit}"))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .with_context(|| format!("{unit} has no ExecStart"))?;
    ensure!(
        !line.contains('"'),
        "{unit}'s ExecStart quotes a word; this test reads plain words only"
    );
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

/// `rpm -qpl`, `-qpc` and `--scripts` of both `.rpm`s.
fn check_rpms(out: &Path) -> Result<()> {
    let expected = [
        (
            AGENT_PACKAGE,
            vec![
                "/usr/bin/deskpulse-agent",
                "/usr/lib/systemd/system/deskpulse-agent.service",
                AGENT_CONFIG,
            ],
            AGENT_CONFIG,
            "deskpulse-agent %post",
        ),
        (
            COLLECTOR_PACKAGE,
            vec![
                "/usr/bin/deskpulse-collector",
                "/usr/bin/deskpulse",
                "/usr/lib/systemd/system/deskpulse-collector.service",
                COLLECTOR_CONFIG,
                "/usr/lib/sysusers.d/deskpulse-collector.conf",
            ],
            COLLECTOR_CONFIG,
            "deskpulse-collector %post",
        ),
    ];
    for (package, files, config, script_mark) in expected {
        let rpm = out.join(rpm_name(package));
        let listed = output(Command::new(RPM.program).arg("-qpl").arg(&rpm))?;
        let mut listed: Vec<&str> = listed.lines().collect();
        listed.sort_unstable();
        let mut files = files;
        files.sort_unstable();
        ensure!(
            listed == files,
            "rpm -qpl {} lists {listed:?}, expected {files:?}",
            rpm.display()
        );
        let configs = output(Command::new(RPM.program).arg("-qpc").arg(&rpm))?;
        ensure!(
            configs.lines().any(|line| line == config),
            "{} does not mark {config} as a config file",
            rpm.display()
        );
        let scripts = output(
            Command::new(RPM.program)
                .args(["-qp", "--scripts"])
                .arg(&rpm),
        )?;
        for phase in ["postinstall", "preuninstall", "postuninstall"] {
            ensure!(
                scripts.contains(&format!("{phase} scriptlet")),
                "{} has no {phase} scriptlet",
                rpm.display()
            );
        }
        ensure!(
            scripts.contains(script_mark),
            "{}'s %post is not packaging/'s script: {}",
            rpm.display(),
            scripts.lines().take(3).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// The launchd plist the macOS tarball ships, through `plistutil`: to
/// binary, back to XML, and the same keys both ways.
fn check_plist(layout: &Layout) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("dist-plist-")
        .tempdir_in(&layout.target_dir)
        .context("making a temp dir")?;
    let xml = dir.path().join("agent.plist");
    std::fs::write(&xml, super::macos::plist_text()?)?;
    let binary = dir.path().join("agent.bplist");
    let back = dir.path().join("back.plist");
    run_checked(
        Command::new(PLISTUTIL.program)
            .args(["-f", "bin", "-i"])
            .arg(&xml)
            .arg("-o")
            .arg(&binary),
    )?;
    ensure!(
        std::fs::read(&binary)?.starts_with(b"bplist00"),
        "plistutil did not make a binary plist"
    );
    run_checked(
        Command::new(PLISTUTIL.program)
            .args(["-f", "xml", "-i"])
            .arg(&binary)
            .arg("-o")
            .arg(&back),
    )?;
    let back = std::fs::read_to_string(&back)?;
    for needle in [
        "<key>ProgramArguments</key>",
        "<string>/usr/local/bin/deskpulse-agent</string>",
        "<key>KeepAlive</key>",
        "<key>RunAtLoad</key>",
    ] {
        ensure!(
            back.contains(needle),
            "the plist read back by plistutil lacks {needle}"
        );
    }
    Ok(())
}
