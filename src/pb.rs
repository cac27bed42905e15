//! Generated protobuf and gRPC code. Only `api`, `raft` and the CLI clients use it; domain code never
//! does.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("raftlot.v1");
}

pub mod peer {
    tonic::include_proto!("raftlot.peer.v1");
}

/// etcd's KV service (Put and Range) and its Maintenance Status, for the benchmark's etcd baseline.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// The encoded descriptors, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftlot_descriptor");

/// The codec every generated client and server uses: prost's, with 512-byte first buffers instead
/// of tonic's 8 KiB. Each call allocates one buffer to encode and one to decode; at 8 KiB those are
/// glibc "large" requests, and each one makes malloc consolidate its fast bins: malloc was a fifth
/// of a busy leader's CPU samples with 8 KiB and under a tenth with these. Our messages are a few
/// dozen bytes; a buffer grows when a bigger one (an AppendEntries batch, a snapshot) comes along.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    const FIRST_BUFFER: usize = 512;
    /// tonic's default: how much a streaming encoder buffers before it yields.
    const YIELD_THRESHOLD: usize = 32 * 1024;

    #[derive(Debug, Clone, Default)]
    pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

    impl<T, U> Codec for SmallBuffers<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::raw_decoder(BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD))
        }
    }
}
