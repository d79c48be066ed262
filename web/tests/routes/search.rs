//! `GET /api/v1/search`: what a search finds and, above all, what it never returns — messages
//! of a private channel or a DM the caller is not in — plus edits and deletions reflected,
//! paging, the filters and bad queries. The index is the real one (in RAM) fed by the real
//! feeder from the node's applied events, so every check polls until the feeder's commit.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Harness, assert_err};

async fn search(h: &Harness, token: &str, query: &str) -> (StatusCode, Value) {
    h.req("GET", &format!("/api/v1/search?{query}"), Some(token), None)
        .await
}

/// `(channel, seq)` of every result of a successful search.
async fn found(h: &Harness, token: &str, query: &str) -> Vec<(String, u64)> {
    let (s, b) = search(h, token, query).await;
    assert_eq!(s, StatusCode::OK, "{query}: {b}");
    b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["message"]["channel"].as_str().unwrap().to_owned(),
                r["message"]["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn wait_found(h: &Harness, token: &str, query: &str, want: usize) -> Vec<(String, u64)> {
    h.until(&format!("{want} results for {query}"), || async {
        let f = found(h, token, query).await;
        (f.len() == want).then_some(f)
    })
    .await
}

/// alice: member of `general` (public), `secret` (private) and the DM with bob; carol is in
/// none of the private ones.
async fn fixture() -> (Harness, String, String, String) {
    let h = Harness::start().await;
    let alice = h.member("alice").await;
    let bob = h.member("bob").await;
    let carol = h.member("carol").await;
    h.channel(&alice, "general", "public").await;
    h.channel(&alice, "secret", "private").await;
    let (s, b) = h
        .req(
            "POST",
            "/api/v1/dms",
            Some(&alice),
            Some(json!({"users": ["bob"]})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    (h, alice, bob, carol)
}

#[tokio::test]
async fn private_channels_and_dms_stay_private() {
    let (h, alice, bob, carol) = fixture().await;
    h.post(&alice, "general", "the zebra plan is public", "g1")
        .await;
    h.post(&alice, "secret", "the zebra plan is secret", "s1")
        .await;
    h.post(&bob, "dm:alice:bob", "the zebra plan between us", "d1")
        .await;

    // alice reads all three; bob the public one and the DM; carol only the public one.
    let mut a = wait_found(&h, &alice, "q=zebra", 3).await;
    a.sort();
    assert_eq!(
        a,
        vec![
            ("dm:alice:bob".to_owned(), 1),
            ("general".to_owned(), 1),
            ("secret".to_owned(), 1)
        ]
    );
    let mut b = found(&h, &bob, "q=zebra").await;
    b.sort();
    assert_eq!(
        b,
        vec![("dm:alice:bob".to_owned(), 1), ("general".to_owned(), 1)]
    );
    assert_eq!(
        found(&h, &carol, "q=zebra").await,
        vec![("general".to_owned(), 1)]
    );
    assert_eq!(found(&h, &carol, "q=secret").await, vec![]);

    // Naming a channel one cannot read is refused, not answered empty-handed.
    let r = search(&h, &carol, "q=zebra&channel=secret").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = search(&h, &carol, "q=zebra&channel=dm:alice:bob").await;
    assert_err(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = search(&h, &carol, "q=zebra&channel=nowhere").await;
    assert_err(&r, StatusCode::NOT_FOUND, "channel_not_found");

    // Leaving a private channel takes its messages out of one's results at once.
    let (s, body) = h
        .req(
            "POST",
            "/api/v1/channels/secret/members",
            Some(&alice),
            Some(json!({"username": "carol"})),
        )
        .await;
    assert!(s.is_success(), "{body}");
    assert_eq!(found(&h, &carol, "q=zebra&channel=secret").await.len(), 1);
    let (s, body) = h
        .req("POST", "/api/v1/channels/secret/leave", Some(&carol), None)
        .await;
    assert!(s.is_success(), "{body}");
    assert_eq!(
        found(&h, &carol, "q=zebra").await,
        vec![("general".to_owned(), 1)]
    );
}

#[tokio::test]
async fn edits_and_deletions_are_reflected() {
    let (h, alice, _bob, carol) = fixture().await;
    h.post(&alice, "general", "meet at the old harbour", "e1")
        .await;
    wait_found(&h, &carol, "q=harbour", 1).await;

    let (s, b) = h
        .req(
            "PATCH",
            "/api/v1/channels/general/messages/1",
            Some(&alice),
            Some(json!({"body": "meet at the new lighthouse"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The old text is never found again, even before the index caught up (hits are
    // re-checked against the current message); the new text is found once it has.
    assert_eq!(found(&h, &carol, "q=harbour").await, vec![]);
    wait_found(&h, &carol, "q=lighthouse", 1).await;
    let (_, b) = search(&h, &carol, "q=lighthouse").await;
    assert_eq!(
        b["results"][0]["message"]["body"],
        "meet at the new lighthouse"
    );

    let (s, b) = h
        .req(
            "DELETE",
            "/api/v1/channels/general/messages/1",
            Some(&alice),
            None,
        )
        .await;
    assert!(s.is_success(), "{b}");
    assert_eq!(found(&h, &carol, "q=lighthouse").await, vec![]);
}

#[tokio::test]
async fn snippets_filters_and_paging() {
    let (h, alice, bob, _carol) = fixture().await;
    for i in 1..=25 {
        let who = if i % 2 == 0 { &bob } else { &alice };
        if i % 2 == 0 {
            let (s, _) = h
                .req("POST", "/api/v1/channels/general/join", Some(who), None)
                .await;
            assert!(s.is_success());
        }
        h.post(
            who,
            "general",
            &format!("Release note {i}: café ☕ shipped"),
            &format!("p{i}"),
        )
        .await;
    }
    wait_found(&h, &alice, "q=release&limit=100", 25).await;

    // Newest first, pages without overlap or gap.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("q=release&limit=10&cursor={c}"),
            None => "q=release&limit=10".to_owned(),
        };
        let (s, b) = search(&h, &alice, &q).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        for r in b["results"].as_array().unwrap() {
            seqs.push(r["message"]["seq"].as_u64().unwrap());
        }
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<u64>>());

    // Highlights are UTF-16 offsets into the snippet text.
    let (_, b) = search(&h, &alice, "q=SHIPPED&limit=1").await;
    let snip = &b["results"][0]["snippet"];
    let text: Vec<u16> = snip["text"].as_str().unwrap().encode_utf16().collect();
    let marked: Vec<String> = snip["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (a, z) = (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            );
            String::from_utf16(&text[a..z]).unwrap()
        })
        .collect();
    assert_eq!(marked, vec!["shipped"]);
    // "Release note 25: " is 17 UTF-16 units; "café" 4 more.
    let (_, b) = search(&h, &alice, "q=CAF%C3%89&limit=1").await;
    assert_eq!(b["results"][0]["snippet"]["highlights"], json!([[17, 21]]));
    assert!(found(&h, &alice, "q=cafe").await.is_empty());

    // Filters: author, phrase, time.
    assert_eq!(
        found(&h, &alice, "q=release&from=bob&limit=100")
            .await
            .len(),
        12
    );
    assert_eq!(
        found(&h, &alice, "q=%22note%207%22").await,
        vec![("general".to_owned(), 7)]
    );
    let all = h.messages(&alice, "general").await;
    let ts7 = all[6]["ts_ms"].as_u64().unwrap();
    for r in found(&h, &alice, &format!("q=release&limit=100&before={ts7}")).await {
        assert!(r.1 < 7 || all[r.1 as usize - 1]["ts_ms"].as_u64().unwrap() < ts7);
    }
    assert!(
        found(&h, &alice, "q=release&after=99999999999999")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn bad_queries_are_refused() {
    let (h, alice, _bob, _carol) = fixture().await;
    for q in [
        "",
        "q=",
        "q=%20%21%21",
        "q=a&limit=0",
        "q=a&limit=101",
        "q=a&limit=x",
        "q=a&cursor=zzz",
        "q=a&cursor=1.2",
        "q=a&before=-1",
        "q=a&unknown=1",
    ] {
        let r = search(&h, &alice, q).await;
        assert_err(&r, StatusCode::BAD_REQUEST, "bad_query");
    }
    let long = "x".repeat(600);
    let r = search(&h, &alice, &format!("q={long}")).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "bad_query");
    let many = (0..20)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("+");
    let r = search(&h, &alice, &format!("q={many}")).await;
    assert_err(&r, StatusCode::BAD_REQUEST, "bad_query");
    crate::harness::assert_needs_token(&h, "GET", "/api/v1/search?q=a", None).await;
}
