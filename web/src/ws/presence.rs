//! Typing and presence: ephemeral state that never enters the Raft log. Each node tells its
//! peers which of its users are connected (every few seconds, and at once on a change) and
//! merges their reports into the cluster-wide view it announces to its own connections;
//! typing notices go to the channel's local followers and to every peer.
//!
//! Owns the merge rule (a user's highest status over all their connections and nodes wins)
//! and the expiry of a silent peer's report. Must never write to the Raft log or block on a
//! peer: notices are fire-and-forget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::frames::{PresenceStatus, ServerFrame, encode};
use super::hub::{Hub, Out, lock};

/// How often a node tells its peers who is connected to it, and how long that stays valid.
const PRESENCE_EVERY: Duration = Duration::from_secs(5);
const PRESENCE_TTL: Duration = Duration::from_secs(15);

#[derive(Default)]
pub(super) struct Presence {
    /// Other nodes' connected users, with when that report expires.
    remote: HashMap<u64, (HashMap<String, PresenceStatus>, Instant)>,
    /// The cluster-wide view last announced to local connections.
    merged: HashMap<String, PresenceStatus>,
    /// This node's users as last told to the peers.
    announced: HashMap<String, PresenceStatus>,
}

/// Ephemeral notices between nodes (JSON, so later versions may add fields).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Notice {
    Presence {
        node: u64,
        users: HashMap<String, PresenceStatus>,
    },
    Typing {
        channel: String,
        user: String,
    },
}

impl Hub {
    /// `user` is typing in `channel`: tell local followers of the channel and every peer.
    pub fn typing(&self, from: u64, channel: &str, user: &str) {
        self.typing_local(Some(from), channel, user);
        let notice = Notice::Typing {
            channel: channel.to_string(),
            user: user.to_string(),
        };
        if let Ok(body) = serde_json::to_vec(&notice) {
            self.node.send_ephemeral(body.into());
        }
    }

    fn typing_local(&self, except: Option<u64>, channel: &str, user: &str) {
        let frame = encode(&ServerFrame::Typing {
            channel: channel.to_owned(),
            user: user.to_owned(),
        });
        for c in self.conns_in(|r| r.by_channel.get(channel), except) {
            c.push(Out::Frame(frame.clone()));
        }
    }

    pub fn set_status(&self, id: u64, status: PresenceStatus) {
        let changed = {
            let mut reg = lock(&self.reg);
            match reg.status.get_mut(&id) {
                Some(s) if *s != status => {
                    *s = status;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.local_presence_changed();
        }
    }

    fn local_users(&self) -> HashMap<String, PresenceStatus> {
        let reg = lock(&self.reg);
        let mut out: HashMap<String, PresenceStatus> = HashMap::new();
        for (id, status) in &reg.status {
            if let Some(c) = reg.conns.get(id) {
                let e = out.entry(c.user.clone()).or_insert(*status);
                *e = (*e).max(*status);
            }
        }
        out
    }

    /// Tells peers only when this node's set of users actually changed: a second tab of a user
    /// who is already online costs no cluster traffic.
    pub(super) fn local_presence_changed(&self) {
        let users = self.local_users();
        let changed = {
            let mut p = lock(&self.presence);
            if p.announced == users {
                false
            } else {
                p.announced = users.clone();
                true
            }
        };
        if changed {
            self.send_presence(users);
            self.recompute_presence();
        }
    }

    fn announce_presence(&self) {
        let users = self.local_users();
        lock(&self.presence).announced = users.clone();
        self.send_presence(users);
    }

    fn send_presence(&self, users: HashMap<String, PresenceStatus>) {
        let notice = Notice::Presence {
            node: self.node.id(),
            users,
        };
        if let Ok(body) = serde_json::to_vec(&notice) {
            self.node.send_ephemeral(body.into());
        }
    }

    /// Current cluster-wide presence of everyone online or away.
    pub fn presence_snapshot(&self) -> HashMap<String, PresenceStatus> {
        lock(&self.presence).merged.clone()
    }

    /// Merges local and unexpired remote reports; announces the differences locally.
    fn recompute_presence(&self) {
        let local = self.local_users();
        let changes: Vec<(String, PresenceStatus)> = {
            let mut p = lock(&self.presence);
            let now = Instant::now();
            p.remote.retain(|_, (_, expires)| *expires > now);
            let mut merged = local;
            for (users, _) in p.remote.values() {
                for (u, s) in users {
                    let e = merged.entry(u.clone()).or_insert(*s);
                    *e = (*e).max(*s);
                }
            }
            let mut changes = Vec::new();
            for (u, s) in &merged {
                if p.merged.get(u) != Some(s) {
                    changes.push((u.clone(), *s));
                }
            }
            for u in p.merged.keys() {
                if !merged.contains_key(u) {
                    changes.push((u.clone(), PresenceStatus::Offline));
                }
            }
            p.merged = merged;
            changes
        };
        if changes.is_empty() {
            return;
        }
        let conns = self.all_conns();
        for (user, status) in changes {
            let frame = encode(&ServerFrame::Presence { user, status });
            for c in &conns {
                c.push(Out::Frame(frame.clone()));
            }
        }
    }

    pub(super) async fn run_presence(
        self: Arc<Self>,
        mut notices: broadcast::Receiver<bytes::Bytes>,
    ) {
        let mut tick = tokio::time::interval(PRESENCE_EVERY);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {
                    self.announce_presence();
                    self.recompute_presence();
                }
                r = notices.recv() => match r {
                    Ok(body) => self.on_notice(&body),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }

    fn on_notice(&self, body: &[u8]) {
        match serde_json::from_slice::<Notice>(body) {
            Ok(Notice::Presence { node, users }) => {
                if node == self.node.id() {
                    return;
                }
                lock(&self.presence)
                    .remote
                    .insert(node, (users, Instant::now() + PRESENCE_TTL));
                self.recompute_presence();
            }
            Ok(Notice::Typing { channel, user }) => self.typing_local(None, &channel, &user),
            Err(e) => {
                tracing::debug!(error = %e, "ignoring an ephemeral notice this version does not know")
            }
        }
    }
}
