//! How the session's task finds a node and gets an authenticated connection to it: wait out
//! the backoff, order the candidates (the failed node last), probe `GET /readyz`, upgrade,
//! `auth`, wait for `hello`.
//!
//! Must never put the token anywhere but the `auth` frame, and never use a node that does not
//! answer `/readyz` with 200.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;

use super::conn::{
    WsConnectOptions, WsMessage, close_info, close_info_from_error, describe, open, ws_url,
};
use super::session::{ConnState, SessionEvent};
use super::state::failover_order;
use crate::error::CloseInfo;
use crate::servers::{display_server, endpoint, normalize_server};
use api::ws::{ClientFrame, ServerFrame};

use super::task::{Candidate, Established, Live, Task, TryFailure, lock};

impl Task {
    /// Connects and authenticates somewhere, waiting between rounds.
    pub(super) async fn establish(&mut self, mut after_failure: bool) -> Established {
        let cancel = self.cancel.clone();
        loop {
            if after_failure {
                let attempt = self.failures;
                self.failures = self.failures.saturating_add(1);
                let delay = self.cfg.backoff.delay(attempt, rand::random::<f64>());
                let _ = self.state.send(ConnState::Reconnecting {
                    attempt: attempt + 1,
                });
                let last_error = lock(&self.shared).last_error.clone().unwrap_or_default();
                self.emit(SessionEvent::Reconnecting {
                    attempt: attempt + 1,
                    delay,
                    last_error,
                });
                if !self.wait_offline(delay).await {
                    return Established::Stop;
                }
            }
            after_failure = true;
            for candidate in self.candidates() {
                let result = tokio::select! {
                    () = cancel.cancelled() => return Established::Stop,
                    result = self.try_node(&candidate) => result,
                };
                match result {
                    Ok(live) => return Established::Live(Box::new(live)),
                    Err(TryFailure::AuthLost(info)) => return Established::AuthLost(info),
                    Err(TryFailure::Failed(error)) => {
                        let mut shared = lock(&self.shared);
                        if !shared.tried.contains(&candidate.base) {
                            shared.tried.push(candidate.base.clone());
                        }
                        shared.last_error = Some(format!("{}: {error}", candidate.base));
                    }
                }
            }
        }
    }

    /// Sleeps `delay` while still taking commands (sends made while disconnected are queued
    /// in order). False if the session is to stop.
    pub(super) async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep_until(until) => return true,
                cmd = self.commands.recv() => match cmd {
                    None => return false,
                    Some(cmd) => self.handle_command(cmd, None),
                },
            }
        }
    }

    /// The nodes to try, in order: the members from `hello` (by id) and the configured
    /// servers, the one that failed last at the end.
    pub(super) fn candidates(&self) -> Vec<Candidate> {
        let mut nodes = self.known_nodes.clone();
        nodes.sort_by_key(|n| n.id);
        let mut list: Vec<Candidate> = Vec::new();
        let secure = self.cfg.secure;
        let bases = nodes
            .iter()
            .filter_map(|n| match (&n.https_addr, secure) {
                (Some(https), _) => Some(format!("https://{https}")),
                (None, false) => Some(n.api_addr.clone()),
                (None, true) => None,
            })
            .filter_map(|addr| normalize_server(&addr).ok())
            .map(|u| display_server(&u))
            .chain(self.cfg.seeds.iter().cloned());
        for base in bases {
            if !list.iter().any(|c| c.base == base) {
                list.push(Candidate { base });
            }
        }
        let failed = self
            .last_node
            .as_ref()
            .and_then(|last| list.iter().position(|c| &c.base == last));
        failover_order(&list, failed)
    }

    /// Probe, upgrade, `auth`, `hello` on one node.
    // Long on purpose: the connect steps in protocol order, each with its own failure.
    pub(super) async fn try_node(&self, candidate: &Candidate) -> Result<Live, TryFailure> {
        let base =
            normalize_server(&candidate.base).map_err(|e| TryFailure::Failed(e.to_string()))?;
        let readyz = endpoint(&base, &["readyz"]);
        match self
            .cfg
            .http
            .get(readyz)
            .timeout(self.cfg.probe_timeout)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 200 => {}
            Ok(r) => {
                return Err(TryFailure::Failed(format!(
                    "not ready (GET /readyz: HTTP {})",
                    r.status().as_u16()
                )));
            }
            Err(e) => {
                if let Some(reason) = crate::tls::certificate_problem(&e) {
                    return Err(TryFailure::Failed(format!(
                        "certificate not trusted: {reason}"
                    )));
                }
                let mut root: &dyn std::error::Error = &e;
                while let Some(source) = root.source() {
                    root = source;
                }
                return Err(TryFailure::Failed(format!("GET /readyz failed: {root}")));
            }
        }

        let url = ws_url(&candidate.base).map_err(|e| TryFailure::Failed(e.to_string()))?;
        let opts = WsConnectOptions {
            connect_timeout: self.cfg.connect_timeout,
            tls: self.cfg.tls.clone(),
            ..WsConnectOptions::default()
        };
        let mut stream = open(&url, &opts)
            .await
            .map_err(|e| TryFailure::Failed(e.to_string()))?;
        let auth = ClientFrame::auth(self.cfg.token.as_str()).to_json();
        stream
            .send(WsMessage::text(auth))
            .await
            .map_err(|e| TryFailure::Failed(format!("sending auth: {}", describe(&e))))?;

        let deadline = Instant::now() + self.cfg.auth_timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(TryFailure::Failed(format!(
                        "no hello within {} ms",
                        self.cfg.auth_timeout.as_millis()
                    )));
                }
                Ok(next) => next,
            };
            let info = match next {
                Some(Ok(WsMessage::Text(text))) => match ServerFrame::decode(&text) {
                    Ok(ServerFrame::Hello(hello)) => {
                        return Ok(Live {
                            stream,
                            hello,
                            base: candidate.base.clone(),
                            url,
                        });
                    }
                    _ => {
                        return Err(TryFailure::Failed(format!(
                            "expected hello, got: {}",
                            text.chars().take(200).collect::<String>()
                        )));
                    }
                },
                Some(Ok(WsMessage::Close(frame))) => close_info(frame.as_ref()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => close_info_from_error(&e),
                None => CloseInfo {
                    code: None,
                    reason: "connection ended before hello".to_owned(),
                },
            };
            return Err(if info.is_auth_loss() {
                TryFailure::AuthLost(info)
            } else {
                TryFailure::Failed(info.to_string())
            });
        }
    }
}
