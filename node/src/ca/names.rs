//! Names the CA may certify: the workspace zone, the site's address ranges, and the node-identity
//! names. Owns the checks we run before signing (the issuing CA's X.509 name constraints are the
//! second line of defence) and the one place that defines how a node id is written into a
//! certificate. Must never accept a name it cannot prove is inside the constraints.
//!
//! Node identity: node `N` gets the DNS SAN `N.nodes.<workspace>` (for example
//! `3.nodes.chat.conclave.test`). A DNS SAN rather than a URI SAN because it sits inside the DNS
//! name constraint (a URI SAN would be unconstrained, and webpki's handling of URI names under
//! constraints is not something to build on), and because the mTLS check then is plain webpki
//! name validation: "is this client certificate valid for `N.nodes.<workspace>`", with `N` taken
//! from the current membership. CSRs can never obtain names under `nodes.<workspace>`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::CaError;

/// The label under the workspace zone that holds node-identity names.
const NODES_LABEL: &str = "nodes";

/// An address range (CIDR) the issuing CA may certify addresses in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// A range; host bits of `addr` are cleared so the stored form is canonical.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CaError> {
        let bad = || CaError::InvalidIpRange { addr, prefix };
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) if prefix <= 128 => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
            _ => return Err(bad()),
        };
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this range (an IPv4 address is never inside an IPv6 range: that is
    /// how X.509 name constraints compare them too).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Normalise and validate a workspace name (it becomes the DNS name constraint).
pub fn validate_workspace(name: &str) -> Result<String, CaError> {
    let bad = |why| CaError::InvalidWorkspace {
        name: name.to_owned(),
        why,
    };
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.starts_with("*.") {
        return Err(bad("it must not be a wildcard"));
    }
    check_dns_name(&lower).map_err(bad)?;
    if !lower.contains('.') {
        // A single label would constrain the CA to a whole top-level domain.
        return Err(bad("it needs at least two labels, like chat.example.lan"));
    }
    Ok(lower)
}

/// Check a DNS name (optionally a leading `*.` wildcard) and return it lower-cased.
pub fn normalize_dns_name(name: &str) -> Result<String, CaError> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    check_dns_name(body).map_err(|_| CaError::InvalidDnsName {
        name: name.to_owned(),
    })?;
    Ok(lower)
}

fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("it must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may hold only letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        // webpki refuses all-numeric last labels (they look like IPv4 addresses).
        return Err("the last label must not be all digits");
    }
    Ok(())
}

/// Whether a normalised `name` is `zone` itself or below it (a wildcard counts as below).
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.'))
}

/// The DNS SAN that identifies node `node_id` in `workspace`.
pub fn node_identity_name(node_id: u64, workspace: &str) -> String {
    format!("{node_id}.{NODES_LABEL}.{workspace}")
}

/// The subtree holding node identities; CSRs may not ask for names in it.
pub fn node_identity_zone(workspace: &str) -> String {
    format!("{NODES_LABEL}.{workspace}")
}

/// Refuse any DNS name outside the zone or any address outside the ranges.
pub fn check_names(
    dns: &[String],
    ips: &[IpAddr],
    zone: &str,
    ranges: &[IpRange],
) -> Result<(), CaError> {
    for name in dns {
        if !in_zone(name, zone) {
            return Err(CaError::NameOutsideZone {
                name: name.clone(),
                zone: zone.to_owned(),
            });
        }
    }
    for &addr in ips {
        if !ranges.iter().any(|r| r.contains(addr)) {
            return Err(CaError::IpOutsideRanges { addr });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn zone_membership() {
        assert!(in_zone("chat.corp.lan", "chat.corp.lan"));
        assert!(in_zone("a.chat.corp.lan", "chat.corp.lan"));
        assert!(in_zone("*.chat.corp.lan", "chat.corp.lan"));
        assert!(!in_zone("evilchat.corp.lan", "chat.corp.lan"));
        assert!(!in_zone("corp.lan", "chat.corp.lan"));
        assert!(!in_zone("chat.corp.lan.evil.com", "chat.corp.lan"));
    }

    #[test]
    fn ranges() {
        let r = IpRange::new("10.1.2.3".parse().unwrap(), 16).unwrap();
        assert_eq!(r.addr(), "10.1.0.0".parse::<IpAddr>().unwrap());
        assert!(r.contains("10.1.255.1".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let all = IpRange::new("0.0.0.0".parse().unwrap(), 0).unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = IpRange::new("fd00::".parse().unwrap(), 8).unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(IpRange::new("10.0.0.0".parse().unwrap(), 33).is_err());
    }

    #[test]
    fn workspace_names() {
        assert_eq!(
            validate_workspace("Chat.Corp.LAN.").unwrap(),
            "chat.corp.lan"
        );
        assert!(validate_workspace("lan").is_err());
        assert!(validate_workspace("*.corp.lan").is_err());
        assert!(validate_workspace("bad_name.lan").is_err());
        assert!(validate_workspace("1.2.3.4").is_err());
        assert!(normalize_dns_name("*.wiki.corp.lan").is_ok());
        assert!(normalize_dns_name("wiki..corp.lan").is_err());
    }

    #[test]
    fn identity_name_is_in_zone() {
        let n = node_identity_name(3, "chat.corp.lan");
        assert_eq!(n, "3.nodes.chat.corp.lan");
        assert!(in_zone(&n, &node_identity_zone("chat.corp.lan")));
    }
}
