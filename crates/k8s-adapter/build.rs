//! Compiles `proto/csi.proto` without `protoc`: `protox` parses it into a
//! descriptor set, `tonic-prost-build` generates the messages, clients and
//! servers from that set, and the encoded set is kept in `OUT_DIR` so the
//! crate can serve it over gRPC reflection.

use std::{env, error::Error, fs, path::PathBuf};

/// The proto file, relative to the crate root.
const CSI_PROTO: &str = "proto/csi.proto";
/// Include directory for imports between our own protos.
const PROTO_DIR: &str = "proto";
/// File name of the encoded descriptor set inside `OUT_DIR`.
const DESCRIPTOR_FILE: &str = "csi_descriptor_set.bin";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={CSI_PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([PROTO_DIR])?;
    compiler
        .include_source_info(true)
        // Imports are included so reflection clients can resolve the
        // google.protobuf types csi.proto refers to.
        .include_imports(true)
        .open_file(CSI_PROTO)?;

    // Encoded by protox itself: a round trip through prost_types would
    // drop the custom options (csi_secret, alpha_*), which then would be
    // missing from what reflection serves.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
