//! Generated protobuf and gRPC code. Only `api` and `raft` use it; domain code never does.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("raftlot.v1");
}

pub mod peer {
    tonic::include_proto!("raftlot.peer.v1");
}

/// The encoded descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftlot_descriptor");
