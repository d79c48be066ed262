//! Search across a real 3-node cluster (issue 15): a message posted through node 2 is found
//! through node 3 within a second of its acknowledgement (node 3's own index, fed by its own
//! applied events); an edit made through node 1 and a deletion made through node 2 are
//! reflected on node 3; `conclavectl search` prints the result readably.

use std::time::{Duration, Instant};

use chaos_tests::TestCluster;

use crate::ctl::{Ctl, expect_ok};
use crate::util::{create_channel, post_ok};

const CH: &str = "general";
/// The acceptance bound: searchable on another node within a second of the acknowledgement.
const WITHIN: Duration = Duration::from_secs(1);

/// The seqs node `id` finds for `q`.
async fn seqs(cluster: &TestCluster, id: u64, q: &str) -> Result<Vec<u64>, String> {
    let params = ops::SearchParams {
        q: q.to_owned(),
        channel: Some(CH.to_owned()),
        ..ops::SearchParams::default()
    };
    cluster
        .client(id)
        .search(&params)
        .await
        .map(|p| p.results.iter().map(|r| r.message.seq).collect())
        .map_err(|e| e.to_string())
}

/// Polls node `id` until `ok` holds for the seqs found for `q`, failing after `within` from
/// `since`.
async fn until_found(
    cluster: &TestCluster,
    id: u64,
    q: &str,
    since: Instant,
    within: Duration,
    ok: impl Fn(&[u64]) -> bool,
) -> Duration {
    loop {
        let got = seqs(cluster, id, q).await;
        if let Ok(s) = &got
            && ok(s)
        {
            return since.elapsed();
        }
        if since.elapsed() > within {
            cluster.fail(&format!(
                "node {id}: search {q:?} not as expected {:?} after the write: {got:?}",
                since.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_across_nodes() {
    let ctl_bin = Ctl::locate();
    let cluster = TestCluster::start(3).await;
    create_channel(&cluster, CH).await;

    // Posted through node 2, found through node 3 within a second of the acknowledgement.
    let id = ops::new_client_msg_id();
    let posted = post_ok(
        &cluster,
        &cluster.client(2),
        CH,
        "the quokka migration starts at noon",
        &id,
    )
    .await;
    let acked = Instant::now();
    let seq = posted.message.seq;
    let took = until_found(&cluster, 3, "quokka", acked, WITHIN, |s| s == [seq]).await;
    eprintln!("search: found on node 3 {took:?} after the acknowledgement on node 2");

    // Edited through node 1: node 3 never returns it for the old word again (hits are
    // re-checked against the current text) and finds it by the new one within a second.
    cluster
        .client(1)
        .edit_message(CH, seq, "the wombat migration starts at noon")
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("edit through node 1: {e}")));
    let edited = Instant::now();
    until_found(&cluster, 3, "wombat", edited, WITHIN, |s| s == [seq]).await;
    assert_eq!(seqs(&cluster, 3, "quokka").await, Ok(vec![]));

    // conclavectl search through node 3: one readable line, the match marked.
    let ctl = Ctl::new(ctl_bin, &cluster);
    let u3 = cluster.url(3);
    expect_ok(&cluster, &ctl.login(&u3).await);
    let run = ctl
        .run(&["--server", &u3, "search", "WOMBAT", "--channel", CH])
        .await;
    let out = expect_ok(&cluster, &run);
    assert!(
        out.starts_with(&format!("#general #{seq} ["))
            && out.ends_with(": the [wombat] migration starts at noon\n"),
        "{run}"
    );

    // Deleted through node 2: gone from node 3's results within a second (at once, in fact:
    // a tombstone is never returned), and conclavectl says so.
    cluster
        .client(2)
        .delete_message(CH, seq)
        .await
        .unwrap_or_else(|e| cluster.fail(&format!("delete through node 2: {e}")));
    let deleted = Instant::now();
    until_found(&cluster, 3, "wombat", deleted, WITHIN, <[u64]>::is_empty).await;
    let run = ctl.run(&["--server", &u3, "search", "wombat"]).await;
    assert_eq!(expect_ok(&cluster, &run), "no messages found\n", "{run}");
    cluster.stop_all().await;
}
