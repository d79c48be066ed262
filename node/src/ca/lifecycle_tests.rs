//! Lifecycle checks of the CA library: revocation and CRLs, the root key going offline and the
//! issuing CA being renewed, and the replicated state's encoding. Verified with the `openssl`
//! command line and rustls/webpki, as in `tests`. Test-only.

use rcgen::SanType;
use rcgen::string::Ia5String;

use super::authority;
use super::test_support::*;
use super::tests::{forced_leaf, node_cert, node_cert_from};
use super::*;

#[test]
fn revoked_leaf_is_rejected_with_the_crl() {
    let f = fixture();
    let mut state = f.state.clone();
    let bad = node_cert(&f, 1, &[]);
    let good = node_cert(&f, 2, &[]);
    state.record_issued(bad.record.clone()).unwrap();
    state.record_issued(good.record.clone()).unwrap();
    state
        .revoke(
            &bad.record.serial,
            RevokeReason::KeyCompromise,
            x509::unix(now()),
        )
        .unwrap();
    assert!(state.is_revoked(&bad.record.serial));
    assert!(matches!(
        state.revoke("00ff", RevokeReason::Unspecified, 0),
        Err(CaError::UnknownSerial { .. })
    ));
    let crls = sign_crls(&state, &f.kek, now(), DAY).unwrap();
    assert_eq!(crls.len(), 1);
    let crl = crls[0].clone();
    assert_eq!(
        (crl.number, &crl.issuer_serial),
        (1, &state.intermediate.serial)
    );
    state.record_crls(crls.clone()).unwrap();
    assert!(matches!(
        state.record_crls(crls),
        Err(CaError::StaleCrl { .. })
    ));
    assert_eq!(state.verifier_crls().len(), 2);

    let root_crl = state.root_crl.clone().unwrap();
    let crls = [crl.pem(), root_crl.pem()];
    let int = &state.intermediate.cert_pem;
    let root = &state.root_cert_pem;
    let v = openssl_verify(root, int, &bad.record.cert_pem, &crls[..1], &["-crl_check"]);
    assert!(
        !v.ok && v.output.contains("certificate revoked"),
        "{}",
        v.output
    );
    let v = openssl_verify(
        root,
        int,
        &good.record.cert_pem,
        &crls[..1],
        &["-crl_check"],
    );
    assert!(v.ok, "{}", v.output);
    // Whole-chain checking needs the root-signed CRL, which the state carries.
    let v = openssl_verify(root, int, &good.record.cert_pem, &crls, &["-crl_check_all"]);
    assert!(v.ok, "{}", v.output);
    let v = openssl_verify(root, int, &bad.record.cert_pem, &crls, &["-crl_check_all"]);
    assert!(!v.ok, "{}", v.output);

    // webpki (the mTLS verifier) agrees.
    let ders = [crl.der.clone(), root_crl.der.clone()];
    let e = webpki_client(root, &bad.chain_pem, &ders, now()).unwrap_err();
    assert!(format!("{e:?}").contains("Revoked"), "{e:?}");
    webpki_client(root, &good.chain_pem, &ders, now()).unwrap();

    // Pruning drops expired entries only.
    let mut pruned = state.clone();
    pruned.prune_expired(x509::unix(now()));
    assert_eq!(pruned.revoked.len(), 1);
    pruned.prune_expired(bad.record.not_after + 1);
    assert!(pruned.revoked.is_empty() && pruned.issued.is_empty());
}

#[test]
fn root_key_offline_then_renewal_with_it() {
    let f = fixture();
    let old_leaf = node_cert(&f, 1, &[]);
    let (root_key, offline) = export_root_key(&f.state, &f.kek).unwrap();
    assert!(offline.root_key.is_none());
    assert!(root_key.expose().contains("PRIVATE KEY"));
    assert!(matches!(
        export_root_key(&offline, &f.kek),
        Err(CaError::RootKeyOffline)
    ));
    // The issuing CA keeps issuing with the root offline.
    let while_offline = node_cert_from(&offline, &f.kek, 2, &[]);
    // Renewal needs the root key: refused without it, refused with another CA's root key.
    assert!(matches!(
        renew_intermediate(&offline, &f.kek, None, DAY * 365, now()),
        Err(CaError::RootKeyOffline)
    ));
    let other = fixture();
    let (wrong_key, _) = export_root_key(&other.state, &other.kek).unwrap();
    assert!(matches!(
        renew_intermediate(&offline, &f.kek, Some(wrong_key.expose()), DAY * 365, now()),
        Err(CaError::KeyMismatch { role: "root" })
    ));
    assert!(matches!(
        import_root_key(&offline, &f.kek, wrong_key.expose()),
        Err(CaError::KeyMismatch { .. })
    ));

    let renewed =
        renew_intermediate(&offline, &f.kek, Some(root_key.expose()), DAY * 365, now()).unwrap();
    // The offline key was used once and not stored.
    assert!(renewed.root_key.is_none());
    assert_ne!(renewed.intermediate.serial, offline.intermediate.serial);
    assert_eq!(renewed.previous_intermediates.len(), 1);
    assert_eq!(renewed.root_crl_number, offline.root_crl_number + 1);
    let new_leaf = node_cert_from(&renewed, &f.kek, 1, &[]);
    let root = &renewed.root_cert_pem;
    // Old leaves still verify against the root with their own (retired) issuing CA.
    assert_eq!(
        renewed.chain_pem(&old_leaf.record).unwrap(),
        old_leaf.chain_pem
    );
    for (leaf, chain) in [
        (&old_leaf, &old_leaf.chain_pem),
        (&while_offline, &while_offline.chain_pem),
        (&new_leaf, &new_leaf.chain_pem),
    ] {
        let int = chain.strip_prefix(&leaf.record.cert_pem).unwrap();
        let v = openssl_verify(
            root,
            int,
            &leaf.record.cert_pem,
            &[],
            &["-purpose", "sslclient"],
        );
        assert!(v.ok, "{}", v.output);
        webpki_server(root, chain, "1.nodes.chat.corp.lan", now())
            .or_else(|_| webpki_server(root, chain, "2.nodes.chat.corp.lan", now()))
            .unwrap();
    }
    // The new issuing CA still carries the name constraints.
    let forced = forced_leaf(
        &Fixture {
            state: renewed.clone(),
            kek: Kek::from_text(f.kek.to_text().expose()).unwrap(),
        },
        SanType::DnsName(Ia5String::try_from("evil.example.com").unwrap()),
    );
    assert!(!openssl_verify(root, &renewed.intermediate.cert_pem, &forced, &[], &[]).ok);
    // The new root CRL verifies with OpenSSL for the new chain.
    let crl = sign_crls(&renewed, &f.kek, now(), DAY).unwrap().remove(0);
    assert_eq!(crl.issuer_serial, renewed.intermediate.serial);
    let crls = [crl.pem(), renewed.root_crl.clone().unwrap().pem()];
    let v = openssl_verify(
        root,
        &renewed.intermediate.cert_pem,
        &new_leaf.record.cert_pem,
        &crls,
        &["-crl_check_all"],
    );
    assert!(v.ok, "{}", v.output);

    // Leaves of the retired issuing CA stay revocable: it keeps signing its own CRL.
    let mut revoking = renewed.clone();
    revoking.record_issued(old_leaf.record.clone()).unwrap();
    revoking
        .revoke(
            &old_leaf.record.serial,
            RevokeReason::KeyCompromise,
            x509::unix(now()),
        )
        .unwrap();
    let crls = sign_crls(&revoking, &f.kek, now(), DAY).unwrap();
    assert_eq!(crls.len(), 2);
    let old_crl = crls
        .iter()
        .find(|c| c.issuer_serial == offline.intermediate.serial)
        .unwrap();
    let old_int = &offline.intermediate.cert_pem;
    let v = openssl_verify(
        root,
        old_int,
        &old_leaf.record.cert_pem,
        &[old_crl.pem()],
        &["-crl_check"],
    );
    assert!(
        !v.ok && v.output.contains("certificate revoked"),
        "{}",
        v.output
    );
    revoking.record_crls(crls).unwrap();
    let ders: Vec<Vec<u8>> = revoking
        .verifier_crls()
        .iter()
        .map(|c| c.der.clone())
        .collect();
    assert_eq!(ders.len(), 3);
    assert!(webpki_client(root, &old_leaf.chain_pem, &ders, now()).is_err());
    webpki_client(root, &new_leaf.chain_pem, &ders, now()).unwrap();
    // Once the retired CA expires, it and its CRL are pruned.
    revoking.prune_expired(offline.intermediate.not_after + 1);
    assert!(revoking.previous_intermediates.is_empty());
    assert_eq!(revoking.crls.len(), 1);

    // Putting the key back online works once, with the right key.
    let online = import_root_key(&renewed, &f.kek, root_key.expose()).unwrap();
    assert!(matches!(
        import_root_key(&online, &f.kek, root_key.expose()),
        Err(CaError::RootKeyOnline)
    ));
    let again = renew_intermediate(&online, &f.kek, None, DAY * 365, now()).unwrap();
    assert_eq!(again.previous_intermediates.len(), 2);
}

#[test]
fn state_is_bincode_and_json_friendly_and_holds_no_clear_keys() {
    let f = fixture();
    let mut state = f.state.clone();
    let issued = node_cert(&f, 1, &["10.0.0.1".parse().unwrap()]);
    state.record_issued(issued.record.clone()).unwrap();
    state
        .revoke(&issued.record.serial, RevokeReason::Superseded, 1)
        .unwrap();
    state
        .record_crls(sign_crls(&state, &f.kek, now(), DAY).unwrap())
        .unwrap();
    let bytes = bincode::serialize(&state).unwrap();
    let back: CaState = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, state);
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<CaState>(&json).unwrap(), state);
    for haystack in [&bytes[..], json.as_bytes()] {
        assert!(!haystack.windows(11).any(|w| w == b"PRIVATE KEY"));
    }
    // And the sealed keys still open after the round trip.
    let _ = authority::intermediate_issuer(&back, &f.kek).unwrap();
    assert!(matches!(
        authority::intermediate_issuer(&back, &Kek::generate().unwrap()),
        Err(CaError::Unseal { .. })
    ));
}

#[test]
fn crl_distribution_point_and_webpki_revocation_agree() {
    let kek = Kek::generate().unwrap();
    let mut p = InitParams::new(WS, &ranges());
    p.crl_url = Some("http://chat.corp.lan:8080/ca/crl".into());
    let mut state = init(&p, &kek, now()).unwrap();
    let good = node_cert_from(&state, &kek, 1, &[]);
    let bad = node_cert_from(&state, &kek, 2, &[]);
    assert!(good.record.cert_pem != bad.record.cert_pem);
    state.record_issued(bad.record.clone()).unwrap();
    state
        .revoke(
            &bad.record.serial,
            RevokeReason::KeyCompromise,
            x509::unix(now()),
        )
        .unwrap();
    state
        .record_crls(sign_crls(&state, &kek, now(), DAY).unwrap())
        .unwrap();
    let ders: Vec<Vec<u8>> = state
        .verifier_crls()
        .iter()
        .map(|c| c.der.clone())
        .collect();
    webpki_client(&state.root_cert_pem, &good.chain_pem, &ders, now()).unwrap();
    let e = webpki_client(&state.root_cert_pem, &bad.chain_pem, &ders, now()).unwrap_err();
    assert!(format!("{e:?}").contains("Revoked"), "{e:?}");
}
