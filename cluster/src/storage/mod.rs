//! Durable storage of one member: the Raft log, the state machine's sled tree and its snapshots.
pub mod fsutil;
pub mod log_store;
pub mod sm_store;
pub mod snapshot_cow;
