//! Test helpers for the CA: fixtures, the `openssl` command line, and rustls/webpki verifiers.
//! Test-only; must never be compiled into the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::authority::{InitParams, init};
use super::keywrap::Kek;
use super::names::IpRange;
use super::state::CaState;
use super::x509;

pub const WS: &str = "chat.corp.lan";

pub struct Fixture {
    pub state: CaState,
    pub kek: Kek,
}

pub fn ranges() -> Vec<IpRange> {
    vec![
        IpRange::new("10.0.0.0".parse().unwrap(), 8).unwrap(),
        IpRange::new("127.0.0.0".parse().unwrap(), 8).unwrap(),
        IpRange::new("fd00::".parse().unwrap(), 8).unwrap(),
    ]
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn new_state(ws: &str) -> (CaState, Kek) {
    let kek = Kek::generate().unwrap();
    let state = init(&InitParams::new(ws, &ranges()), &kek, now()).unwrap();
    (state, kek)
}

pub fn fixture() -> Fixture {
    let (state, kek) = new_state(WS);
    Fixture { state, kek }
}

/// The `openssl` binary; its absence fails the test with instructions rather than skipping,
/// because the OpenSSL cross-check is part of the acceptance criteria.
pub fn openssl() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("openssl"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the `openssl` command is required by the CA tests: install it (apt-get install -y openssl)"
        )
    })
}

pub struct TempFiles {
    pub dir: tempfile::TempDir,
}

impl TempFiles {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(content).unwrap();
        path
    }
}

/// Result of `openssl verify`: success flag and combined output.
pub struct Verify {
    pub ok: bool,
    pub output: String,
}

/// Run `openssl verify -x509_strict` with the root as the only trust anchor.
pub fn openssl_verify(
    root_pem: &str,
    untrusted_pem: &str,
    leaf_pem: &str,
    crls: &[String],
    extra: &[&str],
) -> Verify {
    let files = TempFiles::new();
    let root = files.write("root.pem", root_pem.as_bytes());
    let leaf = files.write("leaf.pem", leaf_pem.as_bytes());
    let mut cmd = Command::new(openssl());
    cmd.arg("verify")
        .arg("-x509_strict")
        .arg("-CAfile")
        .arg(&root);
    if !untrusted_pem.is_empty() {
        let untrusted = files.write("untrusted.pem", untrusted_pem.as_bytes());
        cmd.arg("-untrusted").arg(untrusted);
    }
    for (i, crl) in crls.iter().enumerate() {
        let path = files.write(&format!("crl{i}.pem"), crl.as_bytes());
        cmd.arg("-CRLfile").arg(path);
    }
    cmd.args(extra).arg(&leaf);
    let out = cmd.output().unwrap();
    Verify {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Run an openssl subcommand on one input file and return stdout.
pub fn openssl_on(path: &Path, args: &[&str]) -> String {
    let out = Command::new(openssl())
        .args(args)
        .arg("-in")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(root_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(x509::cert_der(root_pem).unwrap()))
        .unwrap();
    Arc::new(roots)
}

/// Split a chain PEM into DER certificates.
pub fn chain_ders(chain_pem: &str) -> Vec<CertificateDer<'static>> {
    chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|block| block.contains("BEGIN CERTIFICATE"))
        .map(|block| CertificateDer::from(x509::cert_der(block).unwrap()))
        .collect()
}

pub fn at(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

/// Verify a chain (leaf first) as a TLS client would, for `name` (DNS name or IP address).
pub fn webpki_server(
    root_pem: &str,
    chain_pem: &str,
    name: &str,
    when: SystemTime,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(root_pem), provider())
        .build()
        .unwrap();
    let chain = chain_ders(chain_pem);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], at(when))
        .map(|_| ())
}

/// Verify a chain as a node accepting an mTLS client would, with the given CRLs (DER).
pub fn webpki_client(
    root_pem: &str,
    chain_pem: &str,
    crls: &[Vec<u8>],
    when: SystemTime,
) -> Result<(), rustls::Error> {
    let crls = crls
        .iter()
        .map(|d| CertificateRevocationListDer::from(d.clone()))
        .collect::<Vec<_>>();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(root_pem), provider())
        .with_crls(crls)
        .build()
        .unwrap();
    let chain = chain_ders(chain_pem);
    verifier
        .verify_client_cert(&chain[0], &chain[1..], at(when))
        .map(|_| ())
}

pub const DAY: Duration = Duration::from_secs(86_400);
