//! The certificate fingerprint format: how the SHA-256 of a root certificate is written and
//! read, in its two forms.
//!
//! `AB:CD:...` (upper-case hex pairs separated by `:`, like `openssl x509 -fingerprint
//! -sha256`) is what `conclave init`, `conclavectl ca fingerprint` and `GET
//! /api/v1/ca/fingerprint` show and operators compare; 64 lower-case hex digits without colons
//! is what a join token embeds. The hashing itself stays with the crypto (`node`'s CA, `ops`'s
//! TLS); this module must never hash or parse certificates.

/// A digest as `AB:CD:...`.
pub fn to_colons(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a fingerprint in either form (surrounding white space allowed) to the join
/// token's form: lower-case hex without colons.
pub fn to_hex(fingerprint: &str) -> String {
    fingerprint.trim().replace(':', "").to_ascii_lowercase()
}

/// `AB:CD:...` from either form, for messages and comparisons an operator reads.
pub fn colons(fingerprint: &str) -> String {
    let hex = to_hex(fingerprint).to_ascii_uppercase();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Lower-case hex of `bytes` (the token's id and secret are written this way).
pub fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_convert_into_each_other() {
        assert_eq!(to_colons(&[0xab, 0x01, 0xff]), "AB:01:FF");
        assert_eq!(to_hex(" AB:01:FF\n"), "ab01ff");
        assert_eq!(colons("ab01ff"), "AB:01:FF");
        assert_eq!(colons("AB:01:FF"), "AB:01:FF");
        assert_eq!(lower_hex(&[0xab, 0x01]), "ab01");
    }
}
