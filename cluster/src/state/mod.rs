//! The replicated state.
pub mod accounts;
pub mod apply;
pub mod ca;
pub mod chat;
pub mod dns_records;
pub mod events;
pub mod join;
pub mod keys;
pub mod queries;
pub mod views;

#[cfg(test)]
pub(crate) use apply::test_apply;
pub use apply::{Overlay, StateError, apply_request, channel_from_meta, channel_view};
