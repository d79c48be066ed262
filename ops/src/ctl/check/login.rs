//! Step 4, `login`: as `--user` on the first ready node, over HTTPS when the node serves it.
//!
//! Must never print or log the password or the session token, nor say which of user name and
//! password was wrong (the server does not say either).

use ops::{Client, ClientError};

use super::super::render::sanitize;
use super::{Node, Plan};

/// Logs in as `user` on `node`; the error says who refused and why, in the operator's terms.
pub(super) async fn login_step(
    plan: &Plan,
    node: &Node,
    user: &str,
    password: &str,
) -> Result<(Client, String), String> {
    let mut client = Client::new_trusting(vec![node.url()], plan.root.clone())
        .map_err(|e| e.to_string())?
        .with_request_timeout(plan.timeout)
        .with_failover_deadline(plan.timeout);
    match client.login(user, password).await {
        Ok(login) => Ok((
            client,
            format!(
                "logged in as {} ({}) on {}",
                sanitize(&login.username),
                login.role,
                node.label()
            ),
        )),
        // The server does not say which (nor whether the account is disabled): that would
        // tell an attacker which user names exist.
        Err(ClientError::Api {
            status: 401, code, ..
        }) if code == "invalid_credentials" => Err(format!(
            "{} refused the login: wrong user name or password for {} (or the account is disabled)",
            node.label(),
            sanitize(user)
        )),
        Err(e @ ClientError::Throttled { .. }) => {
            Err(format!("{} refused the login: {e}", node.label()))
        }
        Err(ClientError::Unreachable { last_error, .. }) => Err(format!(
            "{} did not answer the login: {}",
            node.label(),
            sanitize(&last_error)
        )),
        Err(e) => Err(format!("{}: {}", node.label(), sanitize(&e.to_string()))),
    }
}
