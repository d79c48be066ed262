//! A throwaway CA with the cluster CA's profile (node/src/ca/authority.rs): root (pathLen 1) ->
//! name-constrained issuing CA (pathLen 0) -> node certificates (`N.nodes.<ws>` + an IP, EKU
//! serverAuth + clientAuth) and service certificates (serverAuth only, no node identity), plus
//! CRLs from both CA levels, as PEM for `PeerTlsMaterial`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use cluster::PeerTlsMaterial;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Distinct serials within one test process (the CRL names certificates by serial).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0x1000);

fn serial() -> SerialNumber {
    SerialNumber::from(NEXT_SERIAL.fetch_add(1, Ordering::Relaxed))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

pub struct Ca {
    pub workspace: String,
    root: CertifiedIssuer<'static, KeyPair>,
    issuing: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, with the chain a node would present.
pub struct Leaf {
    pub serial: SerialNumber,
    pub key_pem: String,
    /// Leaf first, then the issuing CA.
    pub chain_pem: String,
}

impl Ca {
    pub fn new(workspace: &str, name: &str) -> Ca {
        let now = OffsetDateTime::now_utc();
        let mut root = CertificateParams::default();
        root.distinguished_name = dn(&format!("{name} root"));
        root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.serial_number = Some(serial());
        root.not_before = now - Duration::days(10);
        root.not_after = now + Duration::days(10);
        let root = CertifiedIssuer::self_signed(root, KeyPair::generate().unwrap()).unwrap();

        let mut issuing = CertificateParams::default();
        issuing.distinguished_name = dn(&format!("{name} issuing CA"));
        issuing.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuing.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        issuing.serial_number = Some(serial());
        issuing.not_before = now - Duration::days(10);
        issuing.not_after = now + Duration::days(10);
        issuing.use_authority_key_identifier_extension = true;
        issuing.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![
                GeneralSubtree::DnsName(workspace.to_string()),
                GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 0], [255, 0, 0, 0])),
            ],
            excluded_subtrees: vec![],
        });
        let issuing =
            CertifiedIssuer::signed_by(issuing, KeyPair::generate().unwrap(), &*root).unwrap();
        Ca {
            workspace: workspace.to_string(),
            root,
            issuing,
        }
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    fn leaf(
        &self,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let serial = serial();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("conclave test leaf");
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = ekus;
        p.serial_number = Some(serial.clone());
        p.not_before = not_before;
        p.not_after = not_after;
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &*self.issuing).unwrap();
        Leaf {
            serial,
            key_pem: key.serialize_pem(),
            chain_pem: format!("{}{}", cert.pem(), self.issuing.pem()),
        }
    }

    /// A node certificate valid now.
    pub fn node(&self, id: u64, ip: IpAddr) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.node_valid(id, ip, now - Duration::minutes(5), now + Duration::days(1))
    }

    pub fn node_valid(
        &self,
        id: u64,
        ip: IpAddr,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let name = format!("{id}.nodes.{}", self.workspace);
        self.leaf(
            vec![
                SanType::DnsName(name.try_into().unwrap()),
                SanType::IpAddress(ip),
            ],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before,
            not_after,
        )
    }

    /// A certificate for another LAN service; `client_auth` adds the clientAuth EKU the real
    /// CA never gives it, to exercise the identity check rather than the EKU check.
    pub fn service(&self, dns: &str, ip: IpAddr, client_auth: bool) -> Leaf {
        let now = OffsetDateTime::now_utc();
        let mut ekus = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if client_auth {
            ekus.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        self.leaf(
            vec![
                SanType::DnsName(format!("{dns}.{}", self.workspace).try_into().unwrap()),
                SanType::IpAddress(ip),
            ],
            ekus,
            now - Duration::minutes(5),
            now + Duration::days(1),
        )
    }

    /// The issuing CA's CRL listing `revoked`, then the root's (empty) CRL, as PEM.
    pub fn crls_pem(&self, revoked: &[&Leaf]) -> String {
        let now = OffsetDateTime::now_utc();
        let crl = |revoked_certs: Vec<RevokedCertParams>| CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::hours(1),
            crl_number: serial(),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let listed = revoked
            .iter()
            .map(|leaf| RevokedCertParams {
                serial_number: leaf.serial.clone(),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let issuing = crl(listed).signed_by(&*self.issuing).unwrap();
        let root = crl(Vec::new()).signed_by(&*self.root).unwrap();
        format!("{}{}", issuing.pem().unwrap(), root.pem().unwrap())
    }

    /// Material for a node presenting `leaf`, trusting this CA, with `revoked` in the CRL.
    pub fn material(&self, leaf: &Leaf, revoked: &[&Leaf]) -> PeerTlsMaterial {
        PeerTlsMaterial {
            roots_pem: self.root_pem(),
            chain_pem: leaf.chain_pem.clone(),
            key_pem: leaf.key_pem.clone(),
            crls_pem: self.crls_pem(revoked),
            workspace: self.workspace.clone(),
        }
    }
}
