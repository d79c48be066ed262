//! Static DNS records an admin adds to the workspace zone (wiki, LDAP, printers), replicated
//! through Raft so every node's DNS server answers them the same way.
//!
//! Owns the record's replicated shape and the rules every node checks before a record is
//! proposed and again when it is applied: names are relative to the zone, never the zone apex
//! and never under a name the cluster answers itself (`nodeN`, `_conclave._tcp`, `_https._tcp`),
//! so an admin cannot shadow the names clients use to find the cluster. Must never know the
//! workspace name (that is per-node DNS configuration) and never do I/O.
//!
//! `DnsRecord`, `DnsRecordData` and `DnsRecordType` travel in Raft log entries
//! (`Command::PutDnsRecord`, `RemoveDnsRecords`) and are stored bincode-encoded, which
//! identifies variants by position: append variants only, never reorder or change fields.

pub mod apply;

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Longest TTL an admin may set: one day. Longer would make a mistake stick in resolvers.
pub const MAX_TTL: u32 = 86_400;
/// Default TTL for static records.
pub const DEFAULT_TTL: u32 = 300;
/// Bound on static records in the zone; each node holds them all in memory to answer.
pub const MAX_RECORDS: usize = 10_000;
/// One TXT string is at most 255 bytes on the wire.
const MAX_TXT_STRING: usize = 255;
/// Bound on a whole TXT record so answers stay well under a TCP message.
const MAX_TXT_TOTAL: usize = 2048;

/// A record type admins may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsRecordType {
    A,
    Aaaa,
    Cname,
    Srv,
    Txt,
}

impl DnsRecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Cname => "CNAME",
            DnsRecordType::Srv => "SRV",
            DnsRecordType::Txt => "TXT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "A" => DnsRecordType::A,
            "AAAA" => DnsRecordType::Aaaa,
            "CNAME" => DnsRecordType::Cname,
            "SRV" => DnsRecordType::Srv,
            "TXT" => DnsRecordType::Txt,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DnsRecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's data. Target names (`Cname`, `Srv`) are either relative to the zone (`wiki`) or
/// fully qualified with a trailing dot (`ldap.corp.lan.`), as in a zone file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsRecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(Vec<String>),
}

impl DnsRecordData {
    pub fn rtype(&self) -> DnsRecordType {
        match self {
            DnsRecordData::A(_) => DnsRecordType::A,
            DnsRecordData::Aaaa(_) => DnsRecordType::Aaaa,
            DnsRecordData::Cname(_) => DnsRecordType::Cname,
            DnsRecordData::Srv { .. } => DnsRecordType::Srv,
            DnsRecordData::Txt(_) => DnsRecordType::Txt,
        }
    }

    /// Zone-file presentation of the data (`10 5 389 ldap`, `"v=1" "x"`).
    pub fn presentation(&self) -> String {
        match self {
            DnsRecordData::A(a) => a.to_string(),
            DnsRecordData::Aaaa(a) => a.to_string(),
            DnsRecordData::Cname(t) => t.clone(),
            DnsRecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("{priority} {weight} {port} {target}"),
            DnsRecordData::Txt(parts) => parts
                .iter()
                .map(|p| format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// Parses the presentation form for `rtype` (what `conclavectl dns add` takes).
    pub fn parse(rtype: DnsRecordType, value: &str) -> Result<Self, DnsRecordError> {
        let value = value.trim();
        let bad = |m: &str| DnsRecordError::BadData(format!("{rtype} {value:?}: {m}"));
        Ok(match rtype {
            DnsRecordType::A => DnsRecordData::A(
                value
                    .parse()
                    .map_err(|_| bad("not an IPv4 address like 10.0.0.5"))?,
            ),
            DnsRecordType::Aaaa => DnsRecordData::Aaaa(
                value
                    .parse()
                    .map_err(|_| bad("not an IPv6 address like fd00::5"))?,
            ),
            DnsRecordType::Cname => DnsRecordData::Cname(value.to_ascii_lowercase()),
            DnsRecordType::Srv => {
                let parts: Vec<&str> = value.split_whitespace().collect();
                let [p, w, port, target] = parts.as_slice() else {
                    return Err(bad("expected \"PRIORITY WEIGHT PORT TARGET\""));
                };
                let num = |s: &str| s.parse::<u16>().map_err(|_| bad("numbers must be 0-65535"));
                DnsRecordData::Srv {
                    priority: num(p)?,
                    weight: num(w)?,
                    port: num(port)?,
                    target: target.to_ascii_lowercase(),
                }
            }
            DnsRecordType::Txt => DnsRecordData::Txt(parse_txt(value).map_err(|m| bad(&m))?),
        })
    }
}

/// Splits `"a b" "c"` into strings; a value without quotes is one string.
fn parse_txt(value: &str) -> Result<Vec<String>, String> {
    if !value.starts_with('"') {
        return Ok(vec![value.to_string()]);
    }
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(_) => return Err("text outside quotes".into()),
        }
        let mut s = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated quote".into()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c) => s.push(c),
                    None => return Err("dangling backslash".into()),
                },
                Some(c) => s.push(c),
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// One static record. `name` is relative to the workspace zone, lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub ttl: u32,
    pub data: DnsRecordData,
}

impl DnsRecord {
    pub fn rtype(&self) -> DnsRecordType {
        self.data.rtype()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsRecordError {
    #[error("invalid record name {0:?}: {1}")]
    BadName(String, String),
    #[error("the name {0:?} belongs to the cluster itself; pick another name")]
    Shadows(String),
    #[error("invalid record data: {0}")]
    BadData(String),
    #[error("ttl {0} is out of range (1-{MAX_TTL})")]
    BadTtl(u32),
}

/// Labels the cluster answers itself; no static record may be at or under them.
fn is_reserved(labels: &[&str]) -> bool {
    let Some(last) = labels.last() else {
        return true;
    };
    let node_label = last
        .strip_prefix("node")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if node_label {
        return true;
    }
    if labels.len() >= 2 {
        let tail = &labels[labels.len() - 2..];
        if tail[1] == "_tcp" && (tail[0] == "_conclave" || tail[0] == "_https") {
            return true;
        }
    }
    false
}

/// Normalises and checks a record name relative to the zone: lower case, labels of letters,
/// digits, `-` and `_` (for `_service._proto`), at most 63 bytes each, not the apex, not
/// reserved. `@` and the empty name (the apex) are refused: the apex lists the cluster's nodes.
pub fn normalize_name(name: &str) -> Result<String, DnsRecordError> {
    let bad = |m: &str| DnsRecordError::BadName(name.to_string(), m.to_string());
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() || n == "@" {
        return Err(DnsRecordError::Shadows(name.to_string()));
    }
    if n.len() > 200 {
        return Err(bad("longer than 200 characters"));
    }
    let labels: Vec<&str> = n.split('.').collect();
    for l in &labels {
        if l.is_empty() {
            return Err(bad("empty label (two dots in a row)"));
        }
        if l.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "only letters, digits, '-' and '_' are allowed (give it relative to the workspace, e.g. \"wiki\")",
            ));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(bad("a label cannot start or end with '-'"));
        }
    }
    if is_reserved(&labels) {
        return Err(DnsRecordError::Shadows(name.to_string()));
    }
    Ok(n)
}

fn check_target(t: &str) -> Result<(), DnsRecordError> {
    let bad = |m: &str| DnsRecordError::BadData(format!("target {t:?}: {m}"));
    let body = t.strip_suffix('.').unwrap_or(t);
    if body.is_empty() || body.len() > 253 {
        return Err(bad("empty or too long"));
    }
    for l in body.split('.') {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("empty or over-long label"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("only letters, digits, '-' and '_' are allowed"));
        }
    }
    Ok(())
}

/// Checks and normalises a whole record. Run by the node that receives the request and again
/// by `apply`, so a record in the state machine is always valid.
pub fn validate(record: &DnsRecord) -> Result<DnsRecord, DnsRecordError> {
    let name = normalize_name(&record.name)?;
    if record.ttl == 0 || record.ttl > MAX_TTL {
        return Err(DnsRecordError::BadTtl(record.ttl));
    }
    let data = match &record.data {
        DnsRecordData::Cname(t) => {
            check_target(t)?;
            let t = t.to_ascii_lowercase();
            if t.trim_end_matches('.') == name {
                return Err(DnsRecordError::BadData(
                    "a CNAME cannot point at itself".into(),
                ));
            }
            DnsRecordData::Cname(t)
        }
        DnsRecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            check_target(target)?;
            DnsRecordData::Srv {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: target.to_ascii_lowercase(),
            }
        }
        DnsRecordData::Txt(parts) => {
            if parts.is_empty() {
                return Err(DnsRecordError::BadData(
                    "TXT needs at least one string".into(),
                ));
            }
            if parts.iter().any(|p| p.len() > MAX_TXT_STRING) {
                return Err(DnsRecordError::BadData(format!(
                    "a TXT string is longer than {MAX_TXT_STRING} bytes"
                )));
            }
            if parts.iter().map(String::len).sum::<usize>() > MAX_TXT_TOTAL {
                return Err(DnsRecordError::BadData(format!(
                    "TXT data is longer than {MAX_TXT_TOTAL} bytes"
                )));
            }
            record.data.clone()
        }
        DnsRecordData::A(_) | DnsRecordData::Aaaa(_) => record.data.clone(),
    };
    Ok(DnsRecord {
        name,
        ttl: record.ttl,
        data,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(name: &str, data: DnsRecordData) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            ttl: DEFAULT_TTL,
            data,
        }
    }

    #[test]
    fn names_that_shadow_the_cluster_are_refused() {
        for n in [
            "",
            "@",
            "node1",
            "NODE12",
            "x.node3",
            "_conclave._tcp",
            "_https._tcp",
            "a._https._tcp",
        ] {
            assert!(
                matches!(normalize_name(n), Err(DnsRecordError::Shadows(_))),
                "{n:?} should shadow"
            );
        }
        for n in ["nodes", "node", "node1a", "wiki", "_ldap._tcp", "Wiki.Lab."] {
            assert!(normalize_name(n).is_ok(), "{n:?} should be fine");
        }
        assert_eq!(normalize_name("Wiki.Lab.").as_deref(), Ok("wiki.lab"));
    }

    #[test]
    fn bad_names_and_data_are_refused() {
        for n in ["a..b", "-x", "x-", "sp ace", "ünï", &"l".repeat(64)] {
            assert!(
                matches!(normalize_name(n), Err(DnsRecordError::BadName(..))),
                "{n:?}"
            );
        }
        let cname_self = rec("wiki", DnsRecordData::Cname("wiki".into()));
        assert!(validate(&cname_self).is_err());
        let zero_ttl = DnsRecord {
            ttl: 0,
            ..rec("wiki", DnsRecordData::A(Ipv4Addr::LOCALHOST))
        };
        assert_eq!(validate(&zero_ttl), Err(DnsRecordError::BadTtl(0)));
        assert!(validate(&rec("t", DnsRecordData::Txt(vec![]))).is_err());
        assert!(validate(&rec("t", DnsRecordData::Txt(vec!["x".repeat(256)]))).is_err());
    }

    #[test]
    fn presentation_round_trips() {
        for (t, v) in [
            (DnsRecordType::A, "10.0.0.5"),
            (DnsRecordType::Aaaa, "fd00::5"),
            (DnsRecordType::Cname, "wiki.corp.lan."),
            (DnsRecordType::Srv, "10 5 389 ldap"),
            (DnsRecordType::Txt, "\"v=spf1 -all\" \"say \\\"hi\\\"\""),
        ] {
            let d = DnsRecordData::parse(t, v).unwrap();
            assert_eq!(d.rtype(), t);
            assert_eq!(DnsRecordData::parse(t, &d.presentation()).unwrap(), d);
        }
        assert!(DnsRecordData::parse(DnsRecordType::A, "10.0.0").is_err());
        assert!(DnsRecordData::parse(DnsRecordType::Srv, "10 5 ldap").is_err());
        assert!(DnsRecordData::parse(DnsRecordType::Txt, "\"open").is_err());
        assert_eq!(DnsRecordType::parse("aaaa"), Some(DnsRecordType::Aaaa));
    }
}
