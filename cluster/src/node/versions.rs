//! Command-set version gating for rolling upgrades: which command versions every member of the
//! cluster understands, learned by asking each member (`GET /raft/v1/version`).
//!
//! Owns the rule that a command introduced in version N is proposed only once every member
//! runs a binary that knows version N; until then such a write is refused with `Unavailable`
//! (nothing is written) instead of putting an entry in the log that an older member could not
//! decode. Must never guess: a member that has not answered yet counts as the oldest version.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::COMMAND_VERSION;
use crate::transport::network::{PeerHttp, TransportError};
use crate::types::{NodeId, NodeInfo};

const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Answer of `GET /raft/v1/version` (JSON, so later versions can add fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionWire {
    pub command_version: u16,
}

impl VersionWire {
    pub fn current() -> Self {
        Self {
            command_version: COMMAND_VERSION,
        }
    }
}

/// Last known command version of each peer.
#[derive(Default)]
pub struct PeerVersions {
    known: Mutex<HashMap<NodeId, u16>>,
}

impl PeerVersions {
    fn get(&self, id: NodeId) -> Option<u16> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn set(&self, id: NodeId, v: u16) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, v);
    }

    /// The version every member understands, from what is known (unknown members count as 1).
    pub fn cluster_min<'a>(
        &self,
        me: NodeId,
        members: impl Iterator<Item = (&'a NodeId, &'a NodeInfo)>,
    ) -> u16 {
        members
            .map(|(id, _)| {
                if *id == me {
                    COMMAND_VERSION
                } else {
                    self.get(*id).unwrap_or(1)
                }
            })
            .min()
            .unwrap_or(COMMAND_VERSION)
    }

    /// Asks every member whose version is unknown or older than ours.
    pub async fn refresh<'a>(
        &self,
        http: &PeerHttp,
        me: NodeId,
        members: impl Iterator<Item = (&'a NodeId, &'a NodeInfo)>,
    ) {
        let probes: Vec<_> = members
            .filter(|(id, _)| **id != me && self.get(**id).is_none_or(|v| v < COMMAND_VERSION))
            .map(|(id, info)| {
                let http = http.clone();
                let addr = info.cluster_addr.clone();
                let id = *id;
                async move { (id, http.version(&addr, PROBE_TIMEOUT).await) }
            })
            .collect();
        for (id, result) in futures::future::join_all(probes).await {
            match result {
                Ok(v) => self.set(id, v.command_version),
                // A binary from before this endpoint existed answers 404: version 1.
                Err(TransportError::Other { message, .. }) if message.contains("404") => {
                    self.set(id, 1)
                }
                Err(_) => {}
            }
        }
    }
}
