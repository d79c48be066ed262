//! A real 3-node cluster (in process, real sockets on 127.0.0.1) with mutual TLS on every
//! cluster port: election, adding two members through the learner rule, a committed write,
//! and a removal that the removed node hears over mutual TLS, after which it is refused.

use std::time::Duration;

use cluster::{ClusterConfig, ClusterNode, Command, NodeInfo, Role};
use tempfile::TempDir;

use super::*;

struct Member {
    node: Arc<ClusterNode>,
    tls: Arc<PeerTls>,
    info: NodeInfo,
    cancel: CancellationToken,
    _dir: TempDir,
}

impl Member {
    async fn stop(self) {
        self.node.shutdown().await;
        self.cancel.cancel();
    }
}

async fn start(ca: &Ca, id: u64) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let info = NodeInfo {
        // Unused here: nothing serves the client API in this test.
        api_addr: "127.0.0.1:9".into(),
        cluster_addr: listener.local_addr().unwrap().to_string(),
    };
    let tls = Arc::new(PeerTls::new(id, &ca.material(&ca.node(id, LOCALHOST), &[])).unwrap());
    // A fresh subdirectory: the node creates it 0700 and refuses the (0755) temp dir itself.
    let mut config = ClusterConfig::with_defaults(id, dir.path().join("data"), info.clone());
    config.peer_source_ip = Some(LOCALHOST);
    config.peer_tls = Some(tls.clone());
    let cancel = CancellationToken::new();
    let node = ClusterNode::start(config, cancel.child_token())
        .await
        .unwrap();
    tokio::spawn(serve_cluster_port(
        listener,
        node.rpc_router(),
        Some(tls.clone()),
        cancel.clone(),
    ));
    Member {
        node,
        tls,
        info,
        cancel,
        _dir: dir,
    }
}

/// Waits until the leader has applied its latest membership (a change is refused before).
async fn membership_committed(leader: &Member) {
    leader
        .node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.last_applied.map(|l| l.index) >= m.membership_config.log_id().map(|l| l.index),
            "membership committed",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_remove_over_mutual_tls() {
    let ca = Ca::new(WS, "cluster");
    let n1 = start(&ca, 1).await;
    let n2 = start(&ca, 2).await;
    let n3 = start(&ca, 3).await;

    n1.node.initialize().await.unwrap();
    n1.node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "node 1 leads")
        .await
        .unwrap();
    // Nodes 2 and 3 have no membership yet: they admit the leader by the learner rule, and
    // are admitted by the leader once they are in its membership.
    for m in [&n2, &n3] {
        membership_committed(&n1).await;
        n1.node.add_node(m.node.id(), m.info.clone()).await.unwrap();
    }

    // A node whose certificate comes from another CA cannot join: the leader refuses its
    // server certificate (and it would refuse the leader's client certificate).
    let other = Ca::new(WS, "other");
    let n4 = start(&other, 4).await;
    membership_committed(&n1).await;
    let refused = n1.node.add_node(4, n4.info.clone()).await;
    assert!(refused.is_err(), "a node of another CA was added");
    assert!(!n1.node.members().iter().any(|(id, _)| *id == 4));
    n4.stop().await;

    let (_, index) = n1
        .node
        .write(Command::CreateUser {
            username: "alice".into(),
            password_hash: "$argon2id$not-a-real-hash".into(),
            role: Role::Member,
        })
        .await
        .unwrap();
    for m in [&n2, &n3] {
        m.node
            .wait_applied(index, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(m.node.reader().user("alice").unwrap().is_some());
    }
    let all = BTreeSet::from([1, 2, 3]);
    for m in [&n1, &n2, &n3] {
        let tls = m.tls.clone();
        let all = all.clone();
        eventually(Duration::from_secs(5), "member set mirrored", move || {
            let ok = tls.members() == all;
            async move { ok }
        })
        .await;
    }

    // Remove node 3: the leader tells it over mutual TLS, authenticated as node 1; node 3
    // cannot confirm (node 1 no longer admits it, or confirms before it notices) and stops.
    membership_committed(&n1).await;
    n1.node.remove_node(3).await.unwrap();
    let removed = n3.node.removed();
    tokio::time::timeout(Duration::from_secs(10), removed.cancelled())
        .await
        .expect("node 3 did not hear of its removal");
    // From now on node 3's certificate no longer gets it into the cluster.
    let http3 = PeerHttp::with_tls(Some(LOCALHOST), Some(n3.tls.clone())).unwrap();
    let addr1 = n1.info.cluster_addr.clone();
    eventually(Duration::from_secs(5), "node 1 refuses node 3", || {
        let http3 = http3.clone();
        let addr1 = addr1.clone();
        async move { http3.status(&addr1, CALL_TIMEOUT).await.is_err() }
    })
    .await;
    // The remaining two still commit.
    let (_, index) = n1
        .node
        .write(Command::CreateUser {
            username: "bob".into(),
            password_hash: "$argon2id$not-a-real-hash".into(),
            role: Role::Member,
        })
        .await
        .unwrap();
    n2.node
        .wait_applied(index, Duration::from_secs(10))
        .await
        .unwrap();

    for m in [n1, n2, n3] {
        m.stop().await;
    }
}
