//! `conclave join --config C --token T --seed HOST:PORT`: a new machine joins the cluster with
//! a single-use join token instead of admin credentials (kubeadm/k3s style).
//!
//! Order, chosen so that nothing is trusted before it is verified and a node is only added
//! while it runs:
//! 1. parse the token; refuse a data directory that already holds data;
//! 2. `GET http://SEED/api/v1/cluster` with redirects off: 200 means the seed serves plain
//!    HTTP (the root is then `/api/v1/ca/root.pem`); a redirect to `https://H:P/..` means it
//!    serves HTTPS there (the root is then the plain port's `/ca.pem`). Either way the root's
//!    SHA-256 is compared with the token's fingerprint BEFORE the root is used or anything
//!    but these GETs is sent;
//! 3. `POST /api/v1/join`: over HTTPS (trusting only that root) with a CSR for a key generated
//!    here, receiving the node certificate and the KEK; over plain HTTP (a seed without TLS)
//!    only with `--insecure` (otherwise a man in the middle that answers the first GET with
//!    200 would downgrade the join to plain HTTP), loudly warned about, without a CSR, and never
//!    receiving the KEK, which then has to be copied by hand;
//! 4. write the files (KEK 0600, sealed node key, chain, root), start like `conclave run`, and
//!    once this node's API answers, `POST /api/v1/join/complete` (authenticated by the same
//!    token), on which the seed adds it as learner and then voter.
//!
//! Owns the joiner's HTTP exchange and its error messages. Must never send anything to a seed
//! whose root does not match the token, accept the KEK over plain HTTP, write a private key in
//! the clear, or print the token's secret or the KEK.

use std::path::Path;
use std::time::Duration;

use api::fingerprint::{colons as fingerprint_colons, to_hex as fingerprint_hex};
use api::join::{JoinComplete, JoinGrant, JoinRequest, JoinToken};
use tokio_util::sync::CancellationToken;

use crate::ca::{self, Kek};
use crate::config::Config;
use crate::node_cert::{self, NodeFiles};

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the joiner keeps asking the seed to add it (the seed's leader may be changing).
const COMPLETE_DEADLINE: Duration = Duration::from_secs(300);
const COMPLETE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Errors of `conclave join`, each a one-line message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid join token: {0}")]
    Token(String),
    #[error(
        "the seed's CA fingerprint {seed} does not match the token's {token}; refusing to join"
    )]
    FingerprintMismatch { seed: String, token: String },
    #[error("cannot reach the seed {seed}: {why}")]
    Unreachable { seed: String, why: String },
    #[error("the seed refused the join: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Files(#[from] node_cert::NodeCertError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
}

/// How the seed is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedTransport {
    /// The seed serves its API over plain HTTP at this base URL.
    Plain(String),
    /// The seed's API is at this `https://H:P` base; its plain port is the `--seed` address.
    Https(String),
}

/// What the join produced (before the node starts).
#[derive(Debug)]
pub struct Joined {
    pub node_id: u64,
    pub token: JoinToken,
    pub transport: SeedTransport,
    pub root_pem: String,
}

fn seed_base(seed: &str) -> String {
    let seed = seed.trim().trim_end_matches('/');
    if seed.starts_with("http://") {
        seed.to_owned()
    } else {
        format!("http://{seed}")
    }
}

fn plain_client(redirects: bool) -> Result<reqwest::Client, JoinError> {
    let policy = if redirects {
        reqwest::redirect::Policy::limited(3)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .redirect(policy)
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| JoinError::Setup(format!("HTTP client: {e}")))
}

/// The SHA-256 of a PEM certificate's DER, lower-case hex.
pub fn pem_fingerprint(pem: &str) -> Result<String, JoinError> {
    let der = ca::x509::cert_der(pem)?;
    Ok(fingerprint_hex(&ca::fingerprint_sha256(&der)))
}

/// Finds out how the seed serves its API and fetches its root, and checks the root against the
/// token's fingerprint. Only GETs are sent before the check.
pub async fn discover(seed: &str, token: &JoinToken) -> Result<(SeedTransport, String), JoinError> {
    let base = seed_base(seed);
    let http = plain_client(false)?;
    let unreachable = |e: reqwest::Error| JoinError::Unreachable {
        seed: base.clone(),
        why: e.to_string(),
    };
    // An API route the plain port of a TLS node never serves itself: it answers 200 on a
    // seed without TLS and redirects to the HTTPS address on one with TLS.
    let resp = http
        .get(format!("{base}/api/v1/cluster"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    let (transport, root_path) = if status.is_success() {
        (SeedTransport::Plain(base.clone()), "/api/v1/ca/root.pem")
    } else if status.is_redirection() {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let https = https_origin(&location).ok_or_else(|| {
            JoinError::Setup(format!(
                "the seed redirected to {location:?}, which is not an https:// address"
            ))
        })?;
        // The plain port's own copy of the root (trust page downloads).
        (SeedTransport::Https(https), "/ca.pem")
    } else {
        return Err(error_of(resp).await);
    };
    let resp = http
        .get(format!("{base}{root_path}"))
        .send()
        .await
        .map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    let root_pem = resp.text().await.map_err(unreachable)?;
    let fp = pem_fingerprint(&root_pem)?;
    if fp != token.fingerprint {
        return Err(JoinError::FingerprintMismatch {
            seed: fingerprint_colons(&fp),
            token: fingerprint_colons(&token.fingerprint),
        });
    }
    Ok((transport, root_pem))
}

/// `https://host:port` of a redirect target.
fn https_origin(location: &str) -> Option<String> {
    let rest = location.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| format!("https://{authority}"))
}

async fn error_of(resp: reqwest::Response) -> JoinError {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    JoinError::Refused {
        code: body["error"]["code"]
            .as_str()
            .map_or_else(|| status.as_u16().to_string(), str::to_owned),
        message: body["error"]["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned),
    }
}

async fn post_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    body: &impl serde::Serialize,
) -> Result<T, JoinError> {
    let resp = http
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(|e| JoinError::Unreachable {
            seed: url.clone(),
            why: e.to_string(),
        })?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    resp.json()
        .await
        .map_err(|e| JoinError::Setup(format!("the seed's answer does not parse: {e}")))
}

/// What a node that ran (or joined, or was removed) leaves in its data directory. Anything
/// else (a config file kept there, as `conclave dev` does) does not count.
const NODE_STATE: &[&str] = &[
    "log",
    "state",
    "snapshot.bin",
    "REMOVED",
    node_cert::TLS_DIR,
];

/// A joining node starts without state: a data directory that holds Raft state or TLS files
/// belongs to a node that ran (or joined) already.
fn check_data_dir(dir: &Path) -> Result<(), JoinError> {
    for entry in NODE_STATE {
        let p = dir.join(entry);
        if p.exists() {
            return Err(JoinError::Setup(format!(
                "{} exists: this data directory belongs to a node that ran or joined already; a joining node starts with an empty one",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Steps 1 to 3 and the file writes of step 4 (module doc). Nothing is started. `insecure`
/// (`--insecure`) admits a seed that serves plain HTTP only.
pub async fn join(
    config: &Config,
    token_text: &str,
    seed: &str,
    insecure: bool,
) -> Result<Joined, JoinError> {
    let token = JoinToken::parse(token_text).map_err(|e| JoinError::Token(e.0))?;
    check_data_dir(&config.data_dir)?;
    // Refuse a shared data directory before anything is sent to the seed (a missing one is
    // created 0700 when the files are written).
    if config.data_dir.exists() {
        cluster::storage::private_dir::ensure_private_dir(&config.data_dir)
            .map_err(|e| JoinError::Setup(e.to_string()))?;
    }
    let (transport, root_pem) = discover(seed, &token).await?;
    let mut req = JoinRequest {
        token: token.to_text(),
        node_id: Some(config.node_id),
        api_addr: config.advertised_api(),
        cluster_addr: config.advertised_cluster(),
        https_addr: config.advertised_https(),
        csr_pem: None,
    };
    let grant: JoinGrant = match &transport {
        SeedTransport::Plain(base) => {
            if !insecure {
                return Err(JoinError::Setup(format!(
                    "the seed {base} answers in plain HTTP only (no TLS): refusing to join, since a man in the middle could have downgraded it; join through a node with TLS, or pass --insecure (lab only)"
                )));
            }
            if config.tls.is_some() {
                return Err(JoinError::Setup(
                    "the seed serves plain HTTP (no TLS) but this node's config has [tls]; remove it, or join through a node with TLS".into(),
                ));
            }
            tracing::warn!(seed = %base, "THE SEED SERVES PLAIN HTTP: the join request travels unencrypted; the KEK is not transferred (copy it by hand if this node must sign)");
            let grant: JoinGrant =
                post_json(&plain_client(false)?, format!("{base}/api/v1/join"), &req).await?;
            if grant.kek.is_some() {
                // Never accepted over plain HTTP, whatever the seed sends.
                tracing::error!("the seed sent the KEK over plain HTTP; it was discarded");
            }
            grant
        }
        SeedTransport::Https(base) => {
            if config.tls.is_none() {
                return Err(JoinError::Setup(
                    "the seed serves HTTPS: this node's config needs a [tls] section (https_addr) to join it".into(),
                ));
            }
            let (dns, ips) = node_cert::requested_names(config);
            let (key_pem, csr) = node_cert::new_key_and_csr(&dns, &ips)?;
            req.csr_pem = Some(csr);
            let http = node_cert::https_client(&root_pem)?;
            let grant: JoinGrant = post_json(&http, format!("{base}/api/v1/join"), &req).await?;
            write_tls_files(config, &grant, &root_pem, key_pem).await?;
            grant
        }
    };
    if grant.node_id != config.node_id {
        return Err(JoinError::Setup(format!(
            "the seed admitted node {} but this node's config says {}",
            grant.node_id, config.node_id
        )));
    }
    if pem_fingerprint(&grant.root_pem)? != token.fingerprint {
        return Err(JoinError::Setup(
            "the seed answered with another root certificate than the one it presented".into(),
        ));
    }
    if matches!(transport, SeedTransport::Plain(_)) {
        write_root(&config.data_dir, &root_pem)?;
    }
    Ok(Joined {
        node_id: grant.node_id,
        token,
        transport,
        root_pem,
    })
}

/// Only the (public) root on a node without TLS: where tools expect it.
fn write_root(data_dir: &Path, root_pem: &str) -> Result<(), JoinError> {
    let dir = node_cert::tls_dir(data_dir);
    cluster::storage::private_dir::ensure_private_dir(data_dir)
        .map_err(|e| JoinError::Setup(e.to_string()))?;
    cluster::storage::fsutil::create_dir_all_durable(&dir, &mut std::fs::DirBuilder::new())
        .map_err(|e| JoinError::Setup(format!("{}: {e}", dir.display())))?;
    // Atomic like the other TLS files: a torn root would fail every later HTTPS check.
    node_cert::write_atomic(&dir.join(node_cert::ROOT_FILE), root_pem.as_bytes(), 0o644)
        .map_err(|e| JoinError::Setup(e.to_string()))
}

/// The KEK file (0600, or checked equal if one is there) and the sealed key, chain, root, CRLs.
async fn write_tls_files(
    config: &Config,
    grant: &JoinGrant,
    root_pem: &str,
    key_pem: ca::SecretPem,
) -> Result<(), JoinError> {
    let (Some(kek_text), Some(chain_pem)) = (grant.kek.as_deref(), grant.chain_pem.clone()) else {
        return Err(JoinError::Setup(
            "the seed sent no certificate or KEK over HTTPS".into(),
        ));
    };
    let kek = Kek::from_text(kek_text)?;
    let kek_path = config.kek_path();
    let files = NodeFiles {
        key_pem,
        chain_pem,
        root_pem: root_pem.to_owned(),
        crl_pem: grant.crl_pem.clone().unwrap_or_default(),
    };
    let (data_dir, node_id) = (config.data_dir.clone(), config.node_id);
    tokio::task::spawn_blocking(move || -> Result<(), JoinError> {
        match Kek::load(&kek_path) {
            Ok(existing) => {
                if existing.to_text().expose() != kek.to_text().expose() {
                    return Err(JoinError::Setup(format!(
                        "{} holds another cluster's key-encryption key; move it away first",
                        kek_path.display()
                    )));
                }
            }
            Err(_) if !kek_path.exists() => kek.create_file(&kek_path)?,
            Err(e) => return Err(e.into()),
        }
        node_cert::write_node_files(&data_dir, node_id, &kek, &files)?;
        Ok(())
    })
    .await
    .map_err(|e| JoinError::Setup(format!("write task: {e}")))?
}

/// Step 4's last part: once this node's own API answers, ask the seed to add it; retried
/// until the seed says yes, refuses for good, or `COMPLETE_DEADLINE` passes.
async fn complete(config: &Config, joined: &Joined) -> Result<(), JoinError> {
    let (http, base) = match &joined.transport {
        SeedTransport::Plain(b) => (plain_client(false)?, b.clone()),
        SeedTransport::Https(b) => (node_cert::https_client(&joined.root_pem)?, b.clone()),
    };
    let own = format!("http://{}/healthz", config.advertised_api());
    let probe = plain_client(true)?;
    let deadline = tokio::time::Instant::now() + COMPLETE_DEADLINE;
    let mut wait = Duration::from_millis(200);
    let body = JoinComplete {
        token: joined.token.to_text(),
        node_id: joined.node_id,
    };
    loop {
        let up = probe
            .get(&own)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            match post_json::<serde_json::Value>(
                &http,
                format!("{base}/api/v1/join/complete"),
                &body,
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(JoinError::Refused { code, message })
                    if code.starts_with("join_token") || code == "forbidden" =>
                {
                    return Err(JoinError::Refused { code, message });
                }
                Err(e) => tracing::info!(error = %e, "not added yet; retrying"),
            }
        }
        if tokio::time::Instant::now() + wait > deadline {
            return Err(JoinError::Setup(format!(
                "the seed did not add node {} within {} s; add it with `conclavectl node add`",
                joined.node_id,
                COMPLETE_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(COMPLETE_RETRY_MAX);
    }
}

/// `conclave join`: join, then run this node until a signal arrives, with the completion call
/// as a named task that ends when it succeeded, gave up, or the node stops.
pub async fn join_and_run(
    config: Config,
    token_text: &str,
    seed: &str,
    insecure: bool,
) -> anyhow::Result<()> {
    let joined = join(&config, token_text, seed, insecure).await?;
    tracing::info!(node_id = joined.node_id, transport = ?joined.transport, "join token accepted; starting the node");
    let cancel = CancellationToken::new();
    let task = {
        let (config, cancel) = (config.clone(), cancel.clone());
        cluster::spawn_named("join-complete", async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = complete(&config, &joined) => match r {
                    Ok(()) => tracing::info!(node_id = joined.node_id, "joined: this node is a voter of the cluster"),
                    Err(e) => tracing::error!(node_id = joined.node_id, error = %e, "the join did not complete"),
                },
            }
        })
    };
    let result = crate::run::run(config).await;
    cancel.cancel();
    let _ = task.await;
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn seed_addresses_and_redirect_targets() {
        assert_eq!(seed_base("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(seed_base("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(
            https_origin("https://127.0.0.1:8443/api/v1/ca/root.pem").as_deref(),
            Some("https://127.0.0.1:8443")
        );
        assert_eq!(https_origin("http://127.0.0.1:8443/x"), None);
        assert_eq!(https_origin("https:///x"), None);
    }

    #[test]
    fn a_used_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_data_dir(&dir.path().join("new")).is_ok());
        assert!(check_data_dir(dir.path()).is_ok());
        std::fs::write(dir.path().join("conclave.toml"), b"").unwrap();
        assert!(check_data_dir(dir.path()).is_ok());
        std::fs::create_dir(dir.path().join("log")).unwrap();
        assert!(matches!(
            check_data_dir(dir.path()),
            Err(JoinError::Setup(_))
        ));
    }

    #[test]
    fn fingerprints_match_the_ca_format() {
        let fp_hex = fingerprint_hex("AB:CD");
        assert_eq!(fp_hex, "abcd");
        assert_eq!(fingerprint_colons("abcd"), "AB:CD");
    }
}
