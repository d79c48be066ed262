//! `conclavectl node join-token`: the `--ttl` syntax and the text shown to the admin.
//!
//! Owns how a token is presented: the token on a line of its own (easy to copy), its expiry
//! and the fingerprint it pins, and the command to run on the new machine. Must never write
//! the token anywhere but stdout.

use ops::JoinTokenCreated;

/// The longest lifetime the server accepts.
const MAX_TTL_SECS: u64 = 7 * 86_400;

/// `90`, `90s`, `30m`, `1h`, `2d` -> seconds (1 s to 7 days).
pub(crate) fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use s, m, h or d")),
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > MAX_TTL_SECS {
        return Err(format!("{s:?} must be between 1s and 7d"));
    }
    Ok(secs)
}

pub(crate) fn render(t: &JoinTokenCreated) -> String {
    format!(
        "{}\n\nsingle-use; expires at unix ms {} (token id {})\npins the cluster root CA {}\non the new machine: CONCLAVE_JOIN_TOKEN=<token> conclave join --config CONFIG --seed NODE:PORT\n",
        t.token, t.expires_ms, t.id, t.fingerprint
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ttl_syntax() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("1s").unwrap(), 1);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        for bad in ["", "0", "8d", "1w", "h", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
