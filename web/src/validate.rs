//! Input rules for names, addresses, passwords, message bodies and idempotency keys (documented in
//! `docs/api.md`, "Limits"). Pure functions; must never touch state.

use crate::error::ApiError;

pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const MAX_MESSAGES_LIMIT: u32 = 1000;

fn simple_name(kind: &str, s: &str, max: usize, extra: &[char]) -> Result<(), ApiError> {
    let ok_first = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c));
    if s.is_empty() || s.len() > max || !ok_first || !ok_rest {
        let allowed: String = extra.iter().collect();
        return Err(ApiError::InvalidRequest(format!(
            "{kind} must be 1 to {max} characters of a-z, 0-9 and '{allowed}', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A member's advertised address (`api_addr`, `cluster_addr`, `https_addr`): `host:port` with
/// a non-empty host and a port from 1 to 65535. `what` names the field in the message.
pub fn host_port(what: &str, a: &str) -> Result<(), ApiError> {
    let ok = a
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must be host:port, got '{a}'"
        )));
    }
    Ok(())
}

pub fn username(s: &str) -> Result<(), ApiError> {
    simple_name("username", s, 32, &['_', '.', '-'])
}

pub fn channel_name(s: &str) -> Result<(), ApiError> {
    simple_name("channel name", s, 64, &['_', '-'])
}

pub fn title(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "title must be at most 64 characters, without control characters".into(),
        ));
    }
    Ok(())
}

pub fn topic(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 250 || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::InvalidRequest(
            "topic must be at most 250 characters".into(),
        ));
    }
    Ok(())
}

pub fn display_name(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "display name must be at most 64 characters, without control characters".into(),
        ));
    }
    Ok(())
}

pub fn emoji(s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > 32 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::InvalidRequest(
            "emoji must be 1 to 32 bytes without spaces or control characters".into(),
        ));
    }
    Ok(())
}

pub fn password(s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::InvalidRequest(
            "password must be 8 to 128 characters".into(),
        ));
    }
    Ok(())
}

pub fn message_body(s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() {
        return Err(ApiError::InvalidRequest("message body is empty".into()));
    }
    if s.len() > MAX_BODY_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "message body is {} bytes; the limit is {MAX_BODY_BYTES}",
            s.len()
        )));
    }
    Ok(())
}

pub fn client_msg_id(s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if !ok {
        return Err(ApiError::InvalidRequest(
            "client_msg_id must be 1 to 64 characters of A-Z, a-z, 0-9 and '._:-'".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(username("alice").is_ok());
        assert!(username("a.b-c_9").is_ok());
        assert!(username("").is_err());
        assert!(username("Alice").is_err());
        assert!(username("-x").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(channel_name("general").is_ok());
        assert!(channel_name("a/b").is_err());
        assert!(channel_name("a.b").is_err());
    }

    #[test]
    fn bodies_and_ids() {
        assert!(message_body("hi").is_ok());
        assert!(message_body(" \n\t").is_err());
        assert!(message_body(&"x".repeat(MAX_BODY_BYTES)).is_ok());
        assert!(message_body(&"x".repeat(MAX_BODY_BYTES + 1)).is_err());
        assert!(client_msg_id("c-1:2.3_x").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a b").is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
    }
}
