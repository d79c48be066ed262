//! `ops`: the client library for the Conclave HTTP API (docs/api.md), used by `conclavectl`,
//! the chaos tests and benchmarks.
//!
//! The crate owns talking to a cluster over HTTP: typed requests and responses,
//! the error type ([`ClientError`]) and failover between nodes. It must never print, never
//! panic on anything a server or a caller passes in, and never hold cluster state beyond the
//! current server and the bearer token.
//!
//! # Failover
//!
//! Requests go to the current server. On a transport failure (connection refused or reset,
//! timeout) or an HTTP 503 `unavailable`, the client moves to the next server in round-robin
//! order and retries with jittered, capped exponential backoff (25 ms doubling to 500 ms) until
//! the failover deadline ([`Client::with_failover_deadline`], default 10 s); then it returns
//! [`ClientError::Unreachable`], or the last 503 [`ClientError::Api`] error.
//!
//! A transport failure is retried only when a retry is safe:
//! * reads (GET), [`Client::post_message`] (the server deduplicates by
//!   `(author, client_msg_id)`, so a retry returns the original with `duplicate = true`) and
//!   [`Client::login`] (a retry only creates another session): always;
//! * every other write (`create_user`, `create_channel`, `join_channel`, `add_node`,
//!   `remove_node`, `logout`): only when the connection was never established. A failure after
//!   the request was sent returns `Unreachable` at once, since the write may have happened.
//!
//! A 503 `unavailable` is retried for every request (the server guarantees a failed request
//! wrote nothing). Every other error status (4xx, 500) is returned immediately, never retried.
//! [`Client::healthz`] and [`Client::readyz`] probe the current server only, without failover.

mod backoff;
mod client;
mod error;
mod failover;
mod ids;
mod servers;
mod types;

pub use client::Client;
pub use error::ClientError;
pub use ids::new_client_msg_id;
pub use types::{
    Channel, ClusterStatus, LoginResponse, Message, MessagePage, NodeStatus, PostOutcome, Readyz,
    Role, User,
};
