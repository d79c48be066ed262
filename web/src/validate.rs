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

/// Unicode general category Cf ("format"), Unicode 15.1: invisible characters that change how
/// the text around them is shown (bidi overrides and isolates, zero-width spaces and joiners,
/// the BOM, interlinear annotation, tags). In a name or title they let one user look like another
/// or make text read backwards (CVE-2021-42574, "Trojan Source"). A table, because the standard
/// library has no general-category lookup and the category changes rarely.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

const ZWJ: char = '\u{200D}';

/// Whether `c` is in general category Cf.
pub fn is_format_char(c: char) -> bool {
    let c = c as u32;
    FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Pictographs that emoji ZWJ sequences join (👩‍💻 is 👩 U+200D 💻).
fn is_pictograph(c: char) -> bool {
    matches!(c as u32, 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x1F000..=0x1FAFF)
}

/// Refuses control characters (except those in `allowed`) and format characters (Cf) in
/// user-visible text, naming the first one found. A zero-width joiner is allowed only inside an
/// emoji sequence, between two pictographs (U+FE0F, a variation selector, is not Cf and may sit
/// before it).
fn visible_text(what: &str, s: &str, allowed: &[char]) -> Result<(), ApiError> {
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let control = c.is_control() && !allowed.contains(&c);
        let joins_emoji = c == ZWJ
            && i > 0
            && chars.get(i + 1).is_some_and(|&n| is_pictograph(n))
            && chars[..i]
                .iter()
                .rev()
                .find(|&&p| p != '\u{FE0F}')
                .is_some_and(|&p| is_pictograph(p));
        if control || (is_format_char(c) && !joins_emoji) {
            let kind = if control {
                "a control"
            } else {
                "an invisible formatting"
            };
            return Err(ApiError::InvalidRequest(format!(
                "{what} must not contain control or invisible formatting characters (bidi \
                 overrides, zero-width characters); character {} is {kind} character U+{:04X}",
                i + 1,
                c as u32
            )));
        }
    }
    Ok(())
}

pub fn title(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 64 {
        return Err(ApiError::InvalidRequest(
            "title must be at most 64 characters".into(),
        ));
    }
    visible_text("title", s, &[])
}

/// A topic may span lines (`\n`); no other control character.
pub fn topic(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 250 {
        return Err(ApiError::InvalidRequest(
            "topic must be at most 250 characters".into(),
        ));
    }
    visible_text("topic", s, &['\n'])
}

pub fn display_name(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 64 {
        return Err(ApiError::InvalidRequest(
            "display name must be at most 64 characters".into(),
        ));
    }
    visible_text("display name", s, &[])
}

pub fn emoji(s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > 32 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::InvalidRequest(
            "emoji must be 1 to 32 bytes without spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// The length rule of a new password (the rest of the policy is `password_policy::check`).
pub fn password(s: &str) -> Result<(), ApiError> {
    crate::password_policy::check_length(s)
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
#[allow(clippy::unwrap_used)]
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
        assert!(password("12345678901").is_err());
        assert!(password("123456789012").is_ok());
    }

    #[test]
    fn names_titles_and_topics_refuse_format_and_control_characters() {
        for bad in [
            "admin\u{202E}nimda", // right-to-left override
            "ali\u{200B}ce",      // zero-width space
            "\u{FEFF}bob",        // byte order mark
            "a\u{2066}b\u{2069}", // isolates
            "soft\u{00AD}hyphen", // soft hyphen
            "tag\u{E0041}",       // tag character
            "lone\u{200D}joiner", // ZWJ outside an emoji sequence
            "bell\u{7}",          // control
            "new\nline",
        ] {
            assert!(display_name(bad).is_err(), "{bad:?}");
            assert!(title(bad).is_err(), "{bad:?}");
        }
        assert!(topic("two\nlines").is_ok());
        assert!(topic("over\u{202E}ride").is_err());
        let e = title("ab\u{202E}c").unwrap_err().to_string();
        assert!(e.contains("U+202E") && e.contains("character 3"), "{e}");
        for good in [
            "Alice Ünïcödé",
            "日本語チャンネル",
            "עברית",
            "مرحبا",
            "dev 👩\u{200D}💻",
            "❤\u{FE0F}\u{200D}🔥 team",
            "",
        ] {
            assert!(display_name(good).is_ok(), "{good:?}");
            assert!(title(good).is_ok(), "{good:?}");
            assert!(topic(good).is_ok(), "{good:?}");
        }
    }
}
