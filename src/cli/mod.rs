//! The operator commands: `cluster` (a local multi-process cluster), `status` (a table), `member`
//! and `transfer-leader` (membership changes), `health` (a container health check) and `bench`.

mod bench;
mod cluster;
mod connect;
mod health;
mod member;
mod status;

pub use bench::{bench, BenchArgs};
pub use cluster::cluster;
pub use connect::{ClientAccess, Transport};
pub use health::health;
pub use member::{member, transfer_leader};
pub use status::{fetch_status, status};
