//! `api`: the wire contract of Conclave's client API, written once for both ends. The server
//! (`web`, and `node` for join and provisioning) encodes these types, the client library (`ops`)
//! decodes them, and the other way round for request bodies.
//!
//! - [`rest`]: the REST request and response bodies of `/api/v1` (docs/api.md);
//! - [`ws`]: the WebSocket frames, client and server, and the close codes (docs/protocol.md);
//! - [`ca`]: the certificate authority's bodies (`/api/v1/ca/...`);
//! - [`join`]: the join token's text format and the join bodies;
//! - [`error`]: the error body `{"error":{"code","message"}}` and its codes;
//! - [`fingerprint`]: how a certificate fingerprint is written (`AB:CD:..`) and read;
//! - [`snapshot_stream`]: the byte format of a state stream (snapshot file, snapshot transfer,
//!   the state inside a backup), shared by the cluster, the server and `conclavectl`;
//! - [`backup`]: the manifest and secrets frames of a backup (`GET /api/v1/admin/backup`, and
//!   the plaintext of an encrypted backup file).
//!
//! Changing what a type here encodes changes the wire: the chaos tests and the two documents
//! are the contract. This crate holds data and its text forms only: it must never perform I/O,
//! hash, draw random numbers, or know about the cluster's internal types; the exceptions are
//! `snapshot_stream` (it reads and writes through the `Read`/`Write` it is given, and hashes)
//! and `backup`'s frames (read and written through a given `Read`/`Write`).
//! How leniently the server reads a request beyond these types is the server's own wrapper,
//! in `web`.

pub mod backup;
pub mod ca;
pub mod error;
pub mod fingerprint;
pub mod join;
pub mod rest;
pub mod snapshot_stream;
pub mod ws;

/// The highest WebSocket protocol version this code speaks (sent in `auth` and `hello`).
pub const PROTOCOL_VERSION: u32 = 1;
