//! What a failing test prints: each node's process state (running, killed by the harness, or
//! exited by itself) and the tail of its log, attached to every harness error and panic.

use std::fmt::Write as _;

use anyhow::anyhow;

use crate::cluster::{LOG_TAIL_LINES, TestCluster};

impl TestCluster {
    /// Last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64) -> String {
        self.node(id).log_tail(LOG_TAIL_LINES)
    }

    /// Each node's process state and log tail.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("cluster dir {}\n", self.root.display());
        for (id, node) in &self.nodes {
            let state = match (node.pid(), node.exit_status()) {
                (None, _) => "not running".to_owned(),
                (Some(pid), None) => format!("running, pid {pid}"),
                (Some(pid), Some(status)) => format!("EXITED by itself ({status}), pid was {pid}"),
            };
            let _ = writeln!(
                s,
                "----- node {id} ({}) {state}; last {LOG_TAIL_LINES} lines of {}:\n{}",
                node.spec.api_addr,
                node.spec.log_path.display(),
                node.log_tail(LOG_TAIL_LINES)
            );
        }
        s
    }

    /// Adds [`Self::diagnostics`] to an error.
    pub fn annotate(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow!("{e:#}\n{}", self.diagnostics())
    }

    /// Panics with `msg` and every node's state and log tail.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.diagnostics())
    }

    /// Panics with diagnostics if `r` is an error (for invariant checks).
    pub fn check(&self, r: std::result::Result<(), String>) {
        if let Err(e) = r {
            self.fail(&e);
        }
    }
}
