//! Generation of `client_msg_id` idempotency keys.
//!
//! Only generates; it must never remember ids (deduplication is the server's job, keyed by
//! `(author, client_msg_id)`).

use rand::RngCore;

/// A fresh random `client_msg_id`: `"c-"` followed by 24 lowercase hex digits (96 random
/// bits, so two posts by the same author never collide by accident). Valid per the API
/// (1 to 64 characters from `[A-Za-z0-9._:-]`).
///
/// Generate the id once per logical message and reuse it for every retry of that message;
/// that is what makes a retried post return the original instead of a copy.
pub fn new_client_msg_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(2 + 2 * bytes.len());
    id.push_str("c-");
    for b in bytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = new_client_msg_id();
        let b = new_client_msg_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 26);
            assert!(id.starts_with("c-"));
            assert!(
                id[2..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }
}
