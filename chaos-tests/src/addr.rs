//! Loopback address blocks: each test cluster gets its own `127.<a>.<b>.0/24`, node N on
//! `127.<a>.<b>.N`, with the production ports (8080 API, 9080 Raft) so configs look real.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so distinct addresses need no setup. Blocks are
//! spread by pid and a per-process counter so parallel tests (threads or processes) rarely pick
//! the same one, and a block is only taken when (1) an exclusive lock file for it can be held for
//! the cluster's lifetime (closes the race between two processes) and (2) every address/port it
//! will use can be bound right now (nothing else, e.g. a leaked node, is on it).
//! `127.0.x.x` is never used: the dev cluster lives on `127.0.0.x`.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, bail};

/// Port every node's HTTP API listens on (on its own address).
pub const API_PORT: u16 = 8080;
/// Port every node's Raft RPC listener uses (on its own address).
pub const CLUSTER_PORT: u16 = 9080;

/// First and last value of the second octet; 151 * 256 blocks in all.
const A_MIN: u64 = 100;
const A_MAX: u64 = 250;
const BLOCKS: u64 = (A_MAX - A_MIN + 1) * 256;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A reserved `127.a.b.0/24`. The reservation (a held lock file) ends when this is dropped.
#[derive(Debug)]
pub struct AddrBlock {
    pub a: u8,
    pub b: u8,
    _lock: File,
}

impl AddrBlock {
    /// Address of node `id` (1..=254).
    pub fn ip(&self, id: u64) -> Ipv4Addr {
        let last = u8::try_from(id).unwrap_or(u8::MAX);
        Ipv4Addr::new(127, self.a, self.b, last)
    }

    pub fn api_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(id), API_PORT))
    }

    pub fn cluster_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(id), CLUSTER_PORT))
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("conclave-chaos-addr-locks")
}

/// Reserves a block whose first `nodes` addresses are free on both ports.
pub fn allocate(nodes: u64) -> Result<AddrBlock> {
    if nodes == 0 || nodes > 254 {
        bail!("a block holds 1..=254 nodes, asked for {nodes}");
    }
    std::fs::create_dir_all(lock_dir())?;
    // Knuth's multiplicative hash spreads consecutive pids across the whole space.
    let base = u64::from(std::process::id()).wrapping_mul(2_654_435_761) % BLOCKS;
    let mut last_problem = String::from("no candidate tried");
    for _ in 0..512 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A stride co-prime with BLOCKS so successive clusters of one process do not sit side by side.
        let idx = (base + n * 7_919) % BLOCKS;
        let a = u8::try_from(A_MIN + idx / 256)?;
        let b = u8::try_from(idx % 256)?;
        let lock_path = lock_dir().join(format!("127.{a}.{b}.lock"));
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) => {
                last_problem = format!("open {}: {e}", lock_path.display());
                continue;
            }
        };
        if lock.try_lock().is_err() {
            last_problem = format!("127.{a}.{b}.0/24 is locked by another test process");
            continue;
        }
        let block = AddrBlock { a, b, _lock: lock };
        match probe(&block, nodes) {
            Ok(()) => return Ok(block),
            Err(e) => last_problem = e,
        }
    }
    bail!("no free loopback block found; last problem: {last_problem}")
}

/// Binds (then releases) every address the cluster will use.
fn probe(block: &AddrBlock, nodes: u64) -> std::result::Result<(), String> {
    for id in 1..=nodes {
        for addr in [block.api_addr(id), block.cluster_addr(id)] {
            TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn blocks_of_one_process_are_distinct_and_never_in_127_0() {
        let x = allocate(3).unwrap();
        let y = allocate(3).unwrap();
        assert_ne!((x.a, x.b), (y.a, y.b));
        for blk in [&x, &y] {
            assert!(
                (100..=250).contains(&blk.a),
                "second octet {} out of range",
                blk.a
            );
            assert_eq!(
                blk.api_addr(2).to_string(),
                format!("127.{}.{}.2:8080", blk.a, blk.b)
            );
        }
    }
}
