//! `Ctx`: what every domain's apply function gets besides its command: the entry's overlay,
//! its timestamp and log index, and the events it produces.
//!
//! Lives apart from the domains and from the dispatcher so both can name it without importing
//! each other. Owns the two ways an apply function announces a change (`emit`, and
//! `channel_event`, which also numbers the change in the channel's gap-free event log). Must
//! never read a clock: `ts` is the entry's time, the same on every node.

use crate::command::ChannelEvent;
use crate::state::StateError;
use crate::state::events::{Event, EventKind};
use crate::state::keys;
use crate::state::overlay::Overlay;

/// Everything an apply function needs besides the command.
pub struct Ctx<'k, 'a> {
    pub kv: &'k mut Overlay<'a>,
    pub ts: u64,
    pub index: u64,
    pub events: &'k mut Vec<Event>,
}

impl Ctx<'_, '_> {
    pub(super) fn emit(&mut self, kind: EventKind) {
        self.events.push(Event {
            index: self.index,
            kind,
        });
    }

    /// Appends `event` to the channel's event log and publishes it with its `ev`.
    pub(super) fn channel_event(
        &mut self,
        channel: &str,
        event: ChannelEvent,
    ) -> Result<u64, StateError> {
        let ev_key = keys::channel_ev(channel);
        let ev = self.kv.get::<u64>(&ev_key)?.unwrap_or(0) + 1;
        self.kv.put(ev_key, &ev)?;
        self.kv.put(keys::event(channel, ev), &event)?;
        self.emit(EventKind::Channel {
            channel: channel.to_string(),
            ev,
            event,
        });
        Ok(ev)
    }
}
