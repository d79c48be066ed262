//! Where the feeder reads the current truth from: the applied state machine.
//!
//! Owns the narrow read interface the feeder needs (a trait, so tests and the benchmark can
//! feed the index without a node). Must never write.

use cluster::state::keys;
use cluster::{ChannelEvent, MessageView, StateError, StateReader};

/// The read side of the state the feeder reconciles with.
pub trait Source: Send + Sync {
    /// Every channel that exists (any kind).
    fn channels(&self) -> Result<Vec<String>, StateError>;
    /// The channel's newest event sequence (0 when none).
    fn last_ev(&self, channel: &str) -> Result<u64, StateError>;
    /// Channel events with `ev > after`, in order, at most `limit`.
    fn events_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ChannelEvent)>, StateError>;
    /// Messages with `seq > after`, oldest first, at most `limit`.
    fn messages_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MessageView>, StateError>;
    /// One message's current view.
    fn message(&self, channel: &str, seq: u64) -> Result<Option<MessageView>, StateError>;
}

impl Source for StateReader {
    fn channels(&self) -> Result<Vec<String>, StateError> {
        let mut out = Vec::new();
        for k in self.tree().scan_prefix(keys::CHANNEL_PREFIX).keys() {
            let k = k?;
            if let Some(name) = k.get(keys::CHANNEL_PREFIX.len()..) {
                out.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(out)
    }

    fn last_ev(&self, channel: &str) -> Result<u64, StateError> {
        StateReader::last_ev(self, channel)
    }

    fn events_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ChannelEvent)>, StateError> {
        StateReader::events_after(self, channel, after, limit)
    }

    fn messages_after(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MessageView>, StateError> {
        self.message_views_after(channel, after, limit)
    }

    fn message(&self, channel: &str, seq: u64) -> Result<Option<MessageView>, StateError> {
        self.message_view(channel, seq)
    }
}
