//! Compiles the gRPC contract in `proto/` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("vantage_descriptor.bin"))
        // The public API's messages double as the CLI's `--json` output.
        .type_attribute(".vantage.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_protos(&["proto/vantage.proto", "proto/raft.proto"], &["proto"])?;
    // The health protocol the `grpc` check asks (not served, so not in the
    // descriptors reflection shows).
    tonic_build::configure().compile_protos(&["proto/health.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
