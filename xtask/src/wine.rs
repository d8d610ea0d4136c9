//! Wine for our Windows binaries: `cargo xtask test-windows` runs the
//! agent's and proto's tests for `x86_64-pc-windows-gnu` under Wine 8, and
//! `cargo xtask wine` prepares the same Wine for a shell or another test.
//!
//! [`prepare`] installs what is missing (as root, from Debian's packages),
//! then keeps a Wine prefix of our own under the target dir
//! (`target/wine/prefix`), set up once and reused: later runs only check a
//! stamp. [`Wine::start`] starts the prefix's wineserver for the length of a
//! run. Four traps of Wine 8 shape it:
//!
//! 1. Every Rust program exits 53 without a word: the standard library
//!    imports `ProcessPrng` from `bcryptprimitives.dll`, which Wine 8 lacks.
//!    A stand-in DLL built with mingw from `xtask/wine/bcryptprimitives.c`
//!    goes into the prefix's `system32`.
//! 2. wineserver exits a few seconds after the last Wine process and takes
//!    any running service with it: the run keeps one persistent
//!    (`wineserver -p`) and shuts it down when it ends.
//! 3. Wine's background processes keep the stdout and stderr of the Wine
//!    command that started them, so a piped run never sees end of file:
//!    they are started first by `wine cmd /c exit` with stdin from
//!    `/dev/null` and its output in a log file (`target/wine/wine.log`).
//! 4. A program that crashes starts Wine's debugger, winedbg, which itself
//!    crashes on some of these (seen with a page fault in Wine's WMI), and
//!    the program then exits 0: a crashed test binary passed. winedbg is
//!    turned off, so a crash ends the program with its exception code
//!    (`0xC0000005` shows as exit status 5).
//!
//! Other code runs Wine the same way through [`Wine::env`] and
//! [`Wine::command`]. Around the Linux tests, `cargo xtask test` exports
//! [`Wine::env`] and [`PREFIX_VAR`], so an end-to-end test can run the
//! agent's `.exe` with a plain `wine` once it sees [`PREFIX_VAR`].

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The Rust target whose binaries run under Wine.
pub const TARGET: &str = "x86_64-pc-windows-gnu";

/// Set to the prepared prefix around the Linux tests of `cargo xtask test`,
/// with [`Wine::env`] beside it and the wineserver running: a test that
/// needs Wine runs when it is set.
pub const PREFIX_VAR: &str = "DESKPULSE_WINE_PREFIX";

/// Debian's packages for the programs [`prepare`] needs.
const PACKAGES: [&str; 3] = ["wine64", "wine", "gcc-mingw-w64-x86-64"];
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// The stand-in DLL's sources, kept in the repository (trap 1).
const DLL_SOURCE: &str = include_str!("../wine/bcryptprimitives.c");
const DLL_EXPORTS: &str = include_str!("../wine/bcryptprimitives.def");
const DLL_NAME: &str = "bcryptprimitives.dll";

/// A Wine prefix set up for our binaries.
#[derive(Debug, Clone)]
pub struct Wine {
    prefix: PathBuf,
    log: PathBuf,
}

/// Makes sure Wine and mingw are installed and the prefix under
/// `target_dir/wine` is set up, doing only what is missing: when the prefix
/// is ready it costs a few file checks.
pub fn prepare(target_dir: &Path) -> Result<Wine> {
    install_tools()?;
    let home = target_dir.join("wine");
    fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let wine = Wine {
        prefix: home.join("prefix"),
        log: home.join("wine.log"),
    };
    let stamp_path = home.join("prepared");
    let stamp = recipe()?;
    let dll = wine.system32().join(DLL_NAME);
    let ready = fs::read_to_string(&stamp_path).is_ok_and(|text| text == stamp)
        && wine.prefix.join("system.reg").is_file()
        && dll.is_file();
    if ready {
        return Ok(wine);
    }
    // Stamped only once everything below has finished, so an interrupted
    // set-up is redone rather than trusted.
    let _ = fs::remove_file(&stamp_path);
    eprintln!(
        "preparing Wine in {} (once; a few seconds)",
        wine.prefix.display()
    );
    let built = build_dll(&home)?;
    wine.run_quietly("wineboot", &["-i"])?;
    wine.run_quietly("winecfg", &["/v", "win10"])?;
    fs::copy(&built, &dll).with_context(|| format!("copying {DLL_NAME} to {}", dll.display()))?;
    // The registry reaches the prefix's files when wineserver exits: stop
    // it before calling the prefix ready.
    wine.stop_server();
    fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(wine)
}

impl Wine {
    /// The prefix (`WINEPREFIX`).
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The environment every Wine command of ours runs with: our prefix, no
    /// debug chatter, no prompt to install Mono or Gecko, and no debugger
    /// (trap 4).
    pub fn env(&self) -> [(&'static str, OsString); 3] {
        [
            ("WINEPREFIX", self.prefix.clone().into_os_string()),
            ("WINEDEBUG", "-all".into()),
            ("WINEDLLOVERRIDES", "mscoree,mshtml=;winedbg.exe=d".into()),
        ]
    }

    /// `wine PROGRAM` in our prefix and environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("wine");
        cmd.arg(program).envs(self.env());
        cmd
    }

    /// Starts the prefix's wineserver, persistent until the returned guard
    /// is dropped (trap 2), and Wine's background processes with no stream
    /// of ours to hold open (trap 3). A wineserver already running in the
    /// prefix is kept, and shut down with the guard all the same.
    pub fn start(&self) -> Result<WineServer> {
        let log = self.open_log()?;
        // Not a pipe: the server goes on in the background with these
        // streams, and a pipe would never see its end.
        let status = self
            .server_command()
            .arg("-p")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("running wineserver -p")?;
        // wineserver exits 2 when one already serves the prefix. That one
        // is kept; it is persistent unless a Wine command was run in this
        // prefix by hand a moment ago.
        if !status.success() && status.code() != Some(2) {
            bail!("wineserver -p failed ({status}): {}", self.last_logged());
        }
        let server = WineServer(self.clone());
        self.run_quietly("cmd", &["/c", "exit"])?;
        Ok(server)
    }

    fn system32(&self) -> PathBuf {
        self.prefix.join("drive_c/windows/system32")
    }

    fn server_command(&self) -> Command {
        let mut cmd = Command::new("wineserver");
        cmd.envs(self.env());
        cmd
    }

    /// Runs `wine PROGRAM ARGS` with stdin empty and its output, and that
    /// of the background processes it may start, appended to the log.
    fn run_quietly(&self, program: &str, args: &[&str]) -> Result<()> {
        let log = self.open_log()?;
        let status = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("running wine {program}"))?;
        if !status.success() {
            bail!(
                "wine {program} {} failed ({status}): {}",
                args.join(" "),
                self.last_logged()
            );
        }
        Ok(())
    }

    /// Stops the prefix's wineserver, if one runs, and every Wine process
    /// with it; the server saves the registry as it goes.
    fn stop_server(&self) {
        let quiet = |flag: &str| {
            self.server_command()
                .arg(flag)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        // -k fails when no server runs; -w then returns at once.
        let _ = quiet("-k");
        let _ = quiet("-w");
    }

    /// The last line Wine wrote to the log, to say why a command failed.
    fn last_logged(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        match text.lines().rev().find(|line| !line.trim().is_empty()) {
            Some(line) => format!("{} (in {})", line.trim(), self.log.display()),
            None => format!("nothing in {}", self.log.display()),
        }
    }

    fn open_log(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))
    }
}

/// The prefix's persistent wineserver; dropping it shuts the server down,
/// with every Wine process of the prefix.
#[derive(Debug)]
pub struct WineServer(Wine);

impl WineServer {
    /// The Wine this server runs for.
    pub fn wine(&self) -> &Wine {
        &self.0
    }

    /// Leaves the server running after this process, for a shell to use
    /// (`wineserver -k` stops it).
    pub fn leave_running(self) {
        std::mem::forget(self);
    }
}

impl Drop for WineServer {
    fn drop(&mut self) {
        self.0.stop_server();
    }
}

/// What a ready prefix was made from: the Wine version and the DLL's
/// sources. A change to either makes [`prepare`] set the prefix up again.
fn recipe() -> Result<String> {
    let version = Command::new("wine")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running wine --version")?;
    let mut sources = Sha256::new();
    sources.update(DLL_SOURCE);
    sources.update(DLL_EXPORTS);
    Ok(format!(
        "{}\nwin10\n{DLL_NAME} {}\n",
        String::from_utf8_lossy(&version.stdout).trim(),
        hex::encode(sources.finalize())
    ))
}

/// Builds the stand-in `bcryptprimitives.dll` (trap 1) in `dir`.
fn build_dll(dir: &Path) -> Result<PathBuf> {
    let source_dir = crate::workspace_root().join("xtask/wine");
    let out = dir.join(DLL_NAME);
    let output = Command::new(MINGW_GCC)
        .args(["-shared", "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(source_dir.join("bcryptprimitives.c"))
        .arg(source_dir.join("bcryptprimitives.def"))
        .arg("-lbcrypt")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {MINGW_GCC}"))?;
    if !output.status.success() {
        bail!(
            "{MINGW_GCC} could not build {DLL_NAME} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(out)
}

/// Installs Wine and mingw when either is missing: with apt-get as root,
/// otherwise a one-line error naming the command to run.
fn install_tools() -> Result<()> {
    let missing: Vec<&str> = ["wine", "wineserver", MINGW_GCC]
        .into_iter()
        .filter(|program| !on_path(program))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", PACKAGES.join(" "));
    if !is_root() {
        bail!(
            "{} missing: run `sudo apt-get update && sudo {install}`",
            missing.join(", ")
        );
    }
    eprintln!("installing {} for the Windows tests", PACKAGES.join(" "));
    for args in [
        vec!["update", "-qq"],
        [&["install", "-y", "-qq"][..], &PACKAGES[..]].concat(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// Adds the Windows target to the toolchain through rustup when it is not
/// there yet (a fresh CI machine).
pub fn install_target() -> Result<()> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        // No rustup: the toolchain came some other way, and cargo says
        // clearly if it cannot build for the target.
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdin(Stdio::null())
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[allow(unsafe_code)] // geteuid(2) has no arguments and cannot fail
fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Builds the agent's Windows binaries (`deskpulse-agent.exe`), for tests
/// that run them under Wine.
pub fn build(root: &Path) -> Result<()> {
    install_target()?;
    cargo(
        root,
        &[
            "build",
            "-p",
            "deskpulse-agent",
            "--bins",
            "--target",
            TARGET,
        ],
        None,
    )
}

/// Runs the agent's and proto's tests built for Windows, each test binary
/// under Wine in `server`'s prefix (cargo's runner for the target); `args`
/// go to `cargo test`.
///
/// The runner is set here rather than in `.cargo/config.toml` so that it
/// always comes with the prefix this module prepared: a plain `cargo test
/// --target x86_64-pc-windows-gnu` with `wine` as its runner would use
/// `~/.wine`, where every Rust program exits 53 without a word (trap 1).
pub fn test(root: &Path, server: &WineServer, args: &[String]) -> Result<()> {
    install_target()?;
    let mut test = vec![
        "test",
        "-p",
        "deskpulse-agent",
        "-p",
        "deskpulse-proto",
        "--target",
        TARGET,
    ];
    test.extend(args.iter().map(String::as_str));
    cargo(root, &test, Some(server.wine()))
}

fn cargo(root: &Path, args: &[&str], wine: Option<&Wine>) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(root);
    if let Some(wine) = wine {
        cmd.envs(wine.env())
            .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER", "wine");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
