//! Tests of `CaService` against a real single-node cluster in-process (Raft, sled, the CAS
//! apply rule): the update loop, concurrent signing, export/renew, and the KEK-less node.
//!
//! Must never reach into the service's internals: everything goes through the methods `run`
//! and the HTTP layer use, so these tests hold for the service as the node runs it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::{ClusterConfig, ClusterNode, NodeInfo};
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use tokio_util::sync::CancellationToken;

use super::http::parse_reason;
use super::maintenance::maintenance_due;
use super::service::{CRL_VALIDITY, normalize_serial};
use super::{CaService, CaServiceError, CaSettings};
use crate::ca::{Kek, RevokeReason};

const WS: &str = "chat.corp.lan";

struct Fixture {
    node: Arc<ClusterNode>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The node's tasks end with the runtime; cancel so nothing keeps running meanwhile.
        let node = self.node.clone();
        drop(tokio::spawn(async move { node.shutdown().await }));
    }
}

async fn single_node() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let info = NodeInfo {
        api_addr: "127.0.0.1:1".into(),
        cluster_addr: "127.0.0.1:2".into(),
    };
    let cfg = ClusterConfig::with_defaults(1, dir.path().join("data"), info);
    let node = ClusterNode::start(cfg, CancellationToken::new())
        .await
        .unwrap();
    node.initialize().await.unwrap();
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    Fixture { node, _dir: dir }
}

fn settings(dir: &std::path::Path) -> CaSettings {
    CaSettings {
        workspace: WS.into(),
        permitted_ips: vec![crate::ca::IpRange::new("10.0.0.0".parse().unwrap(), 8).unwrap()],
        crl_url: None,
        kek_path: dir.join("conclave.kek"),
        node_cert_lifetime: Duration::from_secs(7 * 86_400),
        service_cert_lifetime: Duration::from_secs(90 * 86_400),
    }
}

fn csr(names: &[&str], ips: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    for n in names {
        p.subject_alt_names
            .push(SanType::DnsName(Ia5String::try_from(*n).unwrap()));
    }
    for ip in ips {
        p.subject_alt_names
            .push(SanType::IpAddress(ip.parse().unwrap()));
    }
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_through_raft() {
    let f = single_node().await;
    let keys = tempfile::tempdir().unwrap();
    let svc = Arc::new(CaService::new(
        f.node.clone(),
        Some(Kek::generate().unwrap()),
        settings(keys.path()),
    ));
    assert!(matches!(svc.load(), Err(CaServiceError::NotInitialized)));
    let (created, fp) = svc.ensure_initialized(false).await.unwrap();
    assert!(created);
    let (created_again, fp_again) = svc.ensure_initialized(false).await.unwrap();
    assert!(!created_again);
    assert_eq!(fp, fp_again);
    let (version, state) = svc.load().unwrap();
    assert_eq!(version, 1);
    // init publishes the issuing CA's CRL right away.
    assert!(state.crls.contains_key(&state.intermediate.serial));
    assert!(!maintenance_due(&state, SystemTime::now()));

    // Concurrent signing from one state: the CAS makes the loser retry; nothing is lost.
    let a = svc.sign_csr(csr(&["a.chat.corp.lan"], &[]), None);
    let b = svc.sign_csr(csr(&["b.chat.corp.lan"], &["10.1.2.3"]), None);
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    let (_, state) = svc.load().unwrap();
    assert!(state.issued.contains_key(&a.record.serial));
    assert!(state.issued.contains_key(&b.record.serial));

    // Refusals write nothing.
    let (before, _) = svc.load().unwrap();
    let err = svc
        .sign_csr(csr(&["wiki.example.com"], &[]), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wiki.example.com"), "{err}");
    let err = svc
        .sign_csr(csr(&["c.chat.corp.lan"], &["192.168.1.1"]), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
    assert_eq!(svc.load().unwrap().0, before);

    // Revocation records the entry and a CRL with a higher number.
    let crl_number = svc.load().unwrap().1.crl_number;
    svc.revoke(
        &a.record.serial.to_ascii_uppercase(),
        RevokeReason::KeyCompromise,
    )
    .await
    .unwrap();
    let (_, state) = svc.load().unwrap();
    assert!(state.is_revoked(&a.record.serial));
    assert!(state.crl_number > crl_number);

    // The root key leaves once; the issuing CA keeps signing; renewal needs the right key.
    let root = svc.export_root_key().await.unwrap();
    assert!(svc.load().unwrap().1.root_key.is_none());
    assert!(matches!(
        svc.export_root_key().await,
        Err(CaServiceError::Ca(crate::ca::CaError::RootKeyOffline))
    ));
    svc.sign_csr(csr(&["d.chat.corp.lan"], &[]), None)
        .await
        .unwrap();
    let wrong = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    assert!(matches!(
        svc.renew_intermediate(wrong).await,
        Err(CaServiceError::Ca(crate::ca::CaError::KeyMismatch { .. }))
    ));
    let old = svc.load().unwrap().1.intermediate.serial;
    let renewed = svc
        .renew_intermediate(root.expose().to_owned())
        .await
        .unwrap();
    assert_ne!(renewed.serial, old);
    let (_, state) = svc.load().unwrap();
    assert!(
        state.root_key.is_none(),
        "renewal must not put the root key back"
    );
    assert!(state.crls.contains_key(&renewed.serial));
    assert!(state.crls.contains_key(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_kek_serves_public_parts_names_the_file_and_picks_it_up_later() {
    let f = single_node().await;
    let keys = tempfile::tempdir().unwrap();
    let kek = Kek::generate().unwrap();
    let copy = Kek::from_text(kek.to_text().expose()).unwrap();
    let with_kek = CaService::new(f.node.clone(), Some(kek), settings(keys.path()));
    with_kek.ensure_initialized(false).await.unwrap();
    let without = CaService::open(f.node.clone(), settings(keys.path()));
    assert!(without.load().is_ok());
    let err = without
        .sign_csr(csr(&["a.chat.corp.lan"], &[]), None)
        .await
        .unwrap_err();
    assert!(matches!(err, CaServiceError::KekMissing { .. }), "{err}");
    assert!(err.to_string().contains("conclave.kek"), "{err}");
    // The operator copies the file in: the next request uses it, no restart needed.
    copy.create_file(&keys.path().join("conclave.kek")).unwrap();
    without
        .sign_csr(csr(&["a.chat.corp.lan"], &[]), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_init_creates_the_kek_file_on_a_cluster_without_a_ca() {
    let f = single_node().await;
    let keys = tempfile::tempdir().unwrap();
    let svc = CaService::open(f.node.clone(), settings(keys.path()));
    assert!(matches!(
        svc.ensure_initialized(false).await,
        Err(CaServiceError::KekMissing { .. })
    ));
    let (created, _) = svc.ensure_initialized(true).await.unwrap();
    assert!(created);
    assert!(keys.path().join("conclave.kek").is_file());
    svc.sign_csr(csr(&["a.chat.corp.lan"], &[]), None)
        .await
        .unwrap();
}

#[test]
fn reasons_and_serials_parse() {
    assert_eq!(parse_reason(None).unwrap(), RevokeReason::Unspecified);
    assert_eq!(
        parse_reason(Some("key_compromise")).unwrap(),
        RevokeReason::KeyCompromise
    );
    assert!(parse_reason(Some("on_hold")).is_err());
    assert_eq!(normalize_serial(" AB:cd:01 "), "abcd01");
}

#[test]
fn maintenance_is_due_near_next_update_and_for_expired_records() {
    let kek = Kek::generate().unwrap();
    let now = SystemTime::now();
    let mut state = crate::ca::init(&crate::ca::InitParams::new(WS, &[]), &kek, now).unwrap();
    // No CRL for the issuing CA yet.
    assert!(maintenance_due(&state, now));
    let crls = crate::ca::sign_crls(&state, &kek, now, CRL_VALIDITY).unwrap();
    state.record_crls(crls).unwrap();
    assert!(!maintenance_due(&state, now));
    let later = now + CRL_VALIDITY - Duration::from_secs(86_400);
    assert!(maintenance_due(&state, later));
}
