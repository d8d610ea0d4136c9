//! `cargo xtask demo`: builds everything, starts a collector on loopback with
//! a local data dir (`.demo/`), enrolls this machine's real agent, reports,
//! and prints `deskpulse hosts` and `deskpulse host show` for this machine.
//! Then it keeps the collector and an agent service running until Ctrl-C
//! and says which CLI lines to try in another terminal. `--no-wait` exits
//! after printing; a test uses that mode.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Print the results and exit instead of running until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
    /// Use the binaries already built instead of running cargo build.
    #[arg(long)]
    pub skip_build: bool,
    /// Where to keep the demo's data [default: WORKSPACE/.demo].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Kills the child when dropped, so a failing demo leaves nothing behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(title: &str, cmd: &mut Command) -> Result<String> {
    println!("\n$ {title}");
    let text = output(cmd)?;
    print!("{text}");
    Ok(text)
}

/// Runs the demo.
pub fn run(root: &Path, args: &DemoArgs) -> Result<()> {
    if !args.skip_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--bins"])
            .current_dir(root)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build failed");
        }
    }
    let bin = target_dir(root);
    let collector_bin = bin.join("deskpulse-collector");
    let agent_bin = bin.join("deskpulse-agent");
    let cli_bin = bin.join("deskpulse");
    for b in [&collector_bin, &agent_bin, &cli_bin] {
        if !b.exists() {
            bail!(
                "{} is missing: run `cargo build --workspace --bins`",
                b.display()
            );
        }
    }
    let demo = args.dir.clone().unwrap_or_else(|| root.join(".demo"));
    // A fresh start each time, so the demo shows first enrollment.
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("clearing {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo)?;
    let data_dir = demo.join("collector");
    let state_dir = demo.join("agent");
    let log = std::fs::File::create(demo.join("collector.log"))?;

    let mut child = Command::new(&collector_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting deskpulse-collector")?;
    let stdout = child.stdout.take().context("collector stdout")?;
    let collector = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).with_context(|| {
        format!(
            "the collector did not start; see {}",
            demo.join("collector.log").display()
        )
    })?;
    let url = format!("https://{addr}");
    let ca_file = data_dir.join("ca.pem");
    println!(
        "collector listening on {url} (data in {})",
        data_dir.display()
    );
    println!("web console: {url}/ (sign in with the admin API token, below)");

    let enroll_token = output(
        Command::new(&collector_bin)
            .args(["enroll-token", "create", "--data-dir"])
            .arg(&data_dir),
    )?;
    let admin_token = std::fs::read_to_string(data_dir.join("initial-admin-token"))
        .context("reading the initial admin token")?
        .trim()
        .to_owned();
    show(
        "deskpulse-agent enroll --collector URL --token TOKEN --ca-file ca.pem",
        Command::new(&agent_bin)
            .args([
                "enroll",
                "--collector",
                &url,
                "--token",
                enroll_token.trim(),
                "--ca-file",
            ])
            .arg(&ca_file)
            .arg("--state-dir")
            .arg(&state_dir),
    )?;
    show(
        "deskpulse-agent run --once",
        Command::new(&agent_bin)
            .args(["run", "--once", "--state-dir"])
            .arg(&state_dir),
    )?;
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(&cli_bin);
        cmd.env("DESKPULSE_URL", &url)
            .env("DESKPULSE_TOKEN", &admin_token)
            .env("DESKPULSE_CA_FILE", &ca_file)
            .args(args);
        cmd
    };
    show("deskpulse hosts", &mut cli(&["hosts"]))?;
    let hosts = output(&mut cli(&["--json", "hosts"]))?;
    let host_id = hosts
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"host_id\": \""))
        .map(|rest| rest.trim_end_matches([',', '"']).to_owned())
        .context("no host in `deskpulse hosts --json`")?;
    show(
        &format!("deskpulse host show {host_id}"),
        &mut cli(&["host", "show", &host_id]),
    )?;
    show(
        "deskpulse tickets --status open",
        &mut cli(&["tickets", "--status", "open"]),
    )?;
    show(
        &format!("deskpulse diagnostics {host_id}"),
        &mut cli(&["diagnostics", &host_id]),
    )?;

    if args.no_wait {
        drop(collector);
        println!("\ndemo finished (--no-wait)");
        return Ok(());
    }
    let agent = Guard(
        Command::new(&agent_bin)
            .args(["run", "--health-interval", "10s", "--state-dir"])
            .arg(&state_dir)
            .stderr(std::fs::File::create(demo.join("agent.log"))?)
            .spawn()
            .context("starting the agent service")?,
    );
    println!(
        "\nThe collector and an agent service (health every 10 s) keep running until Ctrl-C.\n\
         Logs: {dir}/collector.log and {dir}/agent.log. In another terminal, try:\n\n\
         export DESKPULSE_URL={url}\n\
         export DESKPULSE_TOKEN=$(cat {data}/initial-admin-token)\n\
         export DESKPULSE_CA_FILE={ca}\n\
         {cli} hosts\n\
         {cli} host show {host_id}\n\
         {cli} --json host show {host_id}\n\
         {cli} run {host_id} ping --param host=127.0.0.1 --param count=2\n\
         {cli} run {host_id} top_processes --param sort=memory\n\
         {cli} ticket new {host_id} --title \"printer jams\"\n\
         {cli} tickets\n\
         {cli} rules\n\
         {cli} audit --verify\n\
         {agent_bin} report-issue \"Outlook keeps crashing\" --state-dir {state}\n\
         {agent_bin} status --state-dir {state}\n\n\
         The web console is on the same port: open {url}/ in a browser. Its certificate\n\
         comes from the demo's own CA ({ca}): import that CA in the browser, or accept\n\
         the warning. Sign in with the admin API token (`cat {data}/initial-admin-token`),\n\
         or make a local account and sign in with its password:\n\n\
         {collector_bin} user create alice --role admin --data-dir {data}\n",
        dir = demo.display(),
        data = data_dir.display(),
        ca = ca_file.display(),
        cli = cli_bin.display(),
        agent_bin = agent_bin.display(),
        state = state_dir.display(),
        collector_bin = collector_bin.display(),
    );
    let mut collector = collector;
    let status = collector.0.wait()?;
    drop(agent);
    println!("collector exited ({status})");
    Ok(())
}
