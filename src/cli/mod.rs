//! The operator commands: `cluster` (a local multi-process cluster) and `status` (a table).

mod cluster;
mod status;

pub use cluster::cluster;
pub use status::{fetch_status, status};
