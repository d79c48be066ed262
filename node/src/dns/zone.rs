//! The workspace zone's answers, computed from a health [`View`]: pure, no I/O, unit-tested.
//!
//! Owns which names exist in the zone and what each query gets back (records, rcode, the SOA in
//! negative answers). Must never answer for a name outside the zone (REFUSED: never an open
//! resolver), never hand out a transfer, and never answer from a view the node itself does not
//! trust (SERVFAIL, so resolvers ask another name server).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use cluster::state::dns_records::{DnsRecord, DnsRecordData};

use hickory_server::proto::ProtoError;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, HINFO, NS, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};

/// What this node believes about the cluster right now (built by `dns::health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// This node sees a leader, belongs to a quorum and is caught up; otherwise SERVFAIL.
    pub ready: bool,
    /// Every member of the current membership.
    pub members: Vec<Member>,
    /// Changes whenever the answers would; the SOA serial.
    pub serial: u32,
    /// The admins' static records, compiled for this zone.
    pub statics: Arc<Statics>,
}

/// Static records (`conclavectl dns add`) by owner name, compiled once per change so the query
/// path only looks them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statics {
    by_name: BTreeMap<Name, Vec<Record>>,
    /// Names that exist only because a record lives below them (`_tcp` of `_ldap._tcp`): they
    /// answer NODATA, not NXDOMAIN, or resolvers would cache the whole subtree as missing.
    empty_non_terminals: BTreeSet<Name>,
}

impl Statics {
    /// Compiles `records` (already validated by the state machine) under `apex`. A record that
    /// still does not make a DNS name is skipped with a warning rather than failing the zone.
    pub fn compile(apex: &Name, records: &[DnsRecord]) -> Self {
        let mut out = Statics::default();
        for r in records {
            let owner = match Name::from_ascii(&r.name).and_then(|n| n.append_domain(apex)) {
                Ok(n) => n.to_lowercase(),
                Err(error) => {
                    tracing::warn!(name = %r.name, %error, "static dns record skipped");
                    continue;
                }
            };
            let rdata = match to_rdata(apex, &r.data) {
                Ok(rd) => rd,
                Err(error) => {
                    tracing::warn!(name = %r.name, %error, "static dns record skipped");
                    continue;
                }
            };
            let mut parent = owner.base_name();
            while parent.num_labels() > apex.num_labels() {
                out.empty_non_terminals.insert(parent.clone());
                parent = parent.base_name();
            }
            out.by_name
                .entry(owner.clone())
                .or_default()
                .push(Record::from_rdata(owner, r.ttl, rdata));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }
}

/// A target given relative to the zone (`wiki`) lives in it; one with a trailing dot is used
/// as written.
fn target_name(apex: &Name, target: &str) -> Result<Name, ProtoError> {
    if let Some(abs) = target.strip_suffix('.') {
        let mut n = Name::from_ascii(abs)?;
        n.set_fqdn(true);
        Ok(n)
    } else {
        Name::from_ascii(target)?.append_domain(apex)
    }
}

fn to_rdata(apex: &Name, data: &DnsRecordData) -> Result<RData, ProtoError> {
    Ok(match data {
        DnsRecordData::A(a) => RData::A(A(*a)),
        DnsRecordData::Aaaa(a) => RData::AAAA(AAAA(*a)),
        DnsRecordData::Cname(t) => RData::CNAME(CNAME(target_name(apex, t)?)),
        DnsRecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(
            *priority,
            *weight,
            *port,
            target_name(apex, target)?,
        )),
        DnsRecordData::Txt(parts) => RData::TXT(TXT::new(parts.clone())),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// IP and port of its client API; `None` when `api_addr` is a host name, not an IP.
    pub api: Option<(IpAddr, u16)>,
    pub voter: bool,
    /// Answered the last probe and reported itself ready.
    pub healthy: bool,
    /// Port of its HTTPS client address (`[tls]`), from its status; `None` for plain-HTTP
    /// nodes.
    pub https_port: Option<u16>,
}

/// A computed answer, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
}

impl Reply {
    pub fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
        }
    }
}

/// Parses a workspace name into the zone apex (fully qualified, lower case).
pub fn parse_zone(workspace: &str) -> Result<Name, ProtoError> {
    let mut name = Name::from_ascii(workspace.trim_end_matches('.'))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// The zone's fixed parts: its apex and TTL.
#[derive(Debug, Clone)]
pub struct Zone {
    apex: Name,
    lower_apex: LowerName,
    srv: Name,
    /// `_https._tcp.<apex>`: the HTTPS port of every serving node that has TLS on.
    https_srv: Name,
    srv_parent: Name,
    ttl: u32,
    self_id: u64,
}

impl Zone {
    pub fn new(apex: Name, ttl: u32, self_id: u64) -> Result<Self, ProtoError> {
        let srv_parent = apex.prepend_label("_tcp")?;
        let srv = srv_parent.prepend_label("_conclave")?;
        let https_srv = srv_parent.prepend_label("_https")?;
        Ok(Self {
            lower_apex: LowerName::new(&apex),
            apex,
            srv,
            https_srv,
            srv_parent,
            ttl,
            self_id,
        })
    }

    fn node_name(&self, id: u64) -> Name {
        // A label "node<u64>" is at most 24 bytes, well under the 63-byte limit; fall back to
        // the apex rather than panic if that ever changed.
        self.apex
            .prepend_label(format!("node{id}"))
            .unwrap_or_else(|_| self.apex.clone())
    }

    fn record(&self, name: Name, rdata: RData) -> Record {
        Record::from_rdata(name, self.ttl, rdata)
    }

    pub fn soa(&self, view: &View) -> Record {
        let mname = view
            .members
            .iter()
            .find(|m| m.voter)
            .map_or_else(|| self.node_name(self.self_id), |m| self.node_name(m.id));
        let rname = self
            .apex
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| self.apex.clone());
        // Refresh/retry/expire only matter to secondaries, which we never feed (no transfers).
        let ttl_i32 = i32::try_from(self.ttl).unwrap_or(i32::MAX);
        self.record(
            self.apex.clone(),
            RData::SOA(SOA::new(
                mname,
                rname,
                view.serial,
                ttl_i32.saturating_mul(12),
                ttl_i32.saturating_mul(2),
                ttl_i32.saturating_mul(120),
                self.ttl,
            )),
        )
    }

    fn address_records(&self, owner: &Name, members: &[&Member], qtype: RecordType) -> Vec<Record> {
        members
            .iter()
            .filter_map(|m| m.api)
            .filter_map(|(ip, _)| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            })
            .map(|rd| self.record(owner.clone(), rd))
            .collect()
    }

    /// One SRV record per member that has a `port` for this service (SRV and ANY only).
    fn srv_records(
        &self,
        owner: &Name,
        members: &[&Member],
        qtype: RecordType,
        port: impl Fn(&Member) -> Option<u16>,
    ) -> Vec<Record> {
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Vec::new();
        }
        members
            .iter()
            .filter_map(|m| port(m).map(|p| (m.id, p)))
            .map(|(id, p)| {
                self.record(
                    owner.clone(),
                    RData::SRV(SRV::new(10, 10, p, self.node_name(id))),
                )
            })
            .collect()
    }

    /// The answer to one question.
    pub fn answer(&self, view: &View, qname: &LowerName, qtype: RecordType) -> Reply {
        if !self.lower_apex.zone_of(qname) {
            return Reply::error(ResponseCode::Refused);
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Reply::error(ResponseCode::Refused);
        }
        if !view.ready {
            // Stale data is worse than none: a resolver treats SERVFAIL as "ask another server".
            return Reply::error(ResponseCode::ServFail);
        }
        let name = Name::from(qname.clone());
        let healthy: Vec<&Member> = view.members.iter().filter(|m| m.healthy).collect();
        let answers = if name == self.apex {
            match qtype {
                RecordType::A | RecordType::AAAA => self.address_records(&name, &healthy, qtype),
                RecordType::SOA => vec![self.soa(view)],
                RecordType::NS => view
                    .members
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| self.record(name.clone(), RData::NS(NS(self.node_name(m.id)))))
                    .collect(),
                // RFC 8482: a minimal answer, so ANY cannot be used for amplification.
                RecordType::ANY => {
                    let a = self.address_records(&name, &healthy, RecordType::A);
                    if a.is_empty() {
                        vec![self.record(
                            name.clone(),
                            RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
                        )]
                    } else {
                        a
                    }
                }
                _ => Vec::new(),
            }
        } else if name == self.srv {
            self.srv_records(&name, &healthy, qtype, |m| m.api.map(|(_, port)| port))
        } else if name == self.https_srv {
            // NODATA (not NXDOMAIN) when no serving node has TLS: the name is part of the zone's
            // fixed layout, so a client can tell "no HTTPS right now" from "no such service".
            self.srv_records(&name, &healthy, qtype, |m| m.https_port)
        } else if name == self.srv_parent {
            // An empty non-terminal: the name exists (it has a child), so NODATA, not NXDOMAIN.
            Vec::new()
        } else if let Some(member) = view.members.iter().find(|m| self.node_name(m.id) == name) {
            match qtype {
                RecordType::ANY => self.address_records(&name, &[member], RecordType::A),
                _ => self.address_records(&name, &[member], qtype),
            }
        } else if let Some(records) = view.statics.by_name.get(&name) {
            static_answer(records, qtype)
        } else if view.statics.empty_non_terminals.contains(&name) {
            Vec::new()
        } else {
            return Reply {
                rcode: ResponseCode::NXDomain,
                authoritative: true,
                answers: Vec::new(),
                authority: vec![self.soa(view)],
            };
        };
        let authority = if answers.is_empty() {
            vec![self.soa(view)]
        } else {
            Vec::new()
        };
        Reply {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority,
        }
    }
}

/// The static records at one name that answer `qtype`. A CNAME answers every type (its owner
/// has nothing else: the state machine refuses that); the resolver follows it. ANY gets the
/// records of one type only (RFC 8482), so it cannot be used for amplification.
fn static_answer(records: &[Record], qtype: RecordType) -> Vec<Record> {
    if let Some(cname) = records
        .iter()
        .find(|r| r.record_type() == RecordType::CNAME)
    {
        return vec![cname.clone()];
    }
    let want = match qtype {
        RecordType::ANY => match records.first() {
            Some(r) => r.record_type(),
            None => return Vec::new(),
        },
        t => t,
    };
    records
        .iter()
        .filter(|r| r.record_type() == want)
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn view3() -> View {
        View {
            ready: true,
            serial: 7,
            members: (1..=3)
                .map(|id| Member {
                    id,
                    api: Some((IpAddr::from([10, 0, 0, id as u8]), 8080)),
                    voter: true,
                    healthy: id != 2,
                    https_port: None,
                })
                .collect(),
            statics: Arc::new(Statics::default()),
        }
    }

    pub(crate) fn zone() -> Zone {
        Zone::new(parse_zone("Chat.Corp.LAN").unwrap(), 5, 1).unwrap()
    }

    fn ask(view: &View, name: &str, qtype: RecordType) -> Reply {
        let name = LowerName::new(&Name::from_ascii(name).unwrap());
        zone().answer(view, &name, qtype)
    }

    fn addrs(r: &Reply) -> Vec<String> {
        r.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn apex_lists_only_healthy_nodes() {
        let r = ask(&view3(), "chat.corp.lan.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(addrs(&r), ["10.0.0.1", "10.0.0.3"]);
        assert!(r.answers.iter().all(|a| a.ttl == 5));
    }

    #[test]
    fn node_names_answer_for_every_member() {
        let r = ask(&view3(), "NODE2.chat.corp.lan.", RecordType::A);
        assert_eq!(addrs(&r), ["10.0.0.2"]);
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa() {
        let r = ask(&view3(), "nope.chat.corp.lan.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.authority.len(), 1);
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        let RData::SOA(soa) = &r.authority[0].data else {
            panic!("not an SOA")
        };
        assert_eq!(soa.minimum, 5);
        assert_eq!(soa.serial, 7);
        let r = ask(&view3(), "chat.corp.lan.", RecordType::MX);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        let r = ask(&view3(), "_tcp.chat.corp.lan.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
    }

    #[test]
    fn out_of_zone_and_transfers_are_refused() {
        assert_eq!(
            ask(&view3(), "example.com.", RecordType::A).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            ask(&view3(), "corp.lan.", RecordType::A).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            ask(&view3(), "chat.corp.lan.", RecordType::AXFR).rcode,
            ResponseCode::Refused
        );
        assert_eq!(
            ask(&view3(), "chat.corp.lan.", RecordType::IXFR).rcode,
            ResponseCode::Refused
        );
    }

    #[test]
    fn a_node_that_is_not_ready_answers_servfail() {
        let mut v = view3();
        v.ready = false;
        assert_eq!(
            ask(&v, "chat.corp.lan.", RecordType::A).rcode,
            ResponseCode::ServFail
        );
        // Still never an open resolver, even when cut off.
        assert_eq!(
            ask(&v, "example.com.", RecordType::A).rcode,
            ResponseCode::Refused
        );
    }

    #[test]
    fn https_srv_lists_serving_tls_nodes_only() {
        let r = ask(&view3(), "_https._tcp.chat.corp.lan.", RecordType::SRV);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty(), "no TLS node: NODATA");
        assert_eq!(r.authority.len(), 1, "NODATA carries the SOA");
        let mut v = view3();
        v.members.iter_mut().for_each(|m| m.https_port = Some(8443));
        let r = ask(&v, "_https._tcp.chat.corp.lan.", RecordType::SRV);
        assert_eq!(
            addrs(&r),
            [
                "10 10 8443 node1.chat.corp.lan.",
                "10 10 8443 node3.chat.corp.lan."
            ]
        );
    }

    #[test]
    fn srv_ns_soa_and_any() {
        let r = ask(&view3(), "_conclave._tcp.chat.corp.lan.", RecordType::SRV);
        assert_eq!(
            addrs(&r),
            [
                "10 10 8080 node1.chat.corp.lan.",
                "10 10 8080 node3.chat.corp.lan."
            ]
        );
        let r = ask(&view3(), "chat.corp.lan.", RecordType::NS);
        assert_eq!(r.answers.len(), 3);
        let r = ask(&view3(), "chat.corp.lan.", RecordType::SOA);
        assert_eq!(r.answers.len(), 1);
        let r = ask(&view3(), "chat.corp.lan.", RecordType::ANY);
        assert_eq!(addrs(&r), ["10.0.0.1", "10.0.0.3"]);
        let mut v = view3();
        v.members.iter_mut().for_each(|m| m.healthy = false);
        let r = ask(&v, "chat.corp.lan.", RecordType::ANY);
        assert_eq!(r.answers[0].record_type(), RecordType::HINFO);
    }

    #[test]
    fn aaaa_for_ipv6_members() {
        let mut v = view3();
        v.members[0].api = Some(("fd00::1".parse().unwrap(), 8080));
        let r = ask(&v, "chat.corp.lan.", RecordType::AAAA);
        assert_eq!(addrs(&r), ["fd00::1"]);
        let r = ask(&v, "chat.corp.lan.", RecordType::A);
        assert_eq!(addrs(&r), ["10.0.0.3"]);
    }

    fn with_statics(records: &[(&str, &str, &str)]) -> View {
        use cluster::state::dns_records::{DnsRecordType, validate};
        let records: Vec<DnsRecord> = records
            .iter()
            .map(|(name, t, v)| {
                let t = DnsRecordType::parse(t).unwrap();
                validate(&DnsRecord {
                    name: (*name).into(),
                    ttl: 60,
                    data: DnsRecordData::parse(t, v).unwrap(),
                })
                .unwrap()
            })
            .collect();
        let mut v = view3();
        v.statics = Arc::new(Statics::compile(
            &parse_zone("chat.corp.lan").unwrap(),
            &records,
        ));
        v
    }

    #[test]
    fn static_records_answer_by_type() {
        let v = with_statics(&[
            ("wiki", "A", "10.1.0.5"),
            ("wiki", "A", "10.1.0.6"),
            ("wiki", "AAAA", "fd00::5"),
            ("wiki", "TXT", "\"owner=it\""),
            ("docs", "CNAME", "wiki"),
            ("ext", "CNAME", "intranet.corp.lan."),
            ("_ldap._tcp.lab", "SRV", "10 5 389 ldap.corp.lan."),
        ]);
        assert_eq!(v.statics.len(), 7);
        let r = ask(&v, "WIKI.chat.corp.lan.", RecordType::A);
        assert_eq!(addrs(&r), ["10.1.0.5", "10.1.0.6"]);
        assert!(r.answers.iter().all(|a| a.ttl == 60));
        assert_eq!(
            addrs(&ask(&v, "wiki.chat.corp.lan.", RecordType::AAAA)),
            ["fd00::5"]
        );
        assert_eq!(
            addrs(&ask(&v, "wiki.chat.corp.lan.", RecordType::TXT)),
            ["owner=it"]
        );
        assert_eq!(
            ask(&v, "wiki.chat.corp.lan.", RecordType::ANY)
                .answers
                .len(),
            2,
            "ANY: one type only"
        );
        assert_eq!(
            addrs(&ask(&v, "docs.chat.corp.lan.", RecordType::A)),
            ["wiki.chat.corp.lan."]
        );
        assert_eq!(
            addrs(&ask(&v, "ext.chat.corp.lan.", RecordType::AAAA)),
            ["intranet.corp.lan."]
        );
        assert_eq!(
            addrs(&ask(&v, "_ldap._tcp.lab.chat.corp.lan.", RecordType::SRV)),
            ["10 5 389 ldap.corp.lan."]
        );
        // NODATA (with the SOA) for a missing type and for empty non-terminals; NXDOMAIN below.
        for (name, t) in [
            ("wiki.chat.corp.lan.", RecordType::MX),
            ("_tcp.lab.chat.corp.lan.", RecordType::A),
            ("lab.chat.corp.lan.", RecordType::A),
        ] {
            let r = ask(&v, name, t);
            assert_eq!(r.rcode, ResponseCode::NoError, "{name}");
            assert!(r.answers.is_empty(), "{name}");
            assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        }
        assert_eq!(
            ask(&v, "x.wiki.chat.corp.lan.", RecordType::A).rcode,
            ResponseCode::NXDomain
        );
        // Cut off: static records are not served either.
        let mut cut = v.clone();
        cut.ready = false;
        assert_eq!(
            ask(&cut, "wiki.chat.corp.lan.", RecordType::A).rcode,
            ResponseCode::ServFail
        );
    }
}
