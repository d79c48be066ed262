//! The running member.
pub mod batcher;
pub mod ca;
pub mod election_trigger;
pub mod member_health;
pub mod raft_node;
pub mod readiness;
pub mod versions;
