//! The WebSocket protocol (`GET /api/v1/ws`, docs/protocol.md) on the server: one task per
//! connection (`conn`, `commands`), the node's hub that fans applied events out to them
//! (`hub`), typing and presence between nodes (`presence`), and the frame format as the server
//! uses it (`frames`).
//!
//! Must never buffer without bound (every connection has a bounded queue; a full one closes
//! it as a slow consumer) or write to the Raft log for anything ephemeral.

mod commands;
pub mod conn;
pub mod frames;
pub mod hub;
mod presence;

pub use conn::upgrade;
