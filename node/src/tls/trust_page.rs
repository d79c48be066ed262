//! The HTML trust page of the plain-HTTP port: the workspace, the root's SHA-256 fingerprint,
//! download links, and per-platform install steps.
//!
//! Owns the page's markup. Must never load anything from another host (no fonts, scripts,
//! images or style sheets: the site is air-gapped and the page travels in the clear), never run
//! a script, and never put an interpolated value into the page without HTML-escaping it.

use std::fmt::Write as _;

use super::plain_http::{CRL_FILE, ROOT_DER_FILE, ROOT_PEM_FILE, ROOT_PROFILE_FILE};

/// What the page shows.
pub(super) struct TrustPage {
    pub workspace: String,
    /// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
    /// Where to go once the root is installed, if the request named a usable host.
    pub https_url: Option<String>,
    pub has_crl: bool,
}

/// Escapes text for element content and double- or single-quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:46rem;\
margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1d1d1f}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
code,.fp{font-family:ui-monospace,Menlo,Consolas,monospace}\
.fp{display:block;padding:.75rem;background:#f2f2f5;border-radius:6px;font-size:1.05rem}\
.dl a{display:inline-block;margin:.25rem .5rem .25rem 0;padding:.5rem .9rem;border:1px solid #888;\
border-radius:6px;text-decoration:none}\
pre{background:#f2f2f5;padding:.6rem;border-radius:6px;overflow-x:auto}\
.warn{border-left:4px solid #c60;padding-left:.75rem}";

// Long on purpose: it is the page's HTML template, kept whole so it reads as the page.
pub(super) fn render(page: &TrustPage) -> String {
    let ws = escape(&page.workspace);
    // Line breaks only between byte pairs: a fingerprint wrapped mid-pair is easy to misread.
    let fp = escape(&page.fingerprint).replace(':', ":<wbr>");
    let mut html = String::with_capacity(8 * 1024);
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Trust the Conclave workspace {ws}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Connect securely to {ws}</h1>
<p>This chat workspace uses its own certificate authority. Install its root certificate once on
each device; after that, your browser and the apps trust <code>{ws}</code> over HTTPS.</p>

<h2>1. Check the fingerprint</h2>
<p>The root certificate's SHA-256 fingerprint is:</p>
<p class="fp">{fp}</p>
<p class="warn">This page is sent without encryption, so anyone on the network could have
changed it. Compare the fingerprint above, and the one your device shows after installing, with
the fingerprint your administrator gave you through a channel you already trust (printed by
<code>conclave init</code> and <code>conclavectl ca fingerprint</code>). If they differ, do not
install the certificate.</p>

<h2>2. Download the root certificate</h2>
<p class="dl">
<a href="/ca.crt" download="{ROOT_DER_FILE}">{ROOT_DER_FILE}</a>
<a href="/ca.pem" download="{ROOT_PEM_FILE}">{ROOT_PEM_FILE}</a>
<a href="/ca.mobileconfig" download="{ROOT_PROFILE_FILE}">{ROOT_PROFILE_FILE}</a>
</p>
<p><code>.crt</code> (DER) for Windows, Android and macOS; <code>.pem</code> for Linux and
Firefox; <code>.mobileconfig</code> (an Apple profile) for iPhone, iPad and Mac.</p>

<h2>3. Install it</h2>

<h3>Windows</h3>
<ol>
<li>Open <code>{ROOT_DER_FILE}</code> and choose <em>Install Certificate…</em>.</li>
<li>Choose <em>Local Machine</em> (all users; needs an administrator) or <em>Current User</em>.</li>
<li>Choose <em>Place all certificates in the following store</em>, <em>Browse…</em>,
<em>Trusted Root Certification Authorities</em>, then <em>Finish</em>.</li>
</ol>
<p>Or, in an administrator prompt: <code>certutil -addstore -f Root {ROOT_DER_FILE}</code>.
Check the fingerprint with <code>certutil -hashfile {ROOT_DER_FILE} SHA256</code> (it prints the
same hex digits without colons).</p>

<h3>macOS</h3>
<ol>
<li>Open <code>{ROOT_DER_FILE}</code>; Keychain Access adds it (choose the <em>System</em>
keychain).</li>
<li>Double-click <em>Conclave root CA {ws}</em>, open <em>Trust</em>, and set <em>When using this
certificate</em> to <em>Always Trust</em>.</li>
</ol>
<p>Or in Terminal: <code>sudo security add-trusted-cert -d -r trustRoot -k
/Library/Keychains/System.keychain {ROOT_DER_FILE}</code>. Check the fingerprint with
<code>shasum -a 256 {ROOT_DER_FILE}</code>.</p>

<h3>iPhone and iPad</h3>
<ol>
<li>Open this page in Safari and tap <code>{ROOT_PROFILE_FILE}</code>, then <em>Allow</em>.</li>
<li>Open Settings, tap <em>Profile Downloaded</em> (or General → VPN &amp; Device Management),
then <em>Install</em>. Under <em>More Details</em> the certificate shows its SHA-256
fingerprint: compare it.</li>
<li>Then turn on full trust: Settings → General → About → Certificate Trust Settings → enable
<em>Conclave root CA {ws}</em>. Without this step Safari and apps still refuse the
workspace.</li>
</ol>

<h3>Android</h3>
<ol>
<li>Download <code>{ROOT_DER_FILE}</code>.</li>
<li>Settings → Security (or Security &amp; privacy) → More security settings → Encryption &amp;
credentials → Install a certificate → <em>CA certificate</em> → <em>Install anyway</em>, and
pick the file.</li>
<li>Compare the fingerprint under Trusted credentials → User.</li>
</ol>
<p>Chrome trusts certificates installed this way; other apps trust them only if their developers
allow user-installed authorities.</p>

<h3>Linux and Firefox</h3>
<p>Debian and Ubuntu:</p>
<pre>sudo cp {ROOT_PEM_FILE} /usr/local/share/ca-certificates/conclave-root-ca.crt
sudo update-ca-certificates</pre>
<p>Fedora and RHEL:</p>
<pre>sudo cp {ROOT_PEM_FILE} /etc/pki/ca-trust/source/anchors/
sudo update-ca-trust</pre>
<p>Firefox keeps its own list on every platform: Settings → Privacy &amp; Security →
Certificates → <em>View Certificates…</em> → <em>Authorities</em> → <em>Import…</em>, choose
<code>{ROOT_PEM_FILE}</code> and tick <em>Trust this CA to identify websites</em>.</p>
<p>Check the fingerprint anywhere OpenSSL is installed:</p>
<pre>openssl x509 -in {ROOT_PEM_FILE} -noout -fingerprint -sha256</pre>
"#
    );
    if page.has_crl {
        let _ = write!(
            html,
            r#"
<h2>Revoked certificates</h2>
<p>The list of revoked certificates: <a href="/crl.pem" download="{CRL_FILE}">{CRL_FILE}</a>.</p>
"#
        );
    }
    match &page.https_url {
        Some(url) => {
            let url = escape(url);
            let _ = write!(
                html,
                r#"
<h2>4. Continue</h2>
<p>Once the certificate is installed: <a href="{url}">{url}</a></p>
"#
            );
        }
        None => html.push_str(
            "\n<h2>4. Continue</h2>\n<p>Once the certificate is installed, open this \
             workspace's address again over HTTPS.</p>\n",
        ),
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_interpolated_is_escaped() {
        let page = TrustPage {
            workspace: "<script>alert('x')</script>&\"".into(),
            fingerprint: "<b>AB</b>".into(),
            https_url: Some("https://x.lan/\"><script>".into()),
            has_crl: true,
        };
        let html = render(&page);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>AB"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert!(html.contains("https://x.lan/&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("/crl.pem"));
    }

    #[test]
    fn the_page_has_no_external_resources() {
        let page = TrustPage {
            workspace: "chat.corp.lan".into(),
            fingerprint: "AB:CD".into(),
            https_url: None,
            has_crl: false,
        };
        let html = render(&page);
        for needle in [
            "<script", "src=", "<link", "@import", "url(", "http://", "https://",
        ] {
            assert!(!html.contains(needle), "page contains {needle}");
        }
        assert!(!html.contains("/crl.pem"));
    }
}
