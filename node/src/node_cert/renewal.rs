//! The `cert-renewal` task: renews the node certificate at two thirds of its life (or at once
//! when it was revoked), swaps it into the HTTPS and cluster ports for new handshakes, records
//! it in the CA state once the cluster can commit, and applies new CRLs to the cluster port.
//!
//! Must never need a quorum to renew (every certificate may have expired while the site was
//! powered off), write the new key in the clear, or drop the key in use before its successor
//! is written.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::PeerTls;
use tokio_util::sync::CancellationToken;

use super::{NodeCertError, NodeFiles, crls_of, new_key_and_csr, write_crl_file, write_node_files};
use crate::ca;
use crate::ca_runtime::CaService;
use crate::tls::CertStore;

/// How often the renewal task looks at the certificate and the CRLs: both are local reads, and
/// a revocation should reach the cluster port within seconds.
const TICK: Duration = Duration::from_secs(1);
/// Longest pause between two attempts after failed renewals.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one attempt to record an issuance in the CA state may take.
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// When to renew: two thirds into the certificate's life. Life is measured from issuance, not
/// from `not_before` (which the CA backdates by minutes for clock skew: with a test lifetime
/// of seconds that would make every certificate due at once), so it is capped by the
/// configured lifetime.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, lifetime: Duration) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
        .min(lifetime);
    not_after - life / 3
}

/// What the renewal task works on.
pub struct Renewal {
    pub data_dir: PathBuf,
    pub node_id: u64,
    pub workspace: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub lifetime: Duration,
    pub service: Arc<CaService>,
    pub certs: Arc<CertStore>,
    pub peer: Arc<PeerTls>,
    /// The material in use (key, chain, root, CRLs).
    pub files: NodeFiles,
}

impl Renewal {
    fn due(&self, now: SystemTime) -> bool {
        let leaf = self.certs.leaf();
        now >= renew_at(leaf.not_before, leaf.not_after, self.lifetime)
    }

    /// Renews now: a new key, signed from the local CA state (no quorum needed), written,
    /// then swapped into both ports. Returns the record to put into the CA state.
    pub async fn renew(&mut self) -> Result<ca::IssuedCert, NodeCertError> {
        let (key_pem, csr) = new_key_and_csr(&self.dns, &self.ips)?;
        let issued = self
            .service
            .sign_own_node_cert(csr, self.dns.clone(), self.ips.clone())
            .await?;
        let (_, state) = self.service.load()?;
        let files = NodeFiles {
            key_pem,
            chain_pem: issued.chain_pem.clone(),
            root_pem: state.root_cert_pem.clone(),
            crl_pem: crls_of(&state),
        };
        let kek = self.service.sealing_kek().await?;
        {
            let (dir, id, f) = (self.data_dir.clone(), self.node_id, files.clone());
            tokio::task::spawn_blocking(move || write_node_files(&dir, id, &kek, &f))
                .await
                .map_err(|e| NodeCertError::Provision(format!("write task: {e}")))??;
        }
        self.certs
            .replace(&files.chain_pem, files.key_pem.expose())?;
        self.peer.update(&files.peer_material(&self.workspace))?;
        self.files = files;
        tracing::info!(
            node_id = self.node_id,
            serial = %issued.record.serial,
            not_after = issued.record.not_after,
            "node certificate renewed; HTTPS and the cluster port use it for new handshakes"
        );
        Ok(issued.record)
    }

    /// Pushes a changed CRL set into the cluster port (and the file read at the next start).
    fn sync_crls(&mut self) -> Result<bool, NodeCertError> {
        let Ok((_, state)) = self.service.load() else {
            return Ok(false);
        };
        let crls = crls_of(&state);
        if crls.is_empty() || crls == self.files.crl_pem {
            return Ok(false);
        }
        let mut next = self.files.clone();
        next.crl_pem = crls;
        self.peer.update(&next.peer_material(&self.workspace))?;
        write_crl_file(&self.data_dir, &next.crl_pem)?;
        self.files = next;
        tracing::info!(
            node_id = self.node_id,
            "new CRLs applied to the cluster port"
        );
        Ok(true)
    }

    /// Whether the CA state says this node's own certificate was revoked: then it renews at
    /// once (with a new key), since revocation means the old key is not to be trusted.
    fn own_cert_revoked(&self) -> bool {
        let serial = self.certs.serial();
        self.service
            .load()
            .is_ok_and(|(_, state)| state.is_revoked(&serial))
    }
}

/// The `cert-renewal` task: renews the node certificate when due (or revoked), retries with
/// backoff, records issuances in the CA state, and applies CRL changes to the cluster port.
pub fn spawn_renewal(
    mut r: Renewal,
    mut pending: Option<ca::IssuedCert>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    cluster::spawn_named("cert-renewal", async move {
        let mut backoff = TICK;
        let mut retry_at = tokio::time::Instant::now();
        loop {
            if let Err(e) = r.sync_crls() {
                tracing::warn!(node_id = r.node_id, error = %e, "cannot apply new CRLs");
            }
            if let Some(record) = pending.clone() {
                let recorded = tokio::select! {
                    _ = cancel.cancelled() => return,
                    res = tokio::time::timeout(RECORD_WAIT, r.service.record_issued(record)) => res,
                };
                match recorded {
                    Ok(Ok(())) => pending = None,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "recording the renewed certificate failed; retrying")
                    }
                    Err(_) => {
                        tracing::debug!("recording the renewed certificate timed out; retrying")
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= retry_at && (r.due(SystemTime::now()) || r.own_cert_revoked()) {
                match r.renew().await {
                    Ok(record) => {
                        pending = Some(record);
                        backoff = TICK;
                    }
                    Err(e) => {
                        tracing::warn!(node_id = r.node_id, error = %e, retry_in_secs = backoff.as_secs(), "node certificate renewal failed");
                        retry_at = now + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_at_two_thirds_of_the_configured_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Backdated 5 minutes, 30 s configured: due 10 s before the end, not at once.
        let nb = t0 - Duration::from_secs(300);
        let na = t0 + Duration::from_secs(30);
        assert_eq!(
            renew_at(nb, na, Duration::from_secs(30)),
            t0 + Duration::from_secs(20)
        );
        // Days: two thirds of the whole validity.
        let na = nb + Duration::from_secs(3 * 86_400);
        assert_eq!(
            renew_at(nb, na, Duration::from_secs(7 * 86_400)),
            nb + Duration::from_secs(2 * 86_400)
        );
    }
}
