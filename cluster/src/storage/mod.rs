//! Durable storage of one member: the Raft log (`log_store`, our own segment files), the state
//! machine's sled tree and its snapshots (`sm_store`; `state_tree` applies an entry's writes so
//! readers see them whole; `snapshot_cow` so a snapshot is built
//! while apply goes on, and `snapshot_file` for the snapshot file and its temp files), and the file primitives both rely on (`fsutil`), and the owner-only data directory
//! (`private_dir`, with its Windows ACL rule in `owner_acl`); what is trusted after a crash or damage: the state machine's proof
//! (`proof`), quarantine and the heal marker (`quarantine`), the checks on open (`recovery`);
//! a fresh one-voter data directory from a state stream (`seed`, for restore and recover),
//! and a stopped member's storage read offline for `recover --force-new-cluster` (`survivor`).
//!
//! Owns what is on disk and when it is durable (what is fsynced before openraft is told an
//! entry or a vote is stored). Must never decide what a command means: `sm_store` hands each
//! entry to `state::apply_request` and commits the writes it returns.

pub mod commit_hint;
pub mod disk_space;
pub mod fsutil;
pub mod log_store;
pub mod owner_acl;
pub mod private_dir;
pub mod proof;
pub mod quarantine;
pub mod recovery;
pub mod seed;
pub mod sm_store;
pub mod snapshot_cow;
pub mod snapshot_file;
pub mod state_tree;
pub mod survivor;
