//! Generated gRPC code for `proto/` and the encoded descriptors for reflection.

#![allow(clippy::all, missing_docs)]

/// Internal agent-to-agent service.
pub mod raft {
    tonic::include_proto!("vantage.raft.v1");
}

/// Public admin and query API.
pub mod v1 {
    tonic::include_proto!("vantage.v1");
}

/// The standard health-checking protocol, asked by the `grpc` check.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// Encoded descriptors of every service, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vantage_descriptor");
