//! Step 2, `nodes`: `GET /readyz` on every address the DNS step found (the API port, which
//! stays plain HTTP when a node serves TLS), in parallel, each with a short timeout.
//!
//! Owns learning each node's id. Must never drop a node that is not ready: every node the
//! DNS hands out must be ready, or clients are sent to one that is not.

use futures::future::join_all;
use ops::{Client, ClientError};

use super::super::render::sanitize;
use super::{Node, Plan, READYZ_TIMEOUT};

/// Asks every node's `/readyz`; fills in node ids and drops nothing (every node must be ready).
pub(super) async fn nodes_step(plan: &Plan, nodes: &mut [Node]) -> Result<String, String> {
    let budget = plan.timeout.min(READYZ_TIMEOUT);
    let probes = nodes.iter().map(|node| async move {
        let client = Client::new(vec![node.plain_url()])
            .map_err(|e| e.to_string())?
            .with_request_timeout(budget);
        client.readyz().await.map_err(|e| match e {
            ClientError::Unreachable { last_error, .. } => last_error,
            other => other.to_string(),
        })
    });
    let verdicts = join_all(probes).await;
    let mut ready = Vec::new();
    let mut problems = Vec::new();
    for (node, verdict) in nodes.iter_mut().zip(verdicts) {
        match verdict {
            Ok(r) => {
                node.id = r.node_id;
                if r.ready {
                    ready.push(node.label());
                } else {
                    let reason = r.reason.as_deref().unwrap_or("no reason given");
                    problems.push(format!("{} not ready: {}", node.label(), sanitize(reason)));
                }
            }
            Err(e) => problems.push(format!("{} unreachable: {}", node.label(), sanitize(&e))),
        }
    }
    let total = nodes.len();
    if problems.is_empty() {
        Ok(format!(
            "{}/{total} ready: {}",
            ready.len(),
            ready.join(", ")
        ))
    } else {
        Err(format!(
            "{}/{total} ready; {}",
            ready.len(),
            problems.join("; ")
        ))
    }
}
