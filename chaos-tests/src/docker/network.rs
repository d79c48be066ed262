//! A bridge network of the test's own: a random /24 in 172.29.0.0/16 (the range common.md gives
//! this suite; other suites use 172.27 and 172.28), retried when Docker says it overlaps one in
//! use. Removed on drop.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use super::{PREFIX, docker, docker_async, rand_u32};

/// How many random /24s to try before giving up.
const ATTEMPTS: u32 = 32;

#[derive(Debug)]
pub struct TestNetwork {
    pub name: String,
    /// The third octet: the network is 172.29.<octet>.0/24, the gateway (the host) .1.
    pub octet: u8,
}

impl TestNetwork {
    pub async fn create(suffix: &str) -> Result<TestNetwork> {
        let name = format!("{PREFIX}{suffix}");
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let octet = (rand_u32() % 256) as u8;
            let subnet = format!("172.29.{octet}.0/24");
            let gateway = format!("172.29.{octet}.1");
            match docker_async(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--gateway",
                &gateway,
                &name,
            ])
            .await
            {
                Ok(_) => return Ok(TestNetwork { name, octet }),
                Err(e) => {
                    last = format!("{e:#}");
                    if !last.contains("overlap") {
                        break;
                    }
                }
            }
        }
        bail!("cannot create network {name}: {last}")
    }

    /// Host `n` (2..=254) of the network.
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, 29, self.octet, n)
    }

    /// `172.29.<octet>.` : what replaces `10.53.0.` in the shipped configs.
    pub fn prefix(&self) -> String {
        format!("172.29.{}.", self.octet)
    }

    pub fn cidr(&self) -> String {
        format!("172.29.{}.0/24", self.octet)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if let Err(e) = docker(&["network", "rm", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}
