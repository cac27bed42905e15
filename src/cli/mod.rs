//! The operator commands: `cluster` (a local multi-process cluster), `status` (a table) and `bench`.

mod bench;
mod cluster;
mod status;

pub use bench::{bench, BenchArgs};
pub use cluster::cluster;
pub use status::{fetch_status, status};
