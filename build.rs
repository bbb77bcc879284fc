//! Compiles `proto/` with the pure-Rust `protox` compiler (no system `protoc`)
//! and hands the descriptors to tonic's code generator. The same descriptor
//! bytes are written to `OUT_DIR/revocation_descriptor.bin` for gRPC
//! reflection.

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILE: &str = "proto/revocation/v1/revocation.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox prints no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile([PROTO_FILE], [PROTO_ROOT])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("revocation_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Snapshot bitmaps are shared by every subscriber: `Bytes` clones
        // are reference counts, not copies.
        .bytes(".revocation.v1.Snapshot.filter")
        // Delta digests are slices of one buffer per delta, shared by every
        // subscriber: cloning a delta bumps reference counts.
        .bytes(".revocation.v1.Delta.digests")
        .bytes(".revocation.v1.SliceDelta.digests")
        // Both halves are generated; the server half compiles with the
        // `server` feature only, so a gateway build has just the client.
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .compile_fds(descriptors)?;
    Ok(())
}
