//! The feeder: keeps the index in step with the applied state.
//!
//! One named task per node. It subscribes to the applied-event bus first, then reconciles the
//! index with the state machine channel by channel (each channel's event sequence is the
//! cursor the index records), then follows the bus: a posted or edited message is re-read from
//! the state and re-indexed, a deleted one removed. Events are gathered for up to
//! `commit_every` (or `max_batch` events) and committed together, so a burst of thousands of
//! messages a second costs a few commits a second. A lagged subscription, a gap in a channel's
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
    /// Longest time between an applied message and the commit that makes it searchable.
    pub commit_every: Duration,
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
        written: 0,
        opts: opts.clone(),
        cancel: cancel.clone(),
    });
    let mut reconcile = true;
    let mut tick = tokio::time::interval(opts.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
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
            // Group commit: gather what arrives within `commit_every` of the first event.
            let until = tokio::time::Instant::now() + opts.commit_every;
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
        match job.await {
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
            self.refresh(src, ix, channel, *seq)?;
        }
        self.cursors.insert(channel.to_owned(), ev);
        Ok(())
    }

    /// Re-reads one message and indexes what it is now.
    fn refresh(
        &mut self,
        src: &dyn Source,
        ix: &SearchIndex,
        channel: &str,
        seq: u64,
    ) -> Result<(), SearchError> {
        match src.message(channel, seq)? {
            Some(m) if !m.deleted => ix.upsert(&IndexDoc {
                channel: m.channel,
                seq: m.seq,
                author: m.author,
                ts_ms: m.ts_ms,
                body: m.body,
            })?,
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
                            self.refresh(src, ix, channel, seq)?;
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
        let mut after = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(()); // no cursor: the next start rebuilds this channel
            }
            let page = src.messages_after(channel, after, 2000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
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
