//! End-to-end checks of the CA library against independent verifiers: the `openssl` command line
//! and rustls/webpki (what the HTTPS listener and the mTLS verifier will use). Test-only.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::authority::intermediate_issuer;
use super::test_support::*;
use super::*;

pub(super) fn node_cert(f: &Fixture, node_id: u64, ips: &[IpAddr]) -> Issued {
    node_cert_from(&f.state, &f.kek, node_id, ips)
}

pub(super) fn node_cert_from(state: &CaState, kek: &Kek, node_id: u64, ips: &[IpAddr]) -> Issued {
    let key = generate_node_key().unwrap();
    let req = NodeCertRequest {
        node_id,
        csr_pem: key.csr_pem,
        dns_names: vec![WS.to_owned(), format!("host{node_id}.{WS}")],
        ips: ips.to_vec(),
        lifetime: DEFAULT_NODE_CERT_LIFETIME,
    };
    issue_node_cert(state, kek, &req, now()).unwrap()
}

fn csr_for(names: &[&str], ips: &[&str]) -> (KeyPair, String) {
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
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

/// Sign a leaf with the issuing CA through rcgen directly, skipping our name checks, to prove
/// the name constraints in the issuing CA certificate are enforced by verifiers.
pub(super) fn forced_leaf(f: &Fixture, san: SanType) -> String {
    let issuer = intermediate_issuer(&f.state, &f.kek).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![san];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(x509::random_serial().unwrap().0);
    let start = x509::unix(now()) - 60;
    p.not_before = x509::datetime(start).unwrap();
    p.not_after = x509::datetime(start + 86_400).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "forced");
    p.signed_by(&key, &issuer).unwrap().pem()
}

#[test]
fn node_chain_verifies_with_openssl() {
    let f = fixture();
    let issued = node_cert(&f, 3, &["10.0.0.5".parse().unwrap()]);
    for purpose in ["sslserver", "sslclient"] {
        let v = openssl_verify(
            &f.state.root_cert_pem,
            &f.state.intermediate.cert_pem,
            &issued.record.cert_pem,
            &[],
            &[
                "-purpose",
                purpose,
                "-verify_hostname",
                "3.nodes.chat.corp.lan",
            ],
        );
        assert!(v.ok, "{purpose}: {}", v.output);
    }
    let v = openssl_verify(
        &f.state.root_cert_pem,
        &f.state.intermediate.cert_pem,
        &issued.record.cert_pem,
        &[],
        &["-verify_ip", "10.0.0.5"],
    );
    assert!(v.ok, "{}", v.output);
    // The chain we hand out is leaf + issuing CA.
    assert_eq!(
        issued.chain_pem,
        format!(
            "{}{}",
            issued.record.cert_pem, f.state.intermediate.cert_pem
        )
    );
}

#[test]
fn node_chain_verifies_with_webpki_for_names_and_ip() {
    let f = fixture();
    let issued = node_cert(
        &f,
        3,
        &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
    );
    let root = &f.state.root_cert_pem;
    for name in [
        "3.nodes.chat.corp.lan",
        WS,
        "host3.chat.corp.lan",
        "10.0.0.5",
        "fd00::5",
    ] {
        webpki_server(root, &issued.chain_pem, name, now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The mTLS identity check: node 3's certificate is not valid as node 4.
    assert!(webpki_server(root, &issued.chain_pem, "4.nodes.chat.corp.lan", now()).is_err());
    // As an mTLS client, with both CRLs (webpki checks revocation along the whole chain).
    let crl = sign_crls(&f.state, &f.kek, now(), DAY).unwrap().remove(0);
    let root_crl = f.state.root_crl.clone().unwrap();
    webpki_client(
        root,
        &issued.chain_pem,
        &[crl.der.clone(), root_crl.der.clone()],
        now(),
    )
    .unwrap();
    // Without the root-signed CRL, every client fails: the reason the state keeps one.
    let err = webpki_client(root, &issued.chain_pem, &[crl.der], now()).unwrap_err();
    assert!(
        format!("{err:?}").contains("UnknownRevocationStatus"),
        "{err:?}"
    );
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let f = fixture();
    let other = fixture();
    let issued = node_cert(&other, 1, &[]);
    assert!(webpki_server(&f.state.root_cert_pem, &issued.chain_pem, WS, now()).is_err());
    let v = openssl_verify(
        &f.state.root_cert_pem,
        &other.state.intermediate.cert_pem,
        &issued.record.cert_pem,
        &[],
        &[],
    );
    assert!(!v.ok, "{}", v.output);
}

#[test]
fn names_outside_constraints_are_refused_by_sign_csr() {
    let f = fixture();
    for (names, ips) in [
        (&["wiki.example.com"][..], &[][..]),
        (&["wiki.corp.lan"][..], &[][..]),
        (&["wiki.chat.corp.lan"][..], &["192.168.1.10"][..]),
        (&[][..], &["2001:db8::1"][..]),
    ] {
        let (_, csr) = csr_for(names, ips);
        let err = sign_csr(&f.state, &f.kek, &csr, DAY, now()).unwrap_err();
        assert!(
            matches!(
                err,
                CaError::NameOutsideZone { .. } | CaError::IpOutsideRanges { .. }
            ),
            "{names:?} {ips:?}: {err}"
        );
    }
    // Node identities and the workspace name are reserved for the cluster.
    for reserved in ["1.nodes.chat.corp.lan", "*.nodes.chat.corp.lan", WS] {
        let (_, csr) = csr_for(&[reserved], &[]);
        assert!(
            matches!(
                sign_csr(&f.state, &f.kek, &csr, DAY, now()),
                Err(CaError::ReservedName { .. })
            ),
            "{reserved}"
        );
    }
    // And a node cannot be given another node's identity.
    let key = generate_node_key().unwrap();
    assert!(matches!(
        issue_node_cert(
            &f.state,
            &f.kek,
            &NodeCertRequest {
                node_id: 1,
                csr_pem: key.csr_pem,
                dns_names: vec!["2.nodes.chat.corp.lan".to_owned()],
                ips: vec![],
                lifetime: DAY,
            },
            now()
        ),
        Err(CaError::ReservedName { .. })
    ));
    // No names at all.
    let (_, csr) = csr_for(&[], &[]);
    assert!(matches!(
        sign_csr(&f.state, &f.kek, &csr, DAY, now()),
        Err(CaError::NoNames)
    ));
    // Inside: accepted, and openssl agrees.
    let (_, csr) = csr_for(&["wiki.chat.corp.lan"], &["10.1.2.3"]);
    let issued = sign_csr(&f.state, &f.kek, &csr, DAY, now()).unwrap();
    let v = openssl_verify(
        &f.state.root_cert_pem,
        &f.state.intermediate.cert_pem,
        &issued.record.cert_pem,
        &[],
        &[
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "wiki.chat.corp.lan",
        ],
    );
    assert!(v.ok, "{}", v.output);
    // Service certificates cannot act as mTLS clients (no clientAuth EKU).
    let v = openssl_verify(
        &f.state.root_cert_pem,
        &f.state.intermediate.cert_pem,
        &issued.record.cert_pem,
        &[],
        &["-purpose", "sslclient"],
    );
    assert!(!v.ok, "{}", v.output);
}

#[test]
fn forced_leaf_outside_constraints_is_rejected_by_verifiers() {
    let f = fixture();
    let root = &f.state.root_cert_pem;
    let int = &f.state.intermediate.cert_pem;
    let dns = forced_leaf(
        &f,
        SanType::DnsName(Ia5String::try_from("evil.example.com").unwrap()),
    );
    let ip = forced_leaf(&f, SanType::IpAddress("192.168.1.1".parse().unwrap()));
    for leaf in [&dns, &ip] {
        let v = openssl_verify(root, int, leaf, &[], &[]);
        assert!(!v.ok);
        assert!(
            v.output.contains("error 47") && v.output.contains("permitted subtree violation"),
            "{}",
            v.output
        );
    }
    let chain = |leaf: &str| format!("{leaf}{int}");
    let e = webpki_server(root, &chain(&dns), "evil.example.com", now()).unwrap_err();
    assert!(
        format!("{e:?}").contains("NameConstraintViolation"),
        "{e:?}"
    );
    let e = webpki_server(root, &chain(&ip), "192.168.1.1", now()).unwrap_err();
    assert!(
        format!("{e:?}").contains("NameConstraintViolation"),
        "{e:?}"
    );
    // Control: a forced leaf inside the zone verifies, so the failures above are the constraint.
    let good = forced_leaf(
        &f,
        SanType::DnsName(Ia5String::try_from("ok.chat.corp.lan").unwrap()),
    );
    assert!(openssl_verify(root, int, &good, &[], &[]).ok);
    webpki_server(root, &chain(&good), "ok.chat.corp.lan", now()).unwrap();
}

#[test]
fn without_ranges_every_address_is_excluded() {
    let kek = Kek::generate().unwrap();
    let state = init(&InitParams::new(WS, &[]), &kek, now()).unwrap();
    let f = Fixture { state, kek };
    let (_, csr) = csr_for(&["a.chat.corp.lan"], &["10.0.0.1"]);
    assert!(matches!(
        sign_csr(&f.state, &f.kek, &csr, DAY, now()),
        Err(CaError::IpOutsideRanges { .. })
    ));
    let leaf = forced_leaf(&f, SanType::IpAddress("10.0.0.1".parse().unwrap()));
    let v = openssl_verify(
        &f.state.root_cert_pem,
        &f.state.intermediate.cert_pem,
        &leaf,
        &[],
        &[],
    );
    assert!(!v.ok, "{}", v.output);
}

#[test]
fn csr_asking_for_ca_gets_a_leaf() {
    let f = fixture();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::DnsName(
        Ia5String::try_from("wiki.chat.corp.lan").unwrap(),
    )];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "evil.example.com");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let issued = sign_csr(&f.state, &f.kek, &csr, DAY, now()).unwrap();
    let der = x509::cert_der(&issued.record.cert_pem).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    // The subject is ours, not the CSR's.
    assert!(cert.subject().to_string().contains("wiki.chat.corp.lan"));
    assert!(!cert.subject().to_string().contains("evil"));
    // A certificate signed by this "CA" leaf does not verify.
    let files = TempFiles::new();
    let leaf_path = files.write("leaf.pem", issued.record.cert_pem.as_bytes());
    let text = openssl_on(&leaf_path, &["x509", "-noout", "-text"]);
    assert!(text.contains("CA:FALSE"), "{text}");
}

#[test]
fn serials_are_unique_for_the_same_key_and_validity_is_as_requested() {
    let f = fixture();
    let (_, csr) = csr_for(&["wiki.chat.corp.lan"], &[]);
    let t = now();
    let lifetime = Duration::from_secs(3 * 86_400 + 17);
    let a = sign_csr(&f.state, &f.kek, &csr, lifetime, t).unwrap();
    let b = sign_csr(&f.state, &f.kek, &csr, lifetime, t).unwrap();
    assert_ne!(a.record.serial, b.record.serial);
    let ia = x509::cert_info(&a.record.cert_pem).unwrap();
    assert_eq!(ia.serial, a.record.serial);
    let t_secs = x509::unix(t);
    assert_eq!(ia.not_after, t_secs + lifetime.as_secs() as i64);
    assert_eq!(ia.not_before, t_secs - 300);
    assert_eq!(
        (ia.not_before, ia.not_after),
        (a.record.not_before, a.record.not_after)
    );
    // webpki agrees on the window.
    let root = &f.state.root_cert_pem;
    webpki_server(
        root,
        &a.chain_pem,
        "wiki.chat.corp.lan",
        t + lifetime - Duration::from_secs(1),
    )
    .unwrap();
    assert!(
        webpki_server(
            root,
            &a.chain_pem,
            "wiki.chat.corp.lan",
            t + lifetime + Duration::from_secs(1)
        )
        .is_err()
    );
    // Recording both is fine; recording one twice is refused.
    let mut state = f.state.clone();
    state.record_issued(a.record.clone()).unwrap();
    state.record_issued(b.record).unwrap();
    assert!(matches!(
        state.record_issued(a.record),
        Err(CaError::DuplicateSerial { .. })
    ));
    // Lifetimes out of bounds.
    for bad in [Duration::ZERO, Duration::from_secs(826 * 86_400)] {
        assert!(matches!(
            sign_csr(&f.state, &f.kek, &csr, bad, t),
            Err(CaError::InvalidLifetime { .. })
        ));
    }
}

#[test]
fn leaves_never_outlive_their_issuing_ca() {
    let kek = Kek::generate().unwrap();
    let mut params = InitParams::new(WS, &ranges());
    params.intermediate_lifetime = Duration::from_secs(86_400);
    let state = init(&params, &kek, now()).unwrap();
    let (_, csr) = csr_for(&["a.chat.corp.lan"], &[]);
    let issued = sign_csr(&state, &kek, &csr, 30 * DAY, now()).unwrap();
    assert_eq!(issued.record.not_after, state.intermediate.not_after);
}

#[test]
fn fingerprint_matches_openssl() {
    let f = fixture();
    let files = TempFiles::new();
    let path = files.write("root.pem", f.state.root_cert_pem.as_bytes());
    let out = openssl_on(&path, &["x509", "-noout", "-fingerprint", "-sha256"]);
    let theirs = out.trim().split_once('=').unwrap().1;
    assert_eq!(root_fingerprint(&f.state).unwrap(), theirs);
}

#[test]
fn root_and_issuing_ca_profiles() {
    let f = fixture();
    let files = TempFiles::new();
    let root = files.write("root.pem", f.state.root_cert_pem.as_bytes());
    let int = files.write("int.pem", f.state.intermediate.cert_pem.as_bytes());
    let root_text = openssl_on(&root, &["x509", "-noout", "-text"]);
    assert!(root_text.contains("CA:TRUE, pathlen:1"), "{root_text}");
    assert!(root_text.contains("Conclave root CA chat.corp.lan"));
    assert!(root_text.contains("ecdsa-with-SHA256"));
    let int_text = openssl_on(&int, &["x509", "-noout", "-text"]);
    assert!(int_text.contains("CA:TRUE, pathlen:0"), "{int_text}");
    assert!(
        int_text.contains("Certificate Sign, CRL Sign"),
        "{int_text}"
    );
    assert!(int_text.contains("DNS:chat.corp.lan"), "{int_text}");
    assert!(int_text.contains("IP:10.0.0.0/255.0.0.0"), "{int_text}");
    // The root itself verifies as a trust anchor under strict checks.
    let v = openssl_verify(
        &f.state.root_cert_pem,
        "",
        &f.state.intermediate.cert_pem,
        &[],
        &[],
    );
    assert!(v.ok, "{}", v.output);
    let ri = x509::cert_info(&f.state.root_cert_pem).unwrap();
    assert!(ri.not_after - ri.not_before >= 3650 * 86_400);
}

#[test]
fn generated_node_key_matches_its_csr() {
    let key = generate_node_key().unwrap();
    assert!(key.private_pem.expose().contains("BEGIN PRIVATE KEY"));
    let kp = KeyPair::from_pem(key.private_pem.expose()).unwrap();
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&csr.public_key),
        rcgen::PublicKeyData::der_bytes(&kp)
    );
}
