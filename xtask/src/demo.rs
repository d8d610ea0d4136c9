//! `cargo xtask demo`: placeholder until the binaries exist.

use std::path::Path;

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print the results and exit instead of waiting for Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
}

/// Runs the demo.
pub fn run(_root: &Path, _args: &DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo not written yet")
}
