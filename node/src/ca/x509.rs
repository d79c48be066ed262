//! Small X.509 helpers shared by the CA modules: PEM/DER conversion, reading a certificate's
//! serial, validity and public key, random serials, time conversion and fingerprints. Owns no
//! state and holds no secrets; must never sign anything.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::SerialNumber;
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::CaError;

/// The facts we read back from a certificate we hold as PEM.
pub struct CertInfo {
    /// Lower-case hex of the serial's content octets, as stored in [`super::state`].
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// DER SubjectPublicKeyInfo, for key-matches-certificate checks.
    pub spki: Vec<u8>,
}

/// Decode the first `CERTIFICATE` block of a PEM string.
pub fn cert_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| CaError::Parse {
            what: "certificate PEM",
        })?;
    if pem.label != "CERTIFICATE" {
        return Err(CaError::Parse {
            what: "certificate PEM (wrong label)",
        });
    }
    Ok(pem.contents)
}

/// Parse a PEM certificate into the facts the CA keeps.
pub fn cert_info(pem: &str) -> Result<CertInfo, CaError> {
    let der = cert_der(pem)?;
    let (serial, not_before, not_after, spki) = {
        let (_, cert) = X509Certificate::from_der(&der).map_err(|_| CaError::Parse {
            what: "certificate",
        })?;
        let validity = cert.validity();
        (
            hex::encode(cert.raw_serial()),
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
            cert.public_key().raw.to_vec(),
        )
    };
    Ok(CertInfo {
        serial,
        not_before,
        not_after,
        spki,
    })
}

/// A fresh serial: 16 random bytes, top bit cleared (DER integers are signed) and the next bit
/// set, so the encoding is always exactly 16 octets and the hex we store matches what verifiers
/// print. 126 random bits; rcgen's default (derived from the public key) would repeat per key.
pub fn random_serial() -> Result<(SerialNumber, String), CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

/// Parse a stored hex serial back into rcgen's form.
pub fn serial_from_hex(serial: &str) -> Result<SerialNumber, CaError> {
    hex::decode(serial)
        .map(|b| SerialNumber::from_slice(&b))
        .map_err(|_| CaError::UnknownSerial {
            serial: serial.to_owned(),
        })
}

/// Seconds since the Unix epoch (negative before it, which no real clock reports).
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Unix seconds to the time type rcgen wants; out-of-range values are a parse error, not a panic.
pub fn datetime(unix_secs: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix_secs).map_err(|_| CaError::Parse { what: "time" })
}

/// `now + d` in Unix seconds, saturating.
pub fn plus(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// SHA-256 fingerprint of a DER certificate as `AB:CD:...` (upper case, like
/// `openssl x509 -fingerprint -sha256`). This is what operators compare and join tokens embed.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    api::fingerprint::to_colons(digest.as_ref())
}

/// Encode DER as PEM with the given label (64-column base64, LF line ends).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so any chunk boundary is a char boundary.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64 with padding. Small enough to keep here rather than add a crate for it.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn serials_are_16_octets_and_positive() {
        for _ in 0..64 {
            let (s, hex) = random_serial().unwrap();
            let bytes = s.to_bytes();
            assert_eq!(bytes.len(), 16);
            assert_eq!(bytes[0] & 0xc0, 0x40);
            assert_eq!(hex.len(), 32);
        }
    }
}
