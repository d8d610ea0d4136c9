//! `cargo xtask bench-agent`: what the agent costs on this machine, beside
//! the peer agents from Debian's packages, measured in the same run (issue 4,
//! D34, D36).
//!
//! - One full inventory, as `deskpulse-agent inventory --json` does it: wall
//!   time and CPU time (from `wait4`) and the program's own peak RSS (its
//!   `VmHWM` at exit, see `measure`), over several runs; the same for
//!   `fusioninventory-agent --local` and `ocsinventory-agent --local`.
//! - The full inventory on the wire: protobuf, zstd-compressed (D17).
//! - The agent as a service, holding its stream to a collector with default
//!   intervals, idle: PSS summed over its processes (D36) and CPU share, over
//!   a window (10 minutes by default), side by side with `zabbix_agentd`,
//!   `zabbix_agent2` and `prometheus-node-exporter` running in the same
//!   window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prost::Message;

/// Options of `cargo xtask bench-agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How long to watch the idle services, in seconds.
    #[arg(long, default_value_t = 600)]
    pub idle_secs: u64,
    /// One-shot inventory runs per program.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Do not run the peer agents.
    #[arg(long)]
    pub skip_peers: bool,
    /// Use the release binaries already built.
    #[arg(long)]
    pub skip_build: bool,
    /// Also run the Windows agent's inventory under Wine (built with the
    /// same profile for x86_64-pc-windows-gnu), beside the Linux one.
    /// Indicative only: Wine's WMI is not Windows'.
    #[arg(long)]
    pub windows: bool,
}

/// Wall, CPU and peak RSS of one finished process.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Runs `cmd` to completion: wall time, CPU time from wait4(2), and the
/// program's own peak RSS, read from `/proc/PID/status` (`VmHWM`) when it
/// exits.
///
/// Not `ru_maxrss`: at exec Linux folds the high-water mark of the memory
/// the child had before into it, and Rust spawns with vfork, so that memory
/// is xtask's own (13.5 MiB "peak" for an agent whose own peak is under
/// 6 MiB). The child is traced (`PTRACE_TRACEME`) only to stop it at its
/// exit, while its memory still exists; every signal it gets is passed on.
fn measure(cmd: &mut Command) -> Result<Cost> {
    trace_me(cmd);
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?} under ptrace (needs ptrace permitted, e.g. kernel.yama.ptrace_scope < 3)"))?;
    let pid = i32::try_from(child.id()).context("pid")?;
    let mut traced = false;
    let mut peak_kib = None;
    let (status, usage) = loop {
        let (status, usage) = wait4(pid)?;
        if !libc::WIFSTOPPED(status) {
            break (status, usage);
        }
        let mut deliver = 0;
        if !traced {
            // The SIGTRAP after the first exec: from now on, stop at exit,
            // and let later execs (wine's loader chain) pass quietly.
            ptrace(
                libc::PTRACE_SETOPTIONS,
                pid,
                libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL,
            )?;
            traced = true;
        } else if status >> 16 == libc::PTRACE_EVENT_EXIT {
            peak_kib = vm_hwm_kib(pid);
        } else if status >> 16 == 0 {
            deliver = libc::WSTOPSIG(status);
        }
        ptrace(libc::PTRACE_CONT, pid, deliver)?;
    };
    let wall = started.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} exited with wait status {status:#x}");
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(Cost {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: peak_kib.with_context(|| format!("{cmd:?}: no VmHWM at its exit"))?,
    })
}

/// `VmHWM` of a live (or exit-stopped) process, in KiB.
fn vm_hwm_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[allow(unsafe_code)] // ptrace(2) in the child before exec; see measure
fn trace_me(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the hook makes one async-signal-safe
    // system call and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)] // ptrace(2) requests on our own stopped child, with integer arguments only
fn ptrace(request: libc::c_uint, pid: i32, data: i32) -> Result<()> {
    // SAFETY: SETOPTIONS and CONT take no pointers; `data` is an integer.
    let rc = unsafe { libc::ptrace(request, pid, 0, libc::c_long::from(data)) };
    if rc == -1 {
        bail!(
            "ptrace({request}) on {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[allow(unsafe_code)] // wait4(2) is the only way to get one child's rusage; the pointers are to locals
fn wait4(pid: i32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    Ok((status, usage))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

struct OneShot {
    name: String,
    wall_ms: f64,
    cpu_ms: f64,
    rss_mib: f64,
    rss_max_mib: f64,
}

fn one_shot(name: &str, runs: usize, mut make: impl FnMut() -> Command) -> Result<OneShot> {
    let mut costs = Vec::new();
    for _ in 0..runs {
        costs.push(measure(&mut make())?);
    }
    Ok(OneShot {
        name: name.to_owned(),
        wall_ms: median(costs.iter().map(|c| c.wall.as_secs_f64() * 1e3).collect()),
        cpu_ms: median(costs.iter().map(|c| c.cpu.as_secs_f64() * 1e3).collect()),
        rss_mib: median(
            costs
                .iter()
                .map(|c| c.max_rss_kib as f64 / 1024.0)
                .collect(),
        ),
        rss_max_mib: costs
            .iter()
            .map(|c| c.max_rss_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
    })
}

/// The Windows agent's `inventory --json` under Wine, measured like the
/// Linux one. The process `wine` starts becomes the program itself, so
/// its CPU time and VmHWM are its own; the persistent wineserver's share
/// is not counted.
fn windows_inventory(
    root: &Path,
    target: &Path,
    args: &BenchArgs,
) -> Result<(crate::wine::WineServer, OneShot)> {
    if !args.skip_build {
        crate::wine::install_target()?;
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--profile",
                "agent-release",
                "-p",
                "deskpulse-agent",
            ])
            .args(["--target", crate::wine::TARGET])
            .current_dir(root)
            .status()?;
        if !status.success() {
            bail!(
                "cargo build --profile agent-release --target {} failed",
                crate::wine::TARGET
            );
        }
    }
    let exe = target
        .join(crate::wine::TARGET)
        .join("agent-release")
        .join("deskpulse-agent.exe");
    if !exe.exists() {
        bail!("{} is missing: run without --skip-build", exe.display());
    }
    let server = crate::wine::prepare(target)?.start()?;
    // The first start loads Wine's own DLLs and services; it is not ours.
    measure(server.wine().command(&exe).args(["inventory", "--json"]))?;
    let shot = one_shot(
        "deskpulse-agent.exe inventory --json (Wine)",
        args.runs,
        || {
            let mut c = server.wine().command(&exe);
            c.args(["inventory", "--json"]);
            c
        },
    )?;
    Ok((server, shot))
}

/// PSS in KiB of one process, from smaps_rollup (D36).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU ticks (utime + stime) of one process.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; here 0-based after ')' they are 11 and 12.
    num(11) + num(12)
}

/// The pid and every descendant of it.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                    parents.insert(pid, ppid);
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| **p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

struct Daemon {
    name: String,
    child: Child,
    start_ticks: u64,
    max_pss_kib: u64,
}

impl Daemon {
    fn ticks(&self) -> u64 {
        process_tree(self.child.id())
            .into_iter()
            .map(cpu_ticks)
            .sum()
    }
    fn pss(&self) -> u64 {
        process_tree(self.child.id()).into_iter().map(pss_kib).sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for pid in process_tree(self.child.id()).into_iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.wait();
    }
}

fn daemon(name: &str, cmd: &mut Command) -> Result<Daemon> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Daemon {
        name: name.to_owned(),
        child,
        start_ticks: 0,
        max_pss_kib: 0,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists())
}

/// Starts a collector and an enrolled agent service in `dir`; returns both.
fn start_agent_service(
    root: &Path,
    release: &Path,
    agent_bin: &Path,
    dir: &Path,
) -> Result<(Daemon, Daemon)> {
    let debug = root.join("target/debug");
    let collector_bin = if release.join("deskpulse-collector").exists() {
        release.join("deskpulse-collector")
    } else {
        debug.join("deskpulse-collector")
    };
    let data = dir.join("collector");
    let state = dir.join("agent");
    let mut child = Command::new(&collector_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the collector")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .context("no listening line")?
        .to_owned();
    let collector = Daemon {
        name: "collector".into(),
        child,
        start_ticks: 0,
        max_pss_kib: 0,
    };
    let token = Command::new(&collector_bin)
        .args(["enroll-token", "create", "--data-dir"])
        .arg(&data)
        .output()?;
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let status = Command::new(agent_bin)
        .args([
            "enroll",
            "--collector",
            &format!("https://{addr}"),
            "--token",
            &token,
            "--ca-file",
        ])
        .arg(data.join("ca.pem"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("enrolling the benchmark agent failed");
    }
    let agent = daemon(
        "deskpulse-agent run",
        Command::new(agent_bin)
            .args(["run", "--state-dir"])
            .arg(&state)
            // D24: the idle budget counts every slow probe; posture and
            // SMART run by default, the services probe only with a list.
            .env(
                "DESKPULSE_AGENT_HEALTH_WATCH_SERVICES",
                "cron.service,ssh.service",
            ),
    )?;
    Ok((collector, agent))
}

/// Runs the benchmark and prints the tables.
pub fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    if !args.skip_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "deskpulse-agent",
                "-p",
                "deskpulse-collector",
            ])
            .current_dir(root)
            .status()?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--profile",
                "agent-release",
                "-p",
                "deskpulse-agent",
            ])
            .current_dir(root)
            .status()?;
        if !status.success() {
            bail!("cargo build --profile agent-release failed");
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target.join("release");
    // The agent is measured as it ships: the small `agent-release` build.
    let agent_bin = target.join("agent-release").join("deskpulse-agent");
    if !agent_bin.exists() {
        bail!(
            "{} is missing: run without --skip-build",
            agent_bin.display()
        );
    }

    // One full inventory.
    let mut shots = vec![one_shot(
        "deskpulse-agent inventory --json",
        args.runs,
        || {
            let mut c = Command::new(&agent_bin);
            c.args(["inventory", "--json"]);
            c
        },
    )?];
    // Held to the end of the run: its wineserver serves every Wine start.
    let mut _wine_server = None;
    if args.windows {
        let (server, shot) = windows_inventory(root, &target, args)?;
        shots.push(shot);
        _wine_server = Some(server);
    }
    let scratch = tempfile::tempdir()?;
    if !args.skip_peers {
        for (name, program, extra) in [
            (
                "fusioninventory-agent --local",
                "fusioninventory-agent",
                vec!["--local"],
            ),
            (
                "ocsinventory-agent --local",
                "ocsinventory-agent",
                vec!["--local"],
            ),
        ] {
            match which(program) {
                Some(path) => {
                    let out = scratch.path().join(program);
                    std::fs::create_dir_all(&out)?;
                    let runs = args.runs.min(3);
                    match one_shot(name, runs, || {
                        let mut c = Command::new(&path);
                        c.args(&extra).arg(&out);
                        c
                    }) {
                        Ok(shot) => shots.push(shot),
                        Err(error) => eprintln!("{name}: {error:#}"),
                    }
                }
                None => eprintln!("{program} is not installed: apt-get install {program}"),
            }
        }
    }
    println!(
        "\nOne full inventory (medians of runs; peak RSS is the program's own VmHWM at exit, median and max)"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "program", "wall ms", "CPU ms", "RSS MiB", "max MiB", "wall x", "CPU x"
    );
    let ours = (shots[0].wall_ms, shots[0].cpu_ms);
    for s in &shots {
        println!(
            "{:<36} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.1} {:>8.1}",
            s.name,
            s.wall_ms,
            s.cpu_ms,
            s.rss_mib,
            s.rss_max_mib,
            s.wall_ms / ours.0.max(0.001),
            s.cpu_ms / ours.1.max(0.001)
        );
    }

    // The inventory on the wire.
    let inventory = deskpulse_agent::collect::collect_inventory(Path::new("/"));
    let packages = inventory.software.as_ref().map_or(0, |s| s.packages.len());
    let encoded = inventory.encode_to_vec();
    let compressed = zstd::encode_all(encoded.as_slice(), 3)?;
    println!(
        "\nFull inventory on the wire: {} bytes protobuf, {} bytes zstd (level 3), {packages} packages",
        encoded.len(),
        compressed.len()
    );

    // Idle services.
    let dir = tempfile::tempdir()?;
    let (collector, agent) = start_agent_service(root, &release, &agent_bin, dir.path())?;
    let mut daemons = vec![agent];
    if !args.skip_peers {
        let peers: Vec<(&str, &str, Vec<String>)> = vec![
            (
                "zabbix_agentd",
                "zabbix_agentd",
                vec![
                    "-f".into(),
                    "-c".into(),
                    "/etc/zabbix/zabbix_agentd.conf".into(),
                ],
            ),
            (
                "zabbix_agent2",
                "zabbix_agent2",
                vec![
                    "-c".into(),
                    zabbix_agent2_config(dir.path())?.display().to_string(),
                ],
            ),
            (
                "prometheus-node-exporter",
                "prometheus-node-exporter",
                vec!["--web.listen-address=127.0.0.1:19100".into()],
            ),
        ];
        for (name, program, peer_args) in peers {
            let path = which(program).or_else(|| {
                let sbin = Path::new("/usr/sbin").join(program);
                sbin.exists().then_some(sbin)
            });
            match path {
                Some(path) => match daemon(name, Command::new(path).args(&peer_args)) {
                    Ok(d) => daemons.push(d),
                    Err(error) => eprintln!("{name}: {error:#}"),
                },
                None => eprintln!("{program} is not installed"),
            }
        }
    }
    // Let start-up work (the first inventory, handshakes) settle first.
    std::thread::sleep(Duration::from_secs(15));
    for d in &mut daemons {
        d.start_ticks = d.ticks();
    }
    let window = Duration::from_secs(args.idle_secs);
    let started = Instant::now();
    eprintln!("watching idle services for {}s ...", window.as_secs());
    while started.elapsed() < window {
        for d in &mut daemons {
            d.max_pss_kib = d.max_pss_kib.max(d.pss());
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    println!("\nIdle as a service over {elapsed:.0}s (PSS summed over the process tree, D36)");
    println!(
        "{:<28} {:>12} {:>12} {:>10} {:>10}",
        "program", "PSS MiB", "CPU % core", "PSS x", "CPU x"
    );
    let ours_pss = daemons[0].max_pss_kib as f64;
    let ours_cpu = (daemons[0].ticks() - daemons[0].start_ticks) as f64 / hz / elapsed * 100.0;
    for d in &daemons {
        let cpu = (d.ticks().saturating_sub(d.start_ticks)) as f64 / hz / elapsed * 100.0;
        println!(
            "{:<28} {:>12.2} {:>12.4} {:>10.1} {:>10}",
            d.name,
            d.max_pss_kib as f64 / 1024.0,
            cpu,
            d.max_pss_kib as f64 / ours_pss.max(1.0),
            if ours_cpu > 0.0 {
                format!("{:.1}", cpu / ours_cpu)
            } else {
                "n/a".into()
            }
        );
    }
    drop(daemons);
    drop(collector);
    Ok(())
}

/// zabbix_agent2's packaged config with its own port, socket and log, so it
/// runs beside zabbix_agentd (both default to port 10050) instead of
/// failing to bind.
fn zabbix_agent2_config(dir: &Path) -> Result<PathBuf> {
    let packaged = "/etc/zabbix/zabbix_agent2.conf";
    let text = std::fs::read_to_string(packaged).unwrap_or_default();
    let mut config: String = text
        .lines()
        .filter(|l| {
            ![
                "ListenPort=",
                "ControlSocket=",
                "LogFile=",
                "LogType=",
                "PidFile=",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        // Relative includes are relative to the packaged file's directory.
        .map(|l| l.replace("Include=./", "Include=/etc/zabbix/") + "\n")
        .collect();
    config.push_str(&format!(
        "ListenPort=10052\nControlSocket={0}/agent2.sock\nLogType=file\nLogFile={0}/agent2.log\nPidFile={0}/agent2.pid\n",
        dir.display()
    ));
    let path = dir.join("zabbix_agent2.conf");
    std::fs::write(&path, config)?;
    Ok(path)
}
