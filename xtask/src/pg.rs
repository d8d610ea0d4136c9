//! `cargo xtask pg`: makes sure a PostgreSQL server answers on
//! 127.0.0.1:5432 (D31). When none does, it creates a cluster under
//! `target/pg` as the `postgres` user with trust auth on 127.0.0.1 and starts
//! it. It installs the server from Debian's packages if `initdb` is missing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const ADDR: &str = "127.0.0.1:5432";

fn answers() -> bool {
    ADDR.parse()
        .ok()
        .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .is_some()
}

/// Starts PostgreSQL unless it already answers.
pub fn ensure_running() -> Result<()> {
    if answers() {
        eprintln!("PostgreSQL answers on {ADDR}");
        return Ok(());
    }
    let bin = match find_pg_bin() {
        Some(bin) => bin,
        None => {
            run(Command::new("apt-get").arg("update"))?;
            run(Command::new("apt-get").args(["install", "-y", "postgresql"]))?;
            find_pg_bin().context("postgresql installed but no initdb found")?
        }
    };
    let data = crate::workspace_root().join("target/pg");
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data))?;
        run(as_postgres(&bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "-D"])
            .arg(&data))?;
    }
    run(as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-l"])
        .arg(data.join("server.log"))
        .args([
            "-o",
            "-c listen_addresses=127.0.0.1 -p 5432 -k /tmp",
            "-w",
            "start",
        ]))?;
    if !answers() {
        bail!("PostgreSQL started but does not answer on {ADDR}");
    }
    eprintln!("started PostgreSQL on {ADDR} (data in {})", data.display());
    Ok(())
}

fn find_pg_bin() -> Option<PathBuf> {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
