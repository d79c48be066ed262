//! A bridge network of the test's own: a random /24 in 172.29.0.0/16 (the range common.md gives
//! this suite; the browser scenario asks for 172.27.0.0/16 with [`TestNetwork::create_in`], the
//! package tests use 172.28), retried when Docker says it overlaps one in use. Removed on drop.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use super::{PREFIX, docker, docker_async, rand_u32};

/// How many random /24s to try before giving up.
const ATTEMPTS: u32 = 32;

#[derive(Debug)]
pub struct TestNetwork {
    pub name: String,
    /// The third octet: the network is 172.<second>.<octet>.0/24, the gateway (the host) .1.
    pub octet: u8,
    /// The second octet (29 unless [`TestNetwork::create_in`] chose another range).
    pub second: u8,
}

impl TestNetwork {
    pub async fn create(suffix: &str) -> Result<TestNetwork> {
        Self::create_in(suffix, 29).await
    }

    /// A random /24 in 172.`second`.0.0/16.
    pub async fn create_in(suffix: &str, second: u8) -> Result<TestNetwork> {
        let name = format!("{PREFIX}{suffix}");
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let octet = (rand_u32() % 256) as u8;
            let subnet = format!("172.{second}.{octet}.0/24");
            let gateway = format!("172.{second}.{octet}.1");
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
                Ok(_) => {
                    return Ok(TestNetwork {
                        name,
                        octet,
                        second,
                    });
                }
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
        Ipv4Addr::new(172, self.second, self.octet, n)
    }

    /// `172.<second>.<octet>.` : what replaces `10.53.0.` in the shipped configs.
    pub fn prefix(&self) -> String {
        format!("172.{}.{}.", self.second, self.octet)
    }

    pub fn cidr(&self) -> String {
        format!("172.{}.{}.0/24", self.second, self.octet)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if let Err(e) = docker(&["network", "rm", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}
