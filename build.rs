//! Compiles the protos with the vendored protoc, so a fresh machine needs nothing installed.
//! The public API and the peer protocol get separate descriptor sets: the client port's reflection
//! must list only what the client port serves.

/// Every service and client uses the small-buffer codec in `src/pb.rs` (it says why).
const CODEC: &str = "crate::pb::codec::SmallBuffers";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path(CODEC)
        .file_descriptor_set_path(out.join("raftlot_descriptor.bin"))
        .compile_protos(
            &[
                "proto/raftlot/v1/common.proto",
                "proto/raftlot/v1/counters.proto",
                "proto/raftlot/v1/parking.proto",
                "proto/raftlot/v1/cluster.proto",
                "proto/raftlot/v1/cache.proto",
            ],
            &["proto"],
        )?;
    tonic_prost_build::configure()
        .codec_path(CODEC)
        .file_descriptor_set_path(out.join("raftlot_peer_descriptor.bin"))
        .compile_protos(&["proto/raftlot/peer/v1/peer.proto"], &["proto"])?;
    // etcd's KV and Maintenance services, as a client only: `raftlot bench --etcd` measures etcd with
    // the same driver.
    tonic_prost_build::configure()
        .codec_path(CODEC)
        .build_server(false)
        .compile_protos(&["proto/etcd/rpc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
