//! The root certificate in the forms the trust page offers: DER (`.crt`, for Windows and Android)
//! and an Apple configuration profile (`.mobileconfig`, for iPhone, iPad and macOS). Pure
//! functions of the root certificate; must never include anything but the public root (the
//! profile is unsigned, so the user checks the fingerprint shown on the trust page).

use super::error::CaError;
use super::x509;

/// The root certificate as DER, served as `application/x-x509-ca-cert` with a `.crt` name.
pub fn root_der(root_cert_pem: &str) -> Result<Vec<u8>, CaError> {
    x509::cert_der(root_cert_pem)
}

/// An unsigned Apple configuration profile with one `com.apple.security.root` payload.
/// UUIDs are derived from the root's fingerprint, so the same root always yields the same
/// profile (re-installing replaces rather than duplicates it) and a new root a new one.
pub fn apple_mobileconfig(root_cert_pem: &str, workspace: &str) -> Result<String, CaError> {
    let der = x509::cert_der(root_cert_pem)?;
    let fingerprint = x509::fingerprint_sha256(&der);
    let profile_uuid = derived_uuid(&fingerprint, "profile");
    let payload_uuid = derived_uuid(&fingerprint, "root-payload");
    let name = xml_escape(&format!("Conclave root CA {workspace}"));
    let ws = xml_escape(workspace);
    let data = x509::base64(&der);
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>PayloadCertificateFileName</key>
			<string>conclave-root.cer</string>
			<key>PayloadContent</key>
			<data>{data}</data>
			<key>PayloadDescription</key>
			<string>Trusts the certificate authority of the Conclave workspace {ws}.</string>
			<key>PayloadDisplayName</key>
			<string>{name}</string>
			<key>PayloadIdentifier</key>
			<string>conclave.ca.root.{payload_uuid}</string>
			<key>PayloadType</key>
			<string>com.apple.security.root</string>
			<key>PayloadUUID</key>
			<string>{payload_uuid}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDescription</key>
	<string>Installs the root certificate of the Conclave workspace {ws}. SHA-256 fingerprint: {fingerprint}</string>
	<key>PayloadDisplayName</key>
	<string>{name}</string>
	<key>PayloadIdentifier</key>
	<string>conclave.ca.{profile_uuid}</string>
	<key>PayloadRemovalDisallowed</key>
	<false/>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{profile_uuid}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#
    ))
}

/// An RFC 9562 version 8 (custom) UUID from SHA-256 of the fingerprint and a label.
fn derived_uuid(fingerprint: &str, label: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("conclave-mobileconfig:{label}:{fingerprint}").as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC variant
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ca::test_support::fixture;

    #[test]
    fn der_matches_pem() {
        let f = fixture();
        let der = root_der(&f.state.root_cert_pem).unwrap();
        assert_eq!(x509::to_pem("CERTIFICATE", &der), f.state.root_cert_pem);
    }

    #[test]
    fn mobileconfig_is_deterministic_and_carries_the_root() {
        let f = fixture();
        let a = apple_mobileconfig(&f.state.root_cert_pem, "chat.corp.lan").unwrap();
        let b = apple_mobileconfig(&f.state.root_cert_pem, "chat.corp.lan").unwrap();
        assert_eq!(a, b);
        assert!(a.contains("<string>com.apple.security.root</string>"));
        let der = root_der(&f.state.root_cert_pem).unwrap();
        assert!(a.contains(&format!("<data>{}</data>", x509::base64(&der))));
        assert!(a.contains(&x509::fingerprint_sha256(&der)));
        // Two distinct, well-formed UUIDs.
        let uuids: Vec<&str> = a
            .lines()
            .filter_map(|l| l.trim().strip_prefix("<string>"))
            .filter_map(|l| l.strip_suffix("</string>"))
            .filter(|l| l.len() == 36 && l.matches('-').count() == 4)
            .collect();
        assert_eq!(uuids.len(), 2, "{uuids:?}");
        assert_ne!(uuids[0], uuids[1]);
        // A different root gives a different profile identity.
        let other = crate::ca::test_support::new_state("chat.corp.lan");
        let c = apple_mobileconfig(&other.0.root_cert_pem, "chat.corp.lan").unwrap();
        assert!(!c.contains(uuids[0]));
    }

    #[test]
    fn mobileconfig_is_well_formed_plist() {
        // plutil does not exist on Linux: check escaping and balanced containers here (the
        // profile was also checked once with Python's plistlib while writing this module).
        let f = fixture();
        let a = apple_mobileconfig(&f.state.root_cert_pem, "a&b.corp.lan").unwrap();
        assert!(a.contains("a&amp;b.corp.lan"));
        assert_eq!(a.matches("<dict>").count(), a.matches("</dict>").count());
        assert_eq!(a.matches("<array>").count(), a.matches("</array>").count());
    }
}
