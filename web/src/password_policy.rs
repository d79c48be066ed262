//! The password policy (OWASP ASVS 4.0.3 V2.1): 12 to 128 characters of any Unicode, no
//! composition rules, not one of the 100,000 most common passwords, and not built from the
//! username or the workspace name.
//!
//! Owns the rule and the list (`common_passwords.txt`, compiled into the binary; its header
//! says where it comes from and how to regenerate it). Characters are counted as Unicode scalar
//! values and nothing is normalised or trimmed away: what the user typed is what is hashed.
//! Must never log or return the password itself.

use std::sync::OnceLock;

use crate::error::ApiError;

/// Fewest characters a password may have (ASVS 2.1.1 asks for at least 12).
pub const MIN_CHARS: usize = 12;
/// Most characters a password may have (ASVS 2.1.2 asks that at least 64 be allowed; 128 keeps
/// argon2's input small while allowing any pass phrase).
pub const MAX_CHARS: usize = 128;
/// A username or workspace name shorter than this is not looked for inside the password: a
/// 2- or 3-letter name ("al", "ops") would refuse too many good pass phrases.
pub const MIN_NAME_CHARS: usize = 4;

const LIST: &str = include_str!("common_passwords.txt");

/// The list's entries, sorted by byte, so a lookup is a binary search (no hash set built).
fn common() -> &'static [&'static str] {
    static SORTED: OnceLock<Vec<&'static str>> = OnceLock::new();
    SORTED.get_or_init(|| {
        LIST.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `password` (any case) is on the list of common passwords.
pub fn is_common(password: &str) -> bool {
    common()
        .binary_search(&password.to_lowercase().as_str())
        .is_ok()
}

/// The length rule alone (400 `weak_password`, like the rest of the policy).
pub fn check_length(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(MIN_CHARS..=MAX_CHARS).contains(&n) {
        return Err(ApiError::WeakPassword(format!(
            "password must be {MIN_CHARS} to {MAX_CHARS} characters (it has {n}); a few \
             unrelated words make a good one"
        )));
    }
    Ok(())
}

/// Checks a new password for `username` in `workspace` (the configured workspace domain, e.g.
/// `acme.lan`, when there is one).
pub fn check(username: &str, workspace: Option<&str>, password: &str) -> Result<(), ApiError> {
    check_length(password)?;
    let lower = password.to_lowercase();
    for (what, name) in names(username, workspace) {
        if lower.contains(&name) {
            return Err(ApiError::WeakPassword(format!(
                "the password must not contain the {what}"
            )));
        }
    }
    if is_common(password) {
        return Err(ApiError::WeakPassword(
            "this password is one of the 100,000 most common passwords; choose another".into(),
        ));
    }
    Ok(())
}

/// The names a password must not contain, lower-cased: the username, and the workspace name
/// whole and its organisation label, the one before the last (`acme` of `chat.acme.lan`: the
/// part people build passwords from; `chat` or `lan` alone would refuse too much), each only
/// when at least [`MIN_NAME_CHARS`] long.
fn names(username: &str, workspace: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut push = |what: &'static str, name: &str| {
        let name = name.trim_end_matches('.').to_lowercase();
        if name.chars().count() >= MIN_NAME_CHARS && !out.iter().any(|(_, n)| *n == name) {
            out.push((what, name));
        }
    };
    push("username", username);
    if let Some(w) = workspace {
        push("workspace name", w);
        let labels: Vec<&str> = w.trim_end_matches('.').split('.').collect();
        if labels.len() >= 2 {
            push("workspace name", labels[labels.len() - 2]);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_lower_case_and_no_entry_is_shorter_than_the_minimum() {
        let list = common();
        assert!(list.len() > 700, "{} entries", list.len());
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for p in list {
            assert_eq!(*p, p.to_lowercase(), "{p} is lower case");
        }
        // The file keeps exactly the entries the length rule lets through: if MIN_CHARS changes,
        // this fails until the file is regenerated from the full list (see its header).
        let shortest = list.iter().map(|p| p.chars().count()).min().unwrap();
        assert_eq!(shortest, MIN_CHARS, "regenerate common_passwords.txt");
    }

    #[test]
    fn refuses_common_passwords_in_any_case() {
        assert!(is_common("1qaz2wsx3edc4rfv"));
        assert!(is_common("Password1234"));
        assert!(is_common("QWERTYUIOPASDFGHJKL"));
        assert!(check("alice", None, "qwertyuiopasdfghjkl").is_err());
        assert!(!is_common("correct horse battery staple"));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(check("alice", None, "elevenchars").is_err());
        assert!(check("alice", None, "twelve chars").is_ok());
        // 12 characters, 24 bytes: accepted; 11 such characters: refused.
        assert!(check("alice", None, "ünïcödéünïcö").is_ok());
        assert!(check("alice", None, "ünïcödéünïc").is_err());
        assert!(check("alice", None, &"x".repeat(MAX_CHARS)).is_ok());
        assert!(check("alice", None, &"x".repeat(MAX_CHARS + 1)).is_err());
        // Nothing is trimmed: spaces count.
        assert!(check("alice", None, "  spaced  out").is_ok());
    }

    #[test]
    fn refuses_the_username_and_the_workspace_inside_the_password() {
        let e = check("alice", None, "my name is ALICE ok").unwrap_err();
        assert!(e.to_string().contains("username"), "{e}");
        assert!(check("alice", Some("acme.lan"), "welcome to ACME 2026").is_err());
        assert!(check("alice", Some("chat.acme.lan"), "acme acme acme!").is_err());
        // Generic labels are not looked for: `chat` of `chat.acme.lan`.
        assert!(check("alice", Some("chat.acme.lan"), "let us chat later").is_ok());
        assert!(check("alice", Some("acme.lan"), "acme.lan is home").is_err());
        // Names under four characters are not looked for.
        assert!(check("bob", Some("io.lan"), "bob likes io a lot").is_ok());
        assert!(check("carol", Some("acme.lan"), "an unrelated phrase").is_ok());
    }
}
