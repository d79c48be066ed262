//! Invariant checkers, one per property, pure functions over what clients were told and what
//! each node shows. They come from the properties every multi-node test must check
//! (shared/notes/multi-node-testing.md, after openraft's turmoil suite: "no acknowledged write
//! lost after healing", log matching):
//! - [`no_acknowledged_message_lost`]: a message whose post returned success is on every node,
//!   with the seq, author and body the client was told.
//! - [`no_duplicates`]: no node holds two messages with one `(author, client_msg_id)` (retries
//!   are deduplicated) nor two messages with one seq.
//! - [`same_order_on_every_node`]: every node shows the channel as seqs `1..=last` with no gap,
//!   and the same message at each seq.
//! - [`acknowledged_in_send_order`]: a client that waits for each ack before sending the next
//!   message sees increasing seqs (a write acknowledged earlier is ordered earlier).
//! - [`nothing_unsent_written`]: every stored message was sent by some client of the test.
//!
//! Each returns `Err(description)` naming the node, seq and message at fault.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A message as stored by a node (the harness's own copy of `ops::Message`, so comparisons
/// do not depend on which traits the client library derives).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Msg {
    pub seq: u64,
    pub author: String,
    pub body: String,
    pub ts_ms: u64,
    pub client_msg_id: String,
}

impl From<&ops::Message> for Msg {
    fn from(m: &ops::Message) -> Self {
        Self {
            seq: m.seq,
            author: m.author.clone(),
            body: m.body.clone(),
            ts_ms: m.ts_ms,
            client_msg_id: m.client_msg_id.clone(),
        }
    }
}

impl std::fmt::Display for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(40).collect();
        write!(
            f,
            "seq {} by {} id {:?} ts {} body {:?}",
            self.seq, self.author, self.client_msg_id, self.ts_ms, body
        )
    }
}

/// Everything one node returned for one channel, in the order it returned it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub node_id: u64,
    pub messages: Vec<Msg>,
}

/// Every acknowledged message is on every node at the seq it was acknowledged with, with the same
/// author, body and client_msg_id.
pub fn no_acknowledged_message_lost(acked: &[Msg], views: &[NodeView]) -> Result<(), String> {
    let mut problems = Vec::new();
    for view in views {
        let by_seq: HashMap<u64, &Msg> = view.messages.iter().map(|m| (m.seq, m)).collect();
        let mut missing = 0usize;
        for a in acked {
            match by_seq.get(&a.seq) {
                None => {
                    missing += 1;
                    if missing <= 5 {
                        problems.push(format!(
                            "node {}: acknowledged message missing: {a}",
                            view.node_id
                        ));
                    }
                }
                Some(m)
                    if m.author != a.author
                        || m.body != a.body
                        || m.client_msg_id != a.client_msg_id =>
                {
                    problems.push(format!(
                        "node {}: seq {} was acknowledged as [{a}] but the node has [{m}]",
                        view.node_id, a.seq
                    ));
                }
                Some(_) => {}
            }
        }
        if missing > 5 {
            problems.push(format!(
                "node {}: {missing} of {} acknowledged messages missing in all",
                view.node_id,
                acked.len()
            ));
        }
    }
    verdict("no_acknowledged_message_lost", problems)
}

/// No node holds two messages with the same `(author, client_msg_id)` or the same seq.
pub fn no_duplicates(views: &[NodeView]) -> Result<(), String> {
    let mut problems = Vec::new();
    for view in views {
        let mut by_key: HashMap<(&str, &str), &Msg> = HashMap::new();
        let mut by_seq: HashMap<u64, &Msg> = HashMap::new();
        for m in &view.messages {
            if let Some(prev) = by_key.insert((&m.author, &m.client_msg_id), m) {
                problems.push(format!(
                    "node {}: (author, client_msg_id) stored twice: [{prev}] and [{m}]",
                    view.node_id
                ));
            }
            if let Some(prev) = by_seq.insert(m.seq, m) {
                problems.push(format!(
                    "node {}: seq {} stored twice: [{prev}] and [{m}]",
                    view.node_id, m.seq
                ));
            }
        }
    }
    verdict("no_duplicates", problems)
}

/// Each node lists seqs `1..=last` in ascending order with no gap, and all nodes hold the same
/// messages (author, body, client_msg_id, ts_ms) at the same seqs, up to the same last seq.
pub fn same_order_on_every_node(views: &[NodeView]) -> Result<(), String> {
    let mut problems = Vec::new();
    for view in views {
        for (i, m) in view.messages.iter().enumerate() {
            let expected = i as u64 + 1;
            if m.seq != expected {
                problems.push(format!(
                    "node {}: position {i} holds seq {} where seq {expected} was expected (gap or disorder)",
                    view.node_id, m.seq
                ));
                break;
            }
        }
    }
    if let Some((first, rest)) = views.split_first() {
        for other in rest {
            if other.messages.len() != first.messages.len() {
                problems.push(format!(
                    "node {} has {} messages but node {} has {}",
                    first.node_id,
                    first.messages.len(),
                    other.node_id,
                    other.messages.len()
                ));
            }
            let diverged = first
                .messages
                .iter()
                .zip(&other.messages)
                .find(|(a, b)| a != b);
            if let Some((a, b)) = diverged {
                problems.push(format!(
                    "node {} and node {} diverge: [{a}] vs [{b}]",
                    first.node_id, other.node_id
                ));
            }
        }
    }
    verdict("same_order_on_every_node", problems)
}

/// For each client that waited for every ack before sending its next message, the acknowledged
/// seqs strictly increase in sending order.
pub fn acknowledged_in_send_order(per_client: &[Vec<Msg>]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (client, acks) in per_client.iter().enumerate() {
        for pair in acks.windows(2) {
            if let [a, b] = pair
                && b.seq <= a.seq
            {
                problems.push(format!(
                    "client {client}: [{b}] was sent after [{a}] was acknowledged but got a lower seq"
                ));
            }
        }
    }
    verdict("acknowledged_in_send_order", problems)
}

/// Every message on every node carries a client_msg_id that some client of the test sent.
pub fn nothing_unsent_written(
    sent_ids: &HashSet<String>,
    views: &[NodeView],
) -> Result<(), String> {
    let mut problems = Vec::new();
    for view in views {
        for m in &view.messages {
            if !sent_ids.contains(&m.client_msg_id) {
                problems.push(format!("node {}: message nobody sent: [{m}]", view.node_id));
            }
        }
    }
    verdict("nothing_unsent_written", problems)
}

/// Runs the three core checks and joins their failures.
pub fn all_core(acked: &[Msg], views: &[NodeView]) -> Result<(), String> {
    let results = [
        no_acknowledged_message_lost(acked, views),
        no_duplicates(views),
        same_order_on_every_node(views),
    ];
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Seq → message of one view (helper for tests comparing single messages).
pub fn by_seq(view: &NodeView) -> BTreeMap<u64, &Msg> {
    view.messages.iter().map(|m| (m.seq, m)).collect()
}

fn verdict(check: &str, mut problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let total = problems.len();
    problems.truncate(20);
    let more = if total > 20 {
        format!("\n  ... and {} more", total - 20)
    } else {
        String::new()
    };
    Err(format!(
        "{check} violated ({total} problems):\n  {}{more}",
        problems.join("\n  ")
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn m(seq: u64, id: &str) -> Msg {
        Msg {
            seq,
            author: "admin".into(),
            body: format!("body {id}"),
            ts_ms: 1000 + seq,
            client_msg_id: id.into(),
        }
    }

    fn view(node_id: u64, msgs: &[Msg]) -> NodeView {
        NodeView {
            node_id,
            messages: msgs.to_vec(),
        }
    }

    #[test]
    fn healthy_views_pass_every_check() {
        let msgs = [m(1, "a"), m(2, "b"), m(3, "c")];
        let views = [view(1, &msgs), view(2, &msgs), view(3, &msgs)];
        assert_eq!(all_core(&msgs[..2], &views), Ok(()));
        let sent = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(nothing_unsent_written(&sent, &views), Ok(()));
        assert_eq!(acknowledged_in_send_order(&[msgs.to_vec()]), Ok(()));
    }

    #[test]
    fn lost_message_is_reported() {
        let acked = [m(1, "a"), m(2, "b")];
        let err = no_acknowledged_message_lost(&acked, &[view(1, &acked), view(2, &acked[..1])])
            .unwrap_err();
        assert!(err.contains("node 2") && err.contains("\"b\""), "{err}");
    }

    #[test]
    fn acknowledged_seq_holding_another_message_is_reported() {
        let acked = [m(1, "a")];
        let err = no_acknowledged_message_lost(&acked, &[view(1, &[m(1, "z")])]).unwrap_err();
        assert!(err.contains("seq 1 was acknowledged"), "{err}");
    }

    #[test]
    fn duplicate_id_and_duplicate_seq_are_reported() {
        let err = no_duplicates(&[view(1, &[m(1, "a"), m(2, "a")])]).unwrap_err();
        assert!(err.contains("client_msg_id) stored twice"), "{err}");
        let err = no_duplicates(&[view(1, &[m(1, "a"), m(1, "b")])]).unwrap_err();
        assert!(err.contains("seq 1 stored twice"), "{err}");
    }

    #[test]
    fn gap_divergence_and_length_mismatch_are_reported() {
        let err = same_order_on_every_node(&[view(1, &[m(1, "a"), m(3, "c")])]).unwrap_err();
        assert!(err.contains("gap"), "{err}");
        let err =
            same_order_on_every_node(&[view(1, &[m(1, "a")]), view(2, &[m(1, "b")])]).unwrap_err();
        assert!(err.contains("diverge"), "{err}");
        let err =
            same_order_on_every_node(&[view(1, &[m(1, "a")]), view(2, &[m(1, "a"), m(2, "b")])])
                .unwrap_err();
        assert!(err.contains("has 1 messages"), "{err}");
    }

    #[test]
    fn reordered_acks_and_phantom_messages_are_reported() {
        let err = acknowledged_in_send_order(&[vec![m(2, "a"), m(1, "b")]]).unwrap_err();
        assert!(err.contains("lower seq"), "{err}");
        let sent = HashSet::from(["a".to_string()]);
        let err = nothing_unsent_written(&sent, &[view(1, &[m(1, "a"), m(2, "x")])]).unwrap_err();
        assert!(err.contains("nobody sent"), "{err}");
    }
}
