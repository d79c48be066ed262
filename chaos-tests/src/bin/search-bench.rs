//! Search index benchmark (issue 15): indexes generated chat messages into a real on-disk index
//! (`search::SearchIndex`, the same code and settings a node uses) and reports indexing
//! throughput, then runs a few hundred varied queries and reports their latency.
//!
//! Indexing goes through the live path for posted messages (`add_new`: the feeder adds a post
//! above its channel's highest indexed sequence without a delete first; edits and deletions
//! upsert) in batches committed like the feeder's group commit; the feeder's re-read of each
//! message from the state is not included. Queries go through `SearchIndex::search` with a
//! 100-channel access filter, as a user's would, right after the last commit (so while
//! tantivy's background merges of the bulk load may still run).
//!
//! ```text
//! $CARGO_TARGET_DIR/debug/search-bench                 # 1,000,000 messages, 400 queries
//! $CARGO_TARGET_DIR/debug/search-bench --smoke         # a few seconds, for CI
//! ```
//!
//! Messages are generated in-process: 2,000 channels, 5,000 authors, bodies of 3 to 60 words
//! (about 180 bytes on average) drawn from a 20,000-word vocabulary with a skewed (Zipf-like)
//! frequency, so common words match hundreds of thousands of messages and rare ones a few.

#![allow(clippy::print_stdout)] // a benchmark's report is its stdout

use std::time::{Duration, Instant};

use clap::Parser;
use search::{IndexDoc, ParsedQuery, SearchIndex, SearchRequest};

#[derive(Parser, Debug)]
#[command(about = "Search index benchmark: indexing throughput and query latency")]
struct Args {
    /// Messages to index.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Messages per commit (the feeder commits every 200 ms or 20,000 events).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Queries to time.
    #[arg(long, default_value_t = 400)]
    queries: usize,
    /// A few seconds: 20,000 messages, 60 queries.
    #[arg(long)]
    smoke: bool,
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Skewed towards 0: index `n * u^3`.
    fn skewed(&mut self, n: usize) -> usize {
        let u = self.unit();
        ((n as f64) * u * u * u) as usize
    }
}

const VOCAB: usize = 20_000;
const CHANNELS: u64 = 2_000;
const AUTHORS: u64 = 5_000;

fn vocabulary() -> Vec<String> {
    let syll = [
        "ka", "to", "re", "mi", "su", "an", "lo", "ve", "din", "par", "ex", "qua", "tor", "ni",
        "bel", "os", "ut", "gra", "fen", "ly",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < VOCAB {
        let n = 1 + rng.below(4) as usize;
        let w: String = (0..n)
            .map(|_| syll[rng.below(syll.len() as u64) as usize])
            .collect();
        words.insert(w);
    }
    // Shuffle so the skew does not favour short words only.
    let mut v: Vec<String> = words.into_iter().collect();
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn message(rng: &mut Rng, vocab: &[String], seq_of: &mut [u64], ts: u64) -> IndexDoc {
    let channel = rng.below(CHANNELS);
    seq_of[channel as usize] += 1;
    let words = 3 + rng.below(58) as usize;
    let mut body = String::with_capacity(words * 7);
    for i in 0..words {
        if i > 0 {
            body.push(if rng.below(12) == 0 { ',' } else { ' ' });
            if body.ends_with(',') {
                body.push(' ');
            }
        }
        body.push_str(&vocab[rng.skewed(VOCAB)]);
    }
    if rng.below(3) == 0 {
        body.push('.');
    }
    IndexDoc {
        channel: format!("ch{channel}"),
        seq: seq_of[channel as usize],
        author: format!("user{}", rng.below(AUTHORS)),
        ts_ms: ts,
        body,
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.messages = 20_000;
        args.queries = 60;
    }
    let dir = tempfile::tempdir()?;
    let index = SearchIndex::open(&dir.path().join("search"))?;
    let vocab = vocabulary();
    let mut rng = Rng(42);
    let mut seq_of = vec![0u64; CHANNELS as usize];
    let t0: u64 = 1_760_000_000_000;

    // ---- indexing ----
    let started = Instant::now();
    let mut samples: Vec<IndexDoc> = Vec::new();
    let mut batch = Vec::with_capacity(args.batch);
    let mut gen_time = Duration::ZERO;
    for i in 0..args.messages {
        let g = Instant::now();
        let d = message(&mut rng, &vocab, &mut seq_of, t0 + i * 50);
        gen_time += g.elapsed();
        if i % (args.messages / 200).max(1) == 0 {
            samples.push(d.clone());
        }
        batch.push(d);
        if batch.len() == args.batch {
            // Posted messages go in the way the feeder adds them once settled: no delete
            // first (`search::feeder`, `FeedState::high`); edits and deletions are rare.
            index.add_new(&batch)?;
            batch.clear();
            index.commit()?;
        }
    }
    index.add_new(&batch)?;
    index.commit()?;
    let took = started.elapsed().saturating_sub(gen_time);
    let stats = index.stats();
    println!(
        "indexed {} messages in {:.1} s (generation excluded): {:.0} msgs/s; {} segments, {} searchable",
        args.messages,
        took.as_secs_f64(),
        args.messages as f64 / took.as_secs_f64(),
        stats.segments,
        stats.messages
    );

    // ---- queries ----
    // A user who can read 100 of the channels (public ones and their own private ones).
    let readable: Vec<String> = (0..100)
        .map(|i| format!("ch{}", i * (CHANNELS / 100)))
        .collect();
    let mut lat = Vec::with_capacity(args.queries);
    let mut total_hits = 0usize;
    for qi in 0..args.queries {
        let s = &samples[qi % samples.len()];
        let words: Vec<&str> = s
            .body
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let w = |k: usize| words[k % words.len()];
        let (q, author, channels) = match qi % 6 {
            0 => (vocab[rng.skewed(50)].clone(), None, readable.clone()), // a very common word
            1 => (
                vocab[VOCAB - 1 - rng.below(5000) as usize].clone(),
                None,
                readable.clone(),
            ), // rare
            2 => (format!("{} {}", w(0), w(2)), None, readable.clone()),
            3 => (format!("\"{} {}\"", w(1), w(2)), None, readable.clone()), // phrase
            4 => (w(3).to_owned(), Some(s.author.clone()), readable.clone()),
            _ => (w(0).to_owned(), None, vec![s.channel.clone()]),
        };
        let req = SearchRequest {
            query: ParsedQuery::parse(&q)?,
            channels,
            author,
            after_ms: None,
            before_ms: (qi % 4 == 0).then_some(t0 + args.messages * 25),
            limit: 20,
            cursor: None,
        };
        let t = Instant::now();
        let page = index.search(&req)?;
        lat.push(t.elapsed());
        total_hits += page.hits.len();
    }
    lat.sort();
    println!(
        "queries {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} results returned in all)",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        total_hits
    );
    index.close();
    Ok(())
}
