//! The Deskpulse wire contract, package `deskpulse.v1`.
//!
//! The `.proto` sources live in `proto/proto/deskpulse/v1/`. `cargo xtask
//! codegen` compiles them with a pure-Rust protobuf compiler and writes the
//! Rust below into `src/generated/`, which is committed, so no build needs
//! `protoc`. A test in `xtask` fails when the committed copy is stale.
//!
//! # Layout
//! - [`v1`]: the generated messages, clients and servers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.
//! - [`INVENTORY_SCHEMA_VERSION`]: the inventory schema agents write today.
//! - [`catalog`]: the diagnostic catalog (D25): ids, limits, risk, and the
//!   parameter checks the agent and the collector both run.
//! - [`client`]: readable one-line errors for gRPC clients.
//! - [`codec`]: the gRPC codec of every service, with small buffers.
//! - [`sections`]: inventory section names (D16).
//! - [`space`]: disk use as `df` defines it, for every reader.
//! - [`render`]: the text form of inventories and health samples.
//! - [`delta`]: inventory deltas, their canonical hashes and applying them.
//! - [`email`]: a reporter's e-mail address, checked alike by agent and
//!   collector.
//! - [`json`]: enum fields written as names, not numbers, in JSON.
//! - [`parts`]: large reports split into parts on the session stream.
//! - [`limits`]: the inventory limits the collector sets, counted on the
//!   wire and applied by the agent.
//! - [`output`]: how the agent's commands and the CLI write stdout, ending
//!   quietly on a closed pipe.

pub mod catalog;
pub mod client;
pub mod codec;
pub mod delta;
pub mod email;
pub mod json;
pub mod limits;
pub mod output;
pub mod parts;
pub mod render;
pub mod sections;
pub mod space;

/// Generated from `proto/deskpulse/v1/*.proto`; never edit by hand.
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs)] // generated code follows prost's style, not ours
pub mod v1 {
    include!("generated/deskpulse.v1.rs");
}

/// The encoded `FileDescriptorSet` of every `deskpulse.v1` file, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor.bin");

/// The inventory schema version this build writes into
/// [`v1::Inventory::schema_version`]. Raise it when fields are added.
pub const INVENTORY_SCHEMA_VERSION: u32 = 1;
