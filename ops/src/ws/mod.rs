//! The WebSocket side of the client library (docs/protocol.md): a raw connection for protocol
//! tests (`conn`), and the resumable chat session (`session`, the caller's handle; `builder`, its configuration; `task`, the
//! background task that owns the socket; `state`, the bookkeeping it keeps across
//! reconnects: cursors, unacknowledged sends, backoff). The frames are `api::ws`'s.
//!
//! Must never print, never block a caller on the network beyond what it asked for, and never
//! hand the caller the same `(channel, ev)` twice.

pub mod builder;
pub mod conn;
mod connect;
mod inbound;
pub mod session;
pub mod state;
pub(crate) mod task;
