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
    let mut config = tonic_prost_build::configure()
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
        );
    // prost keeps an enum field as its number; JSON shows its name, the
    // same word everywhere (issue 21), through `deskpulse_proto::json`.
    for (path, attribute) in enum_field_attributes(&fds) {
        config = config.field_attribute(path, attribute);
    }
    config
        // Small per-stream buffers: see proto/src/codec.rs.
        .codec_path("crate::codec::SmallBufferCodec")
        .out_dir(out_dir)
        .compile_fds(fds)
        .context("generating Rust from the descriptors")?;
    Ok(())
}

/// A `serialize_with` attribute for every enum-typed field of every
/// message, keyed by the field's full proto path: a plain field, a
/// repeated one and a proto3 `optional` one each have their serializer.
fn enum_field_attributes(fds: &prost_types::FileDescriptorSet) -> Vec<(String, String)> {
    use prost_types::field_descriptor_proto::{Label, Type};
    fn walk(prefix: &str, message: &prost_types::DescriptorProto, out: &mut Vec<(String, String)>) {
        let path = format!("{prefix}.{}", message.name());
        for field in &message.field {
            if field.r#type() != Type::Enum {
                continue;
            }
            // ".deskpulse.v1.ProtectionState" -> "ProtectionState"; an enum
            // inside a message lives in the message's snake_case module.
            let segments: Vec<&str> = field
                .type_name()
                .trim_start_matches(".deskpulse.v1.")
                .split('.')
                .collect();
            let (last, modules) = segments.split_last().unwrap_or((&"", &[]));
            let mut rust: Vec<String> = modules.iter().map(|m| snake_case(m)).collect();
            rust.push((*last).to_owned());
            let rust = rust.join("::");
            let serializer = if field.label() == Label::Repeated {
                "enum_names"
            } else if field.proto3_optional() {
                "optional_enum_name"
            } else {
                "enum_name"
            };
            out.push((
                format!("{path}.{}", field.name()),
                format!(
                    "#[serde(serialize_with = \"crate::json::{serializer}::<crate::v1::{rust}, _>\")]"
                ),
            ));
        }
        for nested in &message.nested_type {
            walk(&path, nested, out);
        }
    }
    let mut out = Vec::new();
    for file in &fds.file {
        let prefix = format!(".{}", file.package());
        for message in &file.message_type {
            walk(&prefix, message, &mut out);
        }
    }
    out
}

/// A message name as prost names its module: `HostSummary` -> `host_summary`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `cargo xtask codegen`: regenerates the committed files in place.
pub fn run(root: &Path) -> Result<()> {
    let dir = committed_dir(root);
    generate(root, &dir)?;
    eprintln!("regenerated {}", dir.display());
    Ok(())
}
