//! In-process tests of every route of `web::router`: a single-node cluster in a temporary
//! directory behind the router, requests through `tower::ServiceExt::oneshot` (no sockets, no
//! child processes), so a handler change is checked in seconds. Each module covers one area;
//! `harness` is the shared fixture. Every error answer is checked as
//! `{"error":{"code","message"}}` with the code documented in `docs/api.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_matrix;
mod ca_join;
mod channels;
mod cluster_dns;
mod files;
mod hardening;
mod harness;
mod messages;
mod search;
mod session_users;
mod sessions;
mod static_health;
mod ws;
