//! The password policy (OWASP ASVS 4.0 V2.1): 8 to 128 characters, any characters, no
//! composition rules, not on the shipped list of common passwords, not the username.
//!
//! Owns the rule and the list (`common_passwords.txt`, compiled into the binary). Must never
//! log or return the password itself.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::error::ApiError;

const LIST: &str = include_str!("common_passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        LIST.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Checks a new password for `username`.
pub fn check(username: &str, password: &str) -> Result<(), ApiError> {
    crate::validate::password(password)?;
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return Err(ApiError::WeakPassword(
            "the password must not be the username".into(),
        ));
    }
    if common().contains(lower.as_str()) {
        return Err(ApiError::WeakPassword(
            "this password is on the list of commonly used passwords; choose another".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_common_and_short_and_username() {
        assert!(check("alice", "password").is_err());
        assert!(check("alice", "Password123").is_err());
        assert!(check("alice", "qwertyuiop").is_err());
        assert!(check("alice", "short").is_err());
        assert!(check("alice12345", "ALICE12345").is_err());
        assert!(check("alice", "correct horse battery").is_ok());
        assert!(check("alice", "ünïcödé pässwörd").is_ok());
        assert!(common().len() > 1000);
    }
}
