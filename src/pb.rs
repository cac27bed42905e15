//! Generated protobuf and gRPC code. Only `api`, `raft` and the CLI clients use it; domain code never
//! does.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("raftlot.v1");
}

pub mod peer {
    tonic::include_proto!("raftlot.peer.v1");
}

/// etcd's KV service (Put and Range), for the benchmark's etcd baseline.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// The encoded descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftlot_descriptor");
