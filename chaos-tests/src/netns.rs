//! A network namespace for a client that must reach a Docker bridge network the test created,
//! and nothing else: the real-browser Docker test runs Chromium (and its chromedriver) in one,
//! so the browser can only find the cluster by the workspace name through the nodes' DNS.
//!
//! Owns the namespace, its veth pair and `/etc/netns/<name>/resolv.conf`, and removes all three
//! on drop. Must never add a default route or any address outside the bridge's subnet: the
//! namespace may reach the test's own network only (no traffic leaves the machine).
//!
//! What works, checked by hand on this machine (Docker 28, iproute2, Chromium 156):
//! - veth pair: one end in the namespace with a free address of the network's subnet (the
//!   test's containers have fixed addresses, so Docker's IPAM hands out nothing we could
//!   collide with; [`ClientNetns::attach`] also checks the address is unused), the other end
//!   enslaved to the network's bridge (`br-<first 12 hex of the network id>`, unless the
//!   network named its bridge). Both directions work without touching Docker's iptables rules:
//!   bridged traffic between ports of one bridge is accepted by its `-i br -o br` rule, and
//!   the host reaches the namespace from the bridge's gateway address (the host's own address
//!   on the bridge).
//! - `ip netns exec NAME` bind-mounts `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf` for
//!   the command it runs, so the file must exist before the browser starts. Chromium's own
//!   resolver reads it (no flags needed): it asks the listed servers for A and HTTPS records.
//! - chromedriver runs INSIDE the namespace (`--allowed-ips=<gateway>` makes it listen on every
//!   address of the namespace) and the test talks to it at the namespace's address. Running
//!   chromedriver outside with a wrapper `binary` that enters the namespace does not work:
//!   chromedriver reaches Chromium's DevTools port on 127.0.0.1, which is the namespace's own
//!   loopback, not the host's.
//! - Deleting the namespace while a process still runs in it keeps the namespace (and the veth)
//!   alive until that process exits: kill the browser first, then drop this.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A namespace with one veth into a Docker bridge network. Removed on drop.
#[derive(Debug)]
pub struct ClientNetns {
    /// `ip netns` name (also the `/etc/netns/<name>` directory).
    pub name: String,
    /// The namespace's address on the network.
    pub ip: Ipv4Addr,
    /// The host's address on the same bridge: where connections from the host to the
    /// namespace come from.
    pub gateway: Ipv4Addr,
    host_veth: String,
    etc_dir: PathBuf,
}

/// Runs `ip` (or another tool) and fails with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The Linux bridge behind Docker network `network`, and its gateway (the host's address).
fn bridge_of(network: &str) -> Result<(String, Ipv4Addr, u8)> {
    let out = run(
        "docker",
        &[
            "network",
            "inspect",
            "-f",
            "{{.Id}} {{index .Options \"com.docker.network.bridge.name\"}} \
             {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
            network,
        ],
    )?;
    let fields: Vec<&str> = out.split_whitespace().collect();
    // With no bridge name option the template prints "<no value>" (two words).
    let (id, named, rest) = match fields.as_slice() {
        [id, "<no", "value>", rest @ ..] => (*id, None, rest),
        [id, name, rest @ ..] => (*id, Some(*name), rest),
        _ => bail!("docker network inspect {network}: unexpected {out:?}"),
    };
    let [subnet, gateway, ..] = rest else {
        bail!("docker network inspect {network}: no IPv4 subnet and gateway in {out:?}");
    };
    let bridge = match named {
        Some(n) => n.to_owned(),
        None => format!("br-{}", id.get(..12).unwrap_or(id)),
    };
    let prefix: u8 = subnet
        .split_once('/')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("subnet {subnet:?} of {network}"))?;
    let gateway: Ipv4Addr = gateway
        .parse()
        .with_context(|| format!("gateway {gateway:?} of {network}"))?;
    Ok((bridge, gateway, prefix))
}

impl ClientNetns {
    /// A namespace named `conclave-test-<random>` with address `ip` on Docker network
    /// `network` (a bridge network the test created), and `/etc/netns/<name>/resolv.conf`
    /// listing `nameservers` (the nodes: only they are asked). Root only.
    pub fn attach(network: &str, ip: Ipv4Addr, nameservers: &[Ipv4Addr]) -> Result<ClientNetns> {
        let (bridge, gateway, prefix) = bridge_of(network)?;
        let used = run(
            "docker",
            &[
                "network",
                "inspect",
                "-f",
                "{{range .Containers}}{{.IPv4Address}} {{end}}",
                network,
            ],
        )?;
        if ip == gateway
            || used
                .split_whitespace()
                .any(|a| a.split('/').next() == Some(&ip.to_string()))
        {
            bail!("{ip} is already used on {network} ({gateway} is the gateway; in use: {used})");
        }
        // 8 hex digits: "cvh" + tag stays within the 15 bytes of an interface name.
        let tag = crate::docker::new_suffix();
        let name = format!("conclave-test-{tag}");
        let host_veth = format!("cvh{tag}");
        let ns_veth = format!("cvn{tag}");
        let etc_dir = PathBuf::from("/etc/netns").join(&name);
        // From here on, whatever was made is removed by drop if a later step fails.
        let ns = ClientNetns {
            name: name.clone(),
            ip,
            gateway,
            host_veth: host_veth.clone(),
            etc_dir: etc_dir.clone(),
        };
        // resolv.conf first: `ip netns exec` bind-mounts it only if it exists at exec time.
        std::fs::create_dir_all(&etc_dir)
            .with_context(|| format!("create {}", etc_dir.display()))?;
        let resolv: String = nameservers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect::<String>()
            // Resolvers give up quickly on a dead server and try the next one.
            + "options timeout:1 attempts:2\n";
        std::fs::write(etc_dir.join("resolv.conf"), resolv)
            .with_context(|| format!("write {}/resolv.conf", etc_dir.display()))?;
        run("ip", &["netns", "add", &name])?;
        run(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
            ],
        )?;
        run("ip", &["link", "set", &ns_veth, "netns", &name])?;
        run("ip", &["link", "set", &host_veth, "master", &bridge])?;
        run("ip", &["link", "set", &host_veth, "up"])?;
        let cidr = format!("{ip}/{prefix}");
        for args in [
            vec!["addr", "add", cidr.as_str(), "dev", ns_veth.as_str()],
            vec!["link", "set", ns_veth.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", name.as_str(), "ip"];
            full.extend(args);
            run("ip", &full)?;
        }
        Ok(ns)
    }

    /// `program` to be run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for ClientNetns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, which takes the pair with it; the
        // explicit delete covers a namespace that was never made or a pair never moved in.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_veth]);
        let _ = std::fs::remove_dir_all(&self.etc_dir);
    }
}
