//! Joining a cluster with a single-use join token: the joining node's side (`joiner`, which is
//! `conclave join`) and the seed's side (`seed`, what `POST /api/v1/join` needs from this node).
//!
//! Must never hand out or accept the KEK over plain HTTP; each side enforces that on its own,
//! so neither trusts the other to have checked.

mod joiner;
mod seed;

pub use joiner::join_and_run;
pub use seed::JoinService;
