//! The feeder: keeps the index in step with the applied state.
//!
//! One named task per node. It subscribes to the applied-event bus first, then reconciles the
//! index with the state machine channel by channel (each channel's event sequence is the
//! cursor the index records), then follows the bus: a posted or edited message is re-read from
//! the state and re-indexed, a deleted one removed. Events are gathered for up to
//! `commit_every` (or `max_batch` events) and committed together, and commits are at least
//! `min_commit_interval` (400 ms) apart, so a burst of thousands of messages a second costs
//! two or three commits a second. Why the floor: a commit's cost barely depends on how many
//! documents it carries (a new segment writer with its memory arena, segment files created and
//! synced, `meta.json` rewritten, and later merges of the small segments), and at 200 ms apart
//! those fixed costs were about a fifth of each node's CPU under a 64-connection post load
//! (`perf`, release build), CPU the write path then lacked. Why not longer: a message must be
//! searchable on every node within a second of its acknowledgement (issue 15's acceptance,
//! `chaos-tests` `search::search_across_nodes`), and the worst case is the interval plus one
//! commit. A lagged subscription, a gap in a channel's
//! events, and a periodic timer all lead to the same reconciliation, which is incremental: it
//! reads only the events after each channel's cursor, and re-indexes a channel whole only when
//! its cursor is ahead of the state (a restore, a wipe) or missing (a new or rebuilt index).
//! Searches answer from the last commit meanwhile: during a rebuild, with what it has so far.
//!
//! Must never block the event bus (it only receives), write to the Raft log, or trust the
//! event's content over the state: it always re-reads the message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{ChannelEvent, ClusterNode, Event, EventKind};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::SearchError;
use crate::index::{IndexDoc, SearchIndex};
use crate::source::Source;

/// Tuning of the feeder.
#[derive(Debug, Clone)]
pub struct FeederOptions {
    /// How long events are gathered after the first one before they are committed: on an
    /// idle index, the time from an applied message to the commit that makes it searchable.
    pub commit_every: Duration,
    /// Least time between the end of one commit and the next: under sustained load, the longest
    /// time from an applied message to its commit (plus the commit itself).
    pub min_commit_interval: Duration,
    /// Events gathered into one commit at most.
    pub max_batch: usize,
    /// How often the index is reconciled with the state even without a reason (a snapshot
    /// installed on this node replaces the state without events).
    pub reconcile_every: Duration,
    /// During a rebuild, commit after this many documents so searches see progress.
    pub rebuild_commit_docs: usize,
}

impl Default for FeederOptions {
    fn default() -> Self {
        Self {
            commit_every: Duration::from_millis(200),
            min_commit_interval: Duration::from_millis(400),
            max_batch: 20_000,
            reconcile_every: Duration::from_secs(30),
            rebuild_commit_docs: 100_000,
        }
    }
}

/// Starts the feeder of `index` on `node`'s applied state; it ends on `cancel` (after a last
/// commit).
pub struct Feeder;

impl Feeder {
    pub fn start(
        node: Arc<ClusterNode>,
        index: Arc<SearchIndex>,
        opts: FeederOptions,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        // Subscribe before the first reconciliation reads the state: nothing applied in
        // between can be missed (at worst it is seen twice, which is harmless).
        let events = node.events().subscribe();
        let source = Arc::new(node.reader().clone());
        Self::start_with(source, events, index, opts, cancel)
    }

    /// [`Feeder::start`] on any [`Source`] and event stream (tests).
    pub fn start_with<S: Source + 'static>(
        source: Arc<S>,
        events: broadcast::Receiver<Event>,
        index: Arc<SearchIndex>,
        opts: FeederOptions,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        cluster::spawn_named("search-feeder", async move {
            run(source, events, index, opts, cancel).await;
        })
    }
}

async fn run<S: Source + 'static>(
    source: Arc<S>,
    mut events: broadcast::Receiver<Event>,
    index: Arc<SearchIndex>,
    opts: FeederOptions,
    cancel: CancellationToken,
) {
    let cursors = match index.cursors() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "search index cursors unreadable; rebuilding");
            HashMap::new()
        }
    };
    let mut st = Some(FeedState {
        cursors,
        high: HashMap::new(),
        settled: false,
        written: 0,
        opts: opts.clone(),
        cancel: cancel.clone(),
    });
    let mut reconcile = true;
    let mut tick = tokio::time::interval(opts.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    // When the last step ended; the first event after a quiet interval is committed within
    // `commit_every`.
    let mut last_step = tokio::time::Instant::now() - opts.min_commit_interval;
    loop {
        let mut batch = Vec::new();
        if !reconcile {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => reconcile = true,
                r = events.recv() => match r {
                    Ok(ev) => batch.push(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(missed = n, "search feeder lagged; reconciling with the state");
                        reconcile = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
            // Group commit: gather what arrives within `commit_every` of the first event, and
            // until `min_commit_interval` has passed since the last commit.
            let until = (tokio::time::Instant::now() + opts.commit_every)
                .max(last_step + opts.min_commit_interval);
            while !reconcile && !batch.is_empty() && batch.len() < opts.max_batch {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => break,
                    r = events.recv() => match r {
                        Ok(ev) => batch.push(ev),
                        Err(broadcast::error::RecvError::Lagged(_)) => reconcile = true,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        }
        let Some(mut s) = st.take() else { break };
        let (src, ix) = (source.clone(), index.clone());
        let do_reconcile = std::mem::take(&mut reconcile);
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let r = s.step(&*src, &ix, &batch, do_reconcile);
            (s, r, started.elapsed(), batch.len())
        });
        let ended = job.await;
        last_step = tokio::time::Instant::now();
        match ended {
            Ok((s, r, took, n)) => {
                if let Err(e) = r {
                    // The next reconciliation repairs whatever this step left undone.
                    tracing::warn!(error = %e, "search indexing step failed; will reconcile");
                    reconcile = true;
                } else if do_reconcile {
                    tracing::debug!(
                        took_ms = took.as_millis() as u64,
                        events = n,
                        "search index reconciled"
                    );
                }
                st = Some(s);
            }
            Err(e) => {
                tracing::error!(error = %e, "search indexing step panicked; feeder stops");
                break;
            }
        }
    }
    let ix = index.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = ix.commit() {
            tracing::warn!(error = %e, "last search index commit failed");
        }
        ix.close();
    })
    .await;
}

/// The feeder's memory: each channel's event sequence the index covers (the same values the
/// cursor documents hold once committed).
struct FeedState {
    cursors: HashMap<String, u64>,
    /// Per channel, the highest message sequence this process wrote a document for. A posted
    /// message (sequences only grow) above it has no document yet, so it is added without the
    /// delete an upsert costs; that delete halved indexing throughput at a million messages
    /// (`search-bench`: 12,256 msgs/s with it, 23,698 without, same machine and load).
    high: HashMap<String, u64>,
    /// The first reconciliation finished: every channel's documents beyond its cursor (left by
    /// an earlier process, e.g. a rebuild that read messages applied after its cursor) have
    /// been rewritten by this process and so are counted in `high`. Before, every write is an
    /// upsert.
    settled: bool,
    /// Documents written since the last commit.
    written: usize,
    opts: FeederOptions,
    cancel: CancellationToken,
}

impl FeedState {
    fn step(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        batch: &[Event],
        reconcile: bool,
    ) -> Result<(), SearchError> {
        let mut touched = HashSet::new();
        for ev in batch {
            if let EventKind::Channel { channel, ev, event } = &ev.kind {
                self.apply_event(src, ix, channel, *ev, event)?;
                touched.insert(channel.clone());
            }
        }
        for c in touched {
            if let Some(&ev) = self.cursors.get(&c) {
                ix.set_cursor(&c, ev)?;
            }
        }
        if reconcile {
            self.reconcile(src, ix)?;
            if !self.cancel.is_cancelled() {
                self.settled = true;
            }
        }
        ix.commit()?;
        self.written = 0;
        Ok(())
    }

    fn apply_event(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        channel: &str,
        ev: u64,
        event: &ChannelEvent,
    ) -> Result<(), SearchError> {
        let cur = self.cursors.get(channel).copied().unwrap_or(0);
        if ev <= cur {
            return Ok(()); // already covered by a reconciliation that read newer state
        }
        if ev > cur + 1 {
            // Missed events of this channel: read them from the state.
            return self.catch_up(src, ix, channel);
        }
        if let ChannelEvent::Message { seq }
        | ChannelEvent::Edited { seq }
        | ChannelEvent::Deleted { seq } = event
        {
            let posted = matches!(event, ChannelEvent::Message { .. });
            self.refresh(src, ix, channel, *seq, posted)?;
        }
        self.cursors.insert(channel.to_owned(), ev);
        Ok(())
    }

    /// Re-reads one message and indexes what it is now. `posted`: the event is the message's
    /// creation (not an edit or deletion).
    fn refresh(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        channel: &str,
        seq: u64,
        posted: bool,
    ) -> Result<(), SearchError> {
        match src.message(channel, seq)? {
            Some(m) if !m.deleted => {
                let doc = IndexDoc {
                    channel: m.channel,
                    seq: m.seq,
                    author: m.author,
                    ts_ms: m.ts_ms,
                    body: m.body,
                };
                let high = self.high.get(channel).copied().unwrap_or(0);
                if posted && self.settled && seq > high {
                    ix.add_new(std::slice::from_ref(&doc))?;
                } else {
                    ix.upsert(&doc)?;
                }
                // No key allocation per message once the channel is known.
                match self.high.get_mut(channel) {
                    Some(h) => *h = (*h).max(seq),
                    None => {
                        self.high.insert(channel.to_owned(), seq);
                    }
                }
            }
            _ => ix.remove(channel, seq)?,
        }
        self.written += 1;
        Ok(())
    }

    fn maybe_commit(&mut self, ix: &SearchIndex) -> Result<(), SearchError> {
        if self.written >= self.opts.rebuild_commit_docs {
            ix.commit()?;
            self.written = 0;
        }
        Ok(())
    }

    /// Brings every channel up to the state and drops channels that no longer exist.
    fn reconcile(&mut self, src: &dyn Source, ix: &SearchIndex) -> Result<(), SearchError> {
        let channels = src.channels()?;
        let live: HashSet<&str> = channels.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .cursors
            .keys()
            .filter(|c| !live.contains(c.as_str()))
            .cloned()
            .collect();
        for c in gone {
            ix.remove_channel(&c)?;
            self.cursors.remove(&c);
            // A channel of that name created later starts with no documents.
            self.high.remove(&c);
        }
        for c in &channels {
            if self.cancel.is_cancelled() {
                break;
            }
            self.catch_up(src, ix, c)?;
        }
        Ok(())
    }

    /// Brings one channel up to the state: its events after the cursor, or the whole channel.
    fn catch_up(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        channel: &str,
    ) -> Result<(), SearchError> {
        let state_ev = src.last_ev(channel)?;
        match self.cursors.get(channel).copied() {
            Some(cur) if cur == state_ev => Ok(()),
            Some(cur) if cur < state_ev => {
                let mut cur = cur;
                loop {
                    let evs = src.events_after(channel, cur, 1000)?;
                    let Some(&(first, _)) = evs.first() else {
                        break;
                    };
                    if first != cur + 1 {
                        // The state's event log does not continue ours: start over.
                        return self.rebuild_channel(src, ix, channel);
                    }
                    for (ev, e) in evs {
                        if let ChannelEvent::Message { seq }
                        | ChannelEvent::Edited { seq }
                        | ChannelEvent::Deleted { seq } = e
                        {
                            let posted = matches!(e, ChannelEvent::Message { .. });
                            self.refresh(src, ix, channel, seq, posted)?;
                        }
                        cur = ev;
                    }
                    self.maybe_commit(ix)?;
                }
                self.cursors.insert(channel.to_owned(), cur);
                ix.set_cursor(channel, cur)
            }
            // Ahead of the state (restored, wiped) or never indexed.
            _ => self.rebuild_channel(src, ix, channel),
        }
    }

    fn rebuild_channel(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        channel: &str,
    ) -> Result<(), SearchError> {
        // The cursor is read before the messages: whatever is applied while we read is
        // covered by events after it, which are applied again (harmlessly) later.
        let state_ev = src.last_ev(channel)?;
        ix.remove_channel(channel)?;
        self.cursors.remove(channel);
        self.high.insert(channel.to_owned(), 0);
        let mut after = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(()); // no cursor: the next start rebuilds this channel
            }
            let page = src.messages_after(channel, after, 2000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            // Messages applied while this runs are read here and again from their events,
            // which must then replace, not add: `high` covers them.
            self.high.insert(channel.to_owned(), after);
            let docs: Vec<IndexDoc> = page
                .into_iter()
                .filter(|m| !m.deleted)
                .map(|m| IndexDoc {
                    channel: m.channel,
                    seq: m.seq,
                    author: m.author,
                    ts_ms: m.ts_ms,
                    body: m.body,
                })
                .collect();
            self.written += docs.len();
            ix.add_new(&docs)?;
            self.maybe_commit(ix)?;
        }
        self.cursors.insert(channel.to_owned(), state_ev);
        ix.set_cursor(channel, state_ev)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use cluster::{MessageView, StateError};

    use super::*;
    use crate::{ParsedQuery, SearchRequest};

    /// An in-memory state: one channel's messages and events.
    #[derive(Default)]
    struct Mock {
        msgs: Mutex<BTreeMap<u64, MessageView>>,
        events: Mutex<Vec<(u64, ChannelEvent)>>,
        /// While set, `last_ev` answers one event short, as a read made just before a post
        /// was applied would.
        stale: AtomicBool,
    }

    const CH: &str = "general";

    impl Mock {
        /// Applies a post or an edit (the state's side) and returns its event.
        fn apply(&self, seq: u64, body: &str, edit: bool) -> Event {
            self.msgs.lock().unwrap().insert(
                seq,
                MessageView {
                    channel: CH.into(),
                    seq,
                    author: "alice".into(),
                    body: body.into(),
                    ts_ms: 1_000 + seq,
                    client_msg_id: format!("m{seq}"),
                    thread_root: None,
                    reply_count: 0,
                    edited_at_ms: edit.then_some(5_000),
                    deleted: false,
                    pinned: false,
                    reactions: BTreeMap::new(),
                    mentions: Vec::new(),
                    channel_mention: false,
                    attachments: Vec::new(),
                },
            );
            let event = if edit {
                ChannelEvent::Edited { seq }
            } else {
                ChannelEvent::Message { seq }
            };
            let mut evs = self.events.lock().unwrap();
            let ev = evs.len() as u64 + 1;
            evs.push((ev, event.clone()));
            Event {
                index: ev,
                kind: EventKind::Channel {
                    channel: CH.into(),
                    ev,
                    event,
                },
            }
        }
    }

    impl Source for Mock {
        fn channels(&self) -> Result<Vec<String>, StateError> {
            Ok(vec![CH.into()])
        }
        fn last_ev(&self, _: &str) -> Result<u64, StateError> {
            let n = self.events.lock().unwrap().len() as u64;
            Ok(if self.stale.load(Ordering::SeqCst) {
                n - 1
            } else {
                n
            })
        }
        fn events_after(
            &self,
            _: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<(u64, ChannelEvent)>, StateError> {
            let evs = self.events.lock().unwrap();
            Ok(evs
                .iter()
                .filter(|(ev, _)| *ev > after)
                .take(limit)
                .cloned()
                .collect())
        }
        fn messages_after(
            &self,
            _: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<MessageView>, StateError> {
            let msgs = self.msgs.lock().unwrap();
            Ok(msgs
                .range(after + 1..)
                .take(limit)
                .map(|(_, m)| m.clone())
                .collect())
        }
        fn message(&self, _: &str, seq: u64) -> Result<Option<MessageView>, StateError> {
            Ok(self.msgs.lock().unwrap().get(&seq).cloned())
        }
    }

    /// The sequences of the documents matching `word` (one entry per document).
    fn found(ix: &SearchIndex, word: &str) -> Vec<u64> {
        let req = SearchRequest {
            query: ParsedQuery::parse(word).unwrap(),
            channels: vec![CH.into()],
            author: None,
            after_ms: None,
            before_ms: None,
            limit: 100,
            cursor: None,
        };
        let mut seqs: Vec<u64> = ix
            .search(&req)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.seq)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// A post is added without a delete only when no document can exist for it: one that a
    /// rebuild already read (its event still to come) is replaced, never doubled, and edits
    /// always replace.
    #[test]
    fn every_message_has_one_document_whichever_way_it_arrives() {
        let src = Mock::default();
        let ix = SearchIndex::in_ram().unwrap();
        let mut st = FeedState {
            cursors: HashMap::new(),
            high: HashMap::new(),
            settled: false,
            written: 0,
            opts: FeederOptions::default(),
            cancel: CancellationToken::new(),
        };
        src.apply(1, "alpha one", false);
        // The rebuild reads its cursor just before post 2 is applied, then reads post 2 too.
        let late = src.apply(2, "alpha two", false);
        src.stale.store(true, Ordering::SeqCst);
        st.step(&src, &ix, &[], true).unwrap();
        src.stale.store(false, Ordering::SeqCst);
        assert!(st.settled);
        assert_eq!(
            st.cursors.get(CH),
            Some(&1),
            "the rebuild's cursor is the stale read"
        );
        assert_eq!(found(&ix, "alpha"), vec![1, 2]);
        // Post 2's event arrives after the rebuild: replaced, not added again.
        st.step(&src, &ix, &[late], false).unwrap();
        assert_eq!(found(&ix, "alpha"), vec![1, 2]);
        // A new post (the no-delete path), then its edit.
        let post = src.apply(3, "alpha three", false);
        st.step(&src, &ix, &[post], false).unwrap();
        assert_eq!(found(&ix, "alpha"), vec![1, 2, 3]);
        let edit = src.apply(3, "beta three", true);
        st.step(&src, &ix, &[edit], false).unwrap();
        assert_eq!(found(&ix, "alpha"), vec![1, 2]);
        assert_eq!(found(&ix, "three"), vec![3]);
        // A reconciliation that finds nothing new changes nothing.
        st.step(&src, &ix, &[], true).unwrap();
        assert_eq!(found(&ix, "alpha"), vec![1, 2]);
        assert_eq!(found(&ix, "three"), vec![3]);
    }

    /// Polls `found` until it equals `want` or `within` passes; returns when it first did.
    async fn until_found(ix: &SearchIndex, word: &str, want: &[u64], within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if found(ix, word) == want {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "'{word}' still finds {:?}, want {want:?}",
                found(ix, word)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first post after a quiet spell is searchable after `commit_every`; a second one
    /// right after waits for `min_commit_interval` since that commit, so a steady stream costs
    /// one commit per interval, not one per `commit_every`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_paced_by_the_minimum_interval() {
        let src = Arc::new(Mock::default());
        let ix = Arc::new(SearchIndex::in_ram().unwrap());
        let (tx, rx) = broadcast::channel(64);
        let cancel = CancellationToken::new();
        let opts = FeederOptions {
            commit_every: Duration::from_millis(50),
            min_commit_interval: Duration::from_millis(1_500),
            ..FeederOptions::default()
        };
        let task = Feeder::start_with(src.clone(), rx, ix.clone(), opts, cancel.clone());
        // The quiet spell under test: longer than `min_commit_interval` since the feeder's
        // first step (its start-up reconciliation of the empty state), so the post below is the
        // first event after a quiet interval. Elapsed time is the condition here, not a proxy.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        let sent = Instant::now();
        tx.send(src.apply(1, "alpha one", false)).unwrap();
        let first = until_found(&ix, "alpha", &[1], Duration::from_secs(10)).await;
        assert!(
            first - sent < Duration::from_millis(1_400),
            "a post after a quiet spell waited {:?} for its commit",
            first - sent
        );
        tx.send(src.apply(2, "alpha two", false)).unwrap();
        // Not searchable before the interval since the previous commit has passed (a lower
        // bound: load can only delay the commit further).
        let floor = first + Duration::from_millis(1_000);
        while Instant::now() < floor {
            assert_eq!(
                found(&ix, "alpha"),
                vec![1],
                "committed before the interval"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        until_found(&ix, "alpha", &[1, 2], Duration::from_secs(10)).await;
        cancel.cancel();
        task.await.unwrap();
    }
}
