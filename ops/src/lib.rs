//! `ops`: the client library for the Conclave HTTP API (docs/api.md) and WebSocket protocol
//! (docs/protocol.md), used by `conclavectl`, the chaos tests and benchmarks.
//!
//! The crate owns talking to a cluster: typed REST requests and responses ([`Client`]), the
//! WebSocket frames ([`ClientFrame`], [`ServerFrame`]), a resumable WebSocket session
//! ([`ChatSession`]), a raw WebSocket connection for protocol tests ([`WsConn`]), the error
//! types ([`ClientError`], [`WsError`]), failover between nodes, and a minimal DNS stub for
//! operator checks ([`dns_query`]: one question to one given server), and the encrypted backup
//! file ([`backup_file`]). It must never print, never
//! panic on anything a server or a caller passes in, and never hold cluster state beyond what
//! a client needs to resume: the current server, the bearer token, and for a chat session its
//! channel cursors and unacknowledged sends.
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
//!   `remove_node`, `remove_dns_records`, `logout`): only when the connection was never
//!   established. A failure after
//!   the request was sent returns `Unreachable` at once, since the write may have happened.
//!
//! A 503 `unavailable` is retried for every request (the server guarantees a failed request
//! wrote nothing). Every other error status (4xx, 500) is returned immediately, never retried.
//! [`Client::healthz`] and [`Client::readyz`] probe the current server only, without failover.
//!
//! The v1 additions follow the same rules: reads, message edits and deletes, reactions, pins,
//! read markers, channel patches, `open_dm` and `update_me` are idempotent and always
//! retried, and so are `add_dns_record` (adding the same record again only sets its TTL),
//! `drain_node` and `undrain_node` (they set a flag); `create_channel_with`,
//! `leave_channel`, membership changes, `change_password` and the admin writes on users
//! (`create_user_with`, `update_user`, `set_user_password`) only when never sent. A
//! throttled login is [`ClientError::Throttled`] with the `Retry-After`.
//!
//! # TLS
//!
//! `https://` servers (and `wss://` for WebSockets) are checked against a [`TrustRoot`], the
//! cluster's own root CA ([`Client::new_trusting`], [`SessionBuilder::trust_root`],
//! [`WsConnectOptions::tls`]); the system's store is never used, and without a root no HTTPS
//! server is trusted. A certificate failure is [`ClientError::CertificateNotTrusted`] (or
//! [`WsError::CertificateNotTrusted`]) at once, without failing over. Redirects are never
//! followed: a TLS node's plain port answers the API with one, which is
//! [`ClientError::Redirected`]. [`verify_server_certificate`] checks one node's certificate
//! and reports its expiry (`conclavectl check`).
//!
//! # WebSocket session
//!
//! [`ChatSession`] (started with [`SessionBuilder`]) keeps one WebSocket to one node at a time
//! and follows the failover algorithm of docs/protocol.md:
//! * on a close or error other than 4001/4003 it waits a jittered backoff (100 ms doubling to
//!   5 s, ±50%), then connects to another node that answers `GET /readyz` with 200 (nodes come
//!   from the last `hello` and the configured servers; the failed one is tried last),
//!   authenticates, re-subscribes every channel with `after` = its cursor, and re-sends every
//!   unacknowledged message with its original `client_msg_id`, in the original order;
//! * a channel's cursor is the last `ev` handed to the caller; events at or below it are
//!   dropped, so the caller sees each `(channel, ev)` once, across reconnects too;
//! * a send resolves its [`SendHandle`] on `ack`; `nack` `unavailable` is re-sent after a
//!   backoff; any other `nack` resolves it with [`WsError::Nacked`];
//! * 4001/4003 end the session ([`SessionEvent::AuthLost`], [`WsError::AuthLost`]);
//! * no frame for 45 s (the server pings every 15 s) counts as a dead connection;
//! * outgoing frames are paced below the server's rate limit (16/s, burst 40 by default).
//!
//! A background task owns the socket; it ends on [`ChatSession::close`] or when the session
//! is dropped. [`WsConn`] is the opposite: one connection, no reconnects, every frame as it
//! comes, and the close code observable, for tests of the server's protocol handling.

mod backoff;
pub mod backup_file;
mod client;
pub mod dns_query;
mod error;
mod ids;
mod request;
mod servers;
mod tls;
mod ws;

pub use api::ca::{CaFingerprint, CertSummary, IntermediateSummary, SignedCert};
pub use api::join::JoinTokenCreated;
pub use api::rest::{
    Channel, ChannelKind, ChannelPatch, ClusterStatus, DnsRecord, LoginResponse, Message,
    MessagePage, NewChannel, NewUser, NodeStatus, PostOutcome, ReadMarker, Readyz, Role,
    StorageStatus, Thread, User, UserPatch,
};
pub use api::ws::{
    Ack, ChannelEvent, ClientFrame, EventKind, Hello, Nack, NodeAddr, PROTOCOL_VERSION,
    PresenceStatus, ReadMarkerUpdate, SecretToken, ServerFrame,
};
pub use client::Client;
pub use client::backup::BackupDownload;
pub use client::ca::RootFormat;
pub use client::files::{CHUNK_BYTES, FileDownload};
pub use client::search::SearchParams;
pub use error::{ClientError, CloseInfo, WsError};
pub use ids::new_client_msg_id;
pub use servers::Failovers;
pub use tls::{
    TrustRoot, VerifiedCertificate, fingerprint_sha256, root_fingerprint, verify_server_certificate,
};
pub use ws::builder::SessionBuilder;
pub use ws::conn::{WsConn, WsConnectOptions, WsMessage, ws_url};
pub use ws::session::{ChatSession, ConnState, ConnectedNode, SendHandle, SessionEvent};
pub use ws::state::ReconnectBackoff;
