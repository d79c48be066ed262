//! Apply rules of the static DNS records (command version 3): adding, replacing and removing
//! records of the workspace zone.
//!
//! Owns the invariants every node must agree on: every stored record passes
//! `dns_records::validate`, a CNAME never shares its name with another record, and the zone
//! holds at most `MAX_RECORDS` records. Must never read the clock or know the workspace name:
//! records are relative to a zone only each node's DNS configuration names.

use crate::command::{Applied, ApplyError, Outcome};
use crate::state::StateError;
use crate::state::context::Ctx;
use crate::state::dns_records::{self, DnsRecord, DnsRecordData, DnsRecordError, DnsRecordType};
use crate::state::keys;

/// Validation failures at apply become refusals, with the same split as the REST layer makes
/// before proposing (a shadowing name is its own code, so clients can tell it apart).
fn refusal(e: DnsRecordError) -> ApplyError {
    match e {
        DnsRecordError::Shadows(_) => ApplyError::ReservedName(e.to_string()),
        _ => ApplyError::Invalid(e.to_string()),
    }
}

fn data_key(record: &DnsRecord) -> Result<Vec<u8>, StateError> {
    let data = bincode::serialize(&record.data).map_err(StateError::Encode)?;
    Ok(keys::dns_record(
        &record.name,
        record.rtype().as_str(),
        &data,
    ))
}

pub fn put_dns_record(cx: &mut Ctx<'_, '_>, record: &DnsRecord) -> Result<Outcome, StateError> {
    let record = match dns_records::validate(record) {
        Ok(r) => r,
        Err(e) => return Ok(Err(refusal(e))),
    };
    let key = data_key(&record)?;
    if cx.kv.exists(&key)? {
        // Same name, type and data: only the TTL can differ.
        cx.kv.put(key, &record)?;
        return Ok(Ok(Applied::DnsRecordPut { record }));
    }
    // A CNAME says "this name is that other name": resolvers ignore anything beside it, so the
    // zone must never hold both (RFC 1034 3.6.2). A second CNAME with another target counts.
    let at_name = cx
        .kv
        .keys_with_prefix(&keys::dns_name_prefix(&record.name))?;
    if !at_name.is_empty() {
        if record.rtype() == DnsRecordType::Cname {
            return Ok(Err(ApplyError::Conflict(format!(
                "'{}' already has other records; a CNAME must be the only record at its name",
                record.name
            ))));
        }
        let cname_prefix = keys::dns_type_prefix(&record.name, DnsRecordType::Cname.as_str());
        if at_name.iter().any(|k| k.starts_with(&cname_prefix)) {
            return Ok(Err(ApplyError::Conflict(format!(
                "'{}' is a CNAME; no other record may be added at that name",
                record.name
            ))));
        }
    }
    // Counted only when a record is added (a rare admin action); the bound keeps every node's
    // in-memory copy of the zone small.
    if cx.kv.keys_with_prefix(keys::DNS_PREFIX)?.len() >= dns_records::MAX_RECORDS {
        return Ok(Err(ApplyError::Conflict(format!(
            "the zone already holds the maximum of {} static records",
            dns_records::MAX_RECORDS
        ))));
    }
    cx.kv.put(key, &record)?;
    Ok(Ok(Applied::DnsRecordPut { record }))
}

pub fn remove_dns_records(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    rtype: DnsRecordType,
    data: Option<&DnsRecordData>,
) -> Result<Outcome, StateError> {
    let name = match dns_records::normalize_name(name) {
        Ok(n) => n,
        Err(e) => return Ok(Err(refusal(e))),
    };
    let not_found = |what: String| Ok(Err(ApplyError::NotFound(what)));
    let keys_to_remove: Vec<Vec<u8>> = match data {
        Some(data) => {
            if data.rtype() != rtype {
                return Ok(Err(ApplyError::Invalid(format!(
                    "the value is {} data, not {rtype}",
                    data.rtype()
                ))));
            }
            // Normalised the way stored records are; data that cannot validate cannot be
            // stored either, so it matches nothing.
            let probe = DnsRecord {
                name: name.clone(),
                ttl: dns_records::DEFAULT_TTL,
                data: data.clone(),
            };
            let Ok(probe) = dns_records::validate(&probe) else {
                return not_found(format!(
                    "no {rtype} record {} at '{name}'",
                    data.presentation()
                ));
            };
            let key = data_key(&probe)?;
            if !cx.kv.exists(&key)? {
                return not_found(format!(
                    "no {rtype} record {} at '{name}'",
                    probe.data.presentation()
                ));
            }
            vec![key]
        }
        None => cx
            .kv
            .keys_with_prefix(&keys::dns_type_prefix(&name, rtype.as_str()))?
            .into_iter()
            .collect(),
    };
    if keys_to_remove.is_empty() {
        return not_found(format!("no {rtype} records at '{name}'"));
    }
    let removed = u32::try_from(keys_to_remove.len()).unwrap_or(u32::MAX);
    for k in keys_to_remove {
        cx.kv.remove(k);
    }
    Ok(Ok(Applied::DnsRecordsRemoved { name, removed }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::command::Command;
    use crate::state::test_apply::{run, tree};
    use crate::storage::sm_store::StateReader;

    fn reader(t: &sled::Tree) -> StateReader {
        StateReader::for_tree(t.clone())
    }

    fn rec(name: &str, ttl: u32, data: DnsRecordData) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            ttl,
            data,
        }
    }

    fn a(last: u8) -> DnsRecordData {
        DnsRecordData::A(Ipv4Addr::new(10, 0, 0, last))
    }

    fn put(r: DnsRecord) -> Command {
        Command::PutDnsRecord { record: r }
    }

    fn rm(name: &str, rtype: DnsRecordType, data: Option<DnsRecordData>) -> Command {
        Command::RemoveDnsRecords {
            name: name.into(),
            rtype,
            data,
        }
    }

    fn removed(o: &Outcome) -> u32 {
        match o {
            Ok(Applied::DnsRecordsRemoved { removed, .. }) => *removed,
            other => panic!("expected a removal, got {other:?}"),
        }
    }

    #[test]
    fn put_normalises_updates_ttl_and_lists_sorted() {
        let t = tree();
        let out = run(
            &t,
            1,
            vec![
                put(rec("Wiki.", 300, a(5))),
                put(rec("wiki", 60, a(5))),
                put(rec("wiki", 300, a(6))),
                put(rec(
                    "wiki.lab",
                    300,
                    DnsRecordData::Cname("Other.Corp.Lan.".into()),
                )),
                put(rec(
                    "_ldap._tcp",
                    300,
                    DnsRecordData::parse(DnsRecordType::Srv, "10 5 389 LDAP").unwrap(),
                )),
                put(rec("wiki", 300, DnsRecordData::Txt(vec!["hello".into()]))),
            ],
        );
        match &out[0] {
            Ok(Applied::DnsRecordPut { record }) => assert_eq!(record.name, "wiki"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        let list = reader(&t).dns_records().unwrap();
        let shown: Vec<(String, DnsRecordType, u32, String)> = list
            .iter()
            .map(|r| (r.name.clone(), r.rtype(), r.ttl, r.data.presentation()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "_ldap._tcp".into(),
                    DnsRecordType::Srv,
                    300,
                    "10 5 389 ldap".into()
                ),
                ("wiki".into(), DnsRecordType::A, 60, "10.0.0.5".into()),
                ("wiki".into(), DnsRecordType::A, 300, "10.0.0.6".into()),
                ("wiki".into(), DnsRecordType::Txt, 300, "\"hello\"".into()),
                (
                    "wiki.lab".into(),
                    DnsRecordType::Cname,
                    300,
                    "other.corp.lan.".into()
                ),
            ]
        );
    }

    #[test]
    fn remove_one_all_of_type_and_not_found() {
        let t = tree();
        run(
            &t,
            1,
            vec![
                put(rec("wiki", 300, a(5))),
                put(rec("wiki", 300, a(6))),
                put(rec("wiki", 300, a(7))),
                put(rec("wiki", 300, DnsRecordData::Txt(vec!["x".into()]))),
                put(rec("printer", 300, a(9))),
            ],
        );
        let out = run(
            &t,
            1,
            vec![
                rm("WIKI", DnsRecordType::A, Some(a(5))),
                rm("wiki", DnsRecordType::A, Some(a(5))),
                rm("wiki", DnsRecordType::Aaaa, None),
                rm("nothing", DnsRecordType::A, None),
                rm("wiki", DnsRecordType::A, None),
                rm("wiki", DnsRecordType::Txt, Some(a(1))),
            ],
        );
        assert_eq!(removed(&out[0]), 1);
        assert!(
            matches!(out[1], Err(ApplyError::NotFound(_))),
            "{:?}",
            out[1]
        );
        assert!(matches!(out[2], Err(ApplyError::NotFound(_))));
        assert!(matches!(out[3], Err(ApplyError::NotFound(_))));
        assert_eq!(removed(&out[4]), 2);
        assert!(matches!(out[5], Err(ApplyError::Invalid(_))));
        let left: Vec<String> = reader(&t)
            .dns_records()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.name, r.rtype()))
            .collect();
        assert_eq!(left, vec!["printer A", "wiki TXT"]);
    }

    #[test]
    fn cname_is_exclusive_in_both_orders() {
        let t = tree();
        let cname = |target: &str| DnsRecordData::Cname(target.into());
        let out = run(
            &t,
            1,
            vec![
                put(rec("wiki", 300, a(5))),
                put(rec("wiki", 300, cname("web"))),
                put(rec("docs", 300, cname("web"))),
                put(rec("docs", 300, a(5))),
                put(rec("docs", 300, cname("other"))),
                // The same CNAME again is a TTL update, not a conflict.
                put(rec("docs", 60, cname("web"))),
            ],
        );
        assert!(
            out[0].is_ok() && out[2].is_ok() && out[5].is_ok(),
            "{out:?}"
        );
        for i in [1, 3, 4] {
            assert!(
                matches!(out[i], Err(ApplyError::Conflict(_))),
                "{i}: {:?}",
                out[i]
            );
        }
        assert_eq!(reader(&t).dns_records().unwrap().len(), 2);
    }

    #[test]
    fn invalid_and_shadowing_records_are_refused_at_apply() {
        let t = tree();
        let out = run(
            &t,
            1,
            vec![
                put(rec("node1", 300, a(1))),
                put(rec("_conclave._tcp", 300, a(1))),
                put(rec("@", 300, a(1))),
                put(rec("wiki", 0, a(1))),
                put(rec("bad name", 300, a(1))),
                rm("node2", DnsRecordType::A, None),
            ],
        );
        for i in [0, 1, 2, 5] {
            assert!(
                matches!(out[i], Err(ApplyError::ReservedName(_))),
                "{i}: {:?}",
                out[i]
            );
        }
        for i in [3, 4] {
            assert!(
                matches!(out[i], Err(ApplyError::Invalid(_))),
                "{i}: {:?}",
                out[i]
            );
        }
        assert!(reader(&t).dns_records().unwrap().is_empty());
        assert!(t.scan_prefix(keys::DNS_PREFIX).next().is_none());
    }
}
