//! `cargo xtask codegen`: compiles `proto/proto/**/*.proto` with `protox` (pure
//! Rust, no `protoc`) and writes the generated Rust and the encoded descriptor
//! set into `proto/src/generated/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

/// The `.proto` files, relative to the include root `proto/proto`.
const PROTO_FILES: &[&str] = &[
    "deskpulse/v1/agent.proto",
    "deskpulse/v1/diagnostics.proto",
    "deskpulse/v1/enrollment.proto",
    "deskpulse/v1/inventory.proto",
    "deskpulse/v1/technician.proto",
];

/// Where the committed generated files live.
pub fn committed_dir(root: &Path) -> PathBuf {
    root.join("proto/src/generated")
}

/// Generates the Rust code and descriptor set for the protos under `root`
/// into `out_dir`.
pub fn generate(root: &Path, out_dir: &Path) -> Result<()> {
    let include = root.join("proto/proto");
    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| include.join(f)).collect();
    let fds = protox::compile(&files, [&include]).context("compiling the .proto files")?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())
        .context("writing descriptor.bin")?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Serialize lets `--json` output and fixtures reuse the wire types.
        .type_attribute(".deskpulse.v1", "#[derive(serde::Serialize)]")
        // A value that was not read is absent from JSON, never 0 (issue 21).
        .field_attribute(
            ".deskpulse.v1.SecurityInfo.pending_updates",
            "#[serde(skip_serializing_if = \"Option::is_none\")]",
        )
        .field_attribute(
            ".deskpulse.v1.Filesystem.used_bytes",
            "#[serde(skip_serializing_if = \"Option::is_none\")]",
        )
        // Small per-stream buffers: see proto/src/codec.rs.
        .codec_path("crate::codec::SmallBufferCodec")
        .out_dir(out_dir)
        .compile_fds(fds)
        .context("generating Rust from the descriptors")?;
    Ok(())
}

/// `cargo xtask codegen`: regenerates the committed files in place.
pub fn run(root: &Path) -> Result<()> {
    let dir = committed_dir(root);
    generate(root, &dir)?;
    eprintln!("regenerated {}", dir.display());
    Ok(())
}
