//! Network partitions between nodes on loopback, with the test's own iptables rules.
//!
//! Nodes connect to their peers from their own cluster address (the server binds its peer
//! client to it), so rules keyed on source and destination address cut exactly the links
//! between two nodes and leave the test's own client traffic (from 127.0.0.1) alone. Every rule
//! carries a comment unique to this partition and is deleted on drop, also when a test panics.
//! Linux and root only: `Partition::available()` says whether the test can run here.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Links cut between pairs of addresses until dropped.
pub struct Partition {
    tag: String,
    rules: Vec<(Ipv4Addr, Ipv4Addr)>,
}

fn iptables(args: &[&str]) -> Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .context("run iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Partition {
    /// Whether iptables can be used here (root, the binary present and working).
    pub fn available() -> Result<(), String> {
        match Command::new("iptables")
            .args(["-w", "-L", "OUTPUT", "-n"])
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "iptables -L failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("iptables not runnable: {e}")),
        }
    }

    /// Cuts every link between `side` and each address in `others`, both directions.
    pub fn isolate(side: Ipv4Addr, others: &[Ipv4Addr]) -> Result<Partition> {
        let mut p = Partition {
            tag: Self::new_tag(),
            rules: Vec::new(),
        };
        for o in others {
            for (src, dst) in [(side, *o), (*o, side)] {
                p.add(src, dst)?;
            }
        }
        Ok(p)
    }

    /// Drops every packet from `from` to each address in `to`; the other direction still
    /// flows. Over TCP a one-way cut still breaks new connections (their handshake needs both
    /// ways), but data on a connection that was already open keeps arriving at the far side
    /// without its acknowledgements coming back: a node keeps hearing, or keeps being heard.
    pub fn one_way(from: Ipv4Addr, to: &[Ipv4Addr]) -> Result<Partition> {
        let mut p = Partition {
            tag: Self::new_tag(),
            rules: Vec::new(),
        };
        for t in to {
            p.add(from, *t)?;
        }
        Ok(p)
    }

    fn new_tag() -> String {
        format!(
            "conclave-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn rule_args<'a>(&'a self, op: &'a str, src: &'a str, dst: &'a str) -> Vec<&'a str> {
        vec![
            "-w",
            op,
            "OUTPUT",
            "-s",
            src,
            "-d",
            dst,
            "-m",
            "comment",
            "--comment",
            &self.tag,
            "-j",
            "DROP",
        ]
    }

    fn add(&mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<()> {
        let (s, d) = (src.to_string(), dst.to_string());
        iptables(&self.rule_args("-I", &s, &d))?;
        self.rules.push((src, dst));
        Ok(())
    }

    /// Restores every cut link now (dropping does the same).
    pub fn heal(&mut self) {
        for (src, dst) in std::mem::take(&mut self.rules) {
            let (s, d) = (src.to_string(), dst.to_string());
            if let Err(e) = iptables(&self.rule_args("-D", &s, &d)) {
                eprintln!("partition cleanup: {e}");
            }
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.heal();
    }
}
