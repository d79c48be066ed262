//! The seed's side of token-based join: `web::join_api::JoinApi` for this node, i.e. whether
//! it serves the client API over HTTPS and the KEK text to hand to a joining node.
//!
//! Owns the rule that the KEK leaves this node only when the request arrived over HTTPS, which
//! is the case exactly when `[tls]` is configured (the plain port then serves redirects and the
//! trust page only, never `/api/v1/join`). Must never log the KEK or keep a copy of its text.

use std::path::PathBuf;

use web::ca_api::CaApiError;
use web::join_api::JoinApi;

use crate::ca::Kek;

/// What `POST /api/v1/join` needs from this node besides the CA.
pub struct JoinService {
    tls: bool,
    kek_path: PathBuf,
}

impl JoinService {
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            tls: config.tls.is_some(),
            kek_path: config.kek_path(),
        }
    }
}

#[async_trait::async_trait]
impl JoinApi for JoinService {
    fn serves_tls(&self) -> bool {
        self.tls
    }

    async fn kek_text(&self) -> Result<String, CaApiError> {
        if !self.tls {
            return Err(CaApiError::Unavailable(
                "the KEK is only handed out over HTTPS".into(),
            ));
        }
        let path = self.kek_path.clone();
        let kek = tokio::task::spawn_blocking(move || Kek::load(&path))
            .await
            .map_err(|e| CaApiError::Internal(format!("KEK task: {e}")))?
            .map_err(|e| {
                CaApiError::KeyUnavailable(format!(
                    "this node cannot hand out the key-encryption key: {e}"
                ))
            })?;
        Ok(kek.to_text().expose().to_owned())
    }
}
