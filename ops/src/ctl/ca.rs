//! `conclavectl ca ...`: the certificate authority from the operator's side.
//!
//! Owns key generation for `ca issue` (the private key is made here, on the operator's machine,
//! and only the CSR goes to the cluster), the files each command writes and their permissions,
//! and the text output of CA commands. Must never send a private key to a server other than the
//! root key given to `renew-intermediate`, never print a private key, and never overwrite a key
//! file.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use ops::{CertSummary, Client, RootFormat};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType,
};
use serde::Serialize;

use super::args::{CaCommand, RootFormatArg};
use super::failure::{EXIT_OK, Failure};
use super::render;

/// Whether the command needs the saved session (admin commands) or is a public download.
pub(crate) fn needs_session(cmd: &CaCommand) -> bool {
    !matches!(cmd, CaCommand::Fingerprint | CaCommand::Root { .. })
}

// Long on purpose: one short arm per `ca` subcommand, so each maps to its work in one place.
pub(crate) async fn run(client: Client, json: bool, cmd: CaCommand) -> Result<u8, Failure> {
    let out = Output { json };
    match cmd {
        CaCommand::Fingerprint => {
            let fp = client.ca_fingerprint().await?;
            out.emit(&fp, || {
                format!(
                    "root CA SHA-256 fingerprint: {}\nworkspace: {}\nroot key: {}\n",
                    fp.fingerprint,
                    render::sanitize(&fp.workspace),
                    if fp.root_key_online {
                        "held by the cluster (sealed)"
                    } else {
                        "offline"
                    }
                )
            })
        }
        CaCommand::Root { format, out: path } => {
            let format = match format {
                RootFormatArg::Pem => RootFormat::Pem,
                RootFormatArg::Der => RootFormat::Der,
                RootFormatArg::Mobileconfig => RootFormat::Mobileconfig,
            };
            let body = client.ca_root(format).await?;
            write_file(&path, &body)?;
            // Printed so the operator can compare it with what `conclave init` printed: the
            // download may have come over the plain port, where it can be tampered with.
            let fingerprint = ops::root_fingerprint(&body);
            out.emit(
                &serde_json::json!({ "written": path, "fingerprint": fingerprint }),
                || match &fingerprint {
                    Some(fp) => format!(
                        "wrote {}\nroot CA SHA-256 fingerprint: {fp}\n(compare it with the one \
                         `conclave init` printed before trusting this file)\n",
                        path.display()
                    ),
                    None => format!("wrote {}\n", path.display()),
                },
            )
        }
        CaCommand::Init => {
            let fp = client.ca_init().await?;
            out.emit(&fp, || {
                format!(
                    "certificate authority created\nroot CA SHA-256 fingerprint: {}\n",
                    fp.fingerprint
                )
            })
        }
        CaCommand::Issue {
            dns,
            ip,
            days,
            out: dir,
        } => issue(&client, &out, &dns, &ip, days, &dir).await,
        CaCommand::List => {
            let certs = client.ca_list().await?;
            out.emit(&certs, || list_text(&certs))
        }
        CaCommand::Revoke { serial, reason } => {
            let cert = client.ca_revoke(&serial, reason.as_deref()).await?;
            out.emit(&cert, || {
                format!(
                    "revoked {} ({})\n",
                    cert.serial,
                    cert.revoked.as_deref().unwrap_or("unspecified")
                )
            })
        }
        CaCommand::ExportRootKey {
            out: path,
            current_password,
        } => {
            let current = super::password::obtain(current_password, "your current password")?;
            // The file exists (empty, 0600) before the key leaves the cluster, so a local
            // problem (a typo in the path, an existing file, a full disk at open) can never
            // lose the only copy.
            let mut file = create_private(&path)?;
            let pem = match client.ca_export_root_key(&current).await {
                Ok(pem) => pem,
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
            };
            file.write_all(pem.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    Failure::local(format_args!(
                        "the root key left the cluster but writing {} failed: {e}; the key is lost unless the file holds it",
                        path.display()
                    ))
                })?;
            out.emit(&serde_json::json!({ "written": path }), || {
                format!(
                    "root key written to {}; the cluster no longer holds it. Keep it offline; `conclavectl ca renew-intermediate --root-key {}` needs it.\n",
                    path.display(),
                    path.display()
                )
            })
        }
        CaCommand::RenewIntermediate {
            root_key,
            current_password,
        } => {
            let current = super::password::obtain(current_password, "your current password")?;
            let pem = std::fs::read_to_string(&root_key).map_err(|e| {
                Failure::local(format_args!("cannot read {}: {e}", root_key.display()))
            })?;
            let renewed = client.ca_renew_intermediate(&pem, &current).await?;
            out.emit(&renewed, || {
                format!(
                    "issuing CA renewed: serial {}, valid until {}\n",
                    renewed.serial,
                    render_time(renewed.not_after)
                )
            })
        }
    }
}

async fn issue(
    client: &Client,
    out: &Output,
    dns: &[String],
    ips: &[IpAddr],
    days: Option<u32>,
    dir: &Path,
) -> Result<u8, Failure> {
    if dns.is_empty() && ips.is_empty() {
        return Err(Failure::usage(
            "give at least one --dns NAME or --ip ADDRESS",
        ));
    }
    let key_path = dir.join("key.pem");
    if key_path.exists() {
        return Err(Failure::local(format_args!(
            "{} exists; refusing to overwrite a private key (use another --out directory)",
            key_path.display()
        )));
    }
    let (key, csr) = make_csr(dns, ips)?;
    let signed = client.ca_sign(&csr, days).await?;
    let root = client.ca_root(RootFormat::Pem).await?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::local(format_args!("cannot create {}: {e}", dir.display())))?;
    let mut file = create_private(&key_path)?;
    file.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::local(format_args!("cannot write {}: {e}", key_path.display())))?;
    write_file(&dir.join("cert.pem"), signed.cert_pem.as_bytes())?;
    write_file(&dir.join("chain.pem"), signed.chain_pem.as_bytes())?;
    write_file(&dir.join("root.pem"), &root)?;
    out.emit(&signed, || {
        format!(
            "issued serial {} valid until {}\nwrote {}/key.pem (0600), cert.pem, chain.pem (certificate + issuing CA), root.pem\n",
            signed.serial,
            render_time(signed.not_after),
            dir.display()
        )
    })
}

/// A fresh P-256 key and a CSR naming exactly the requested names.
fn make_csr(dns: &[String], ips: &[IpAddr]) -> Result<(KeyPair, String), Failure> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Failure::local(format_args!("cannot generate a key: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ips.first().map(|ip| ip.to_string()))
        .unwrap_or_default();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    for name in dns {
        let name = Ia5String::try_from(name.as_str())
            .map_err(|_| Failure::usage(format_args!("{name:?} is not a DNS name")))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Failure::local(format_args!("cannot build the CSR: {e}")))?;
    Ok((key, csr))
}

/// Creates `path` for a private key: new file only, mode 0600 from the start.
pub(crate) fn create_private(path: &Path) -> Result<File, Failure> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::local(format_args!(
                "{} exists; refusing to overwrite it",
                path.display()
            ))
        } else {
            Failure::local(format_args!("cannot create {}: {e}", path.display()))
        }
    })
}

/// Writes a public file (a certificate), replacing an older one.
fn write_file(path: &Path, body: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, body)
        .map_err(|e| Failure::local(format_args!("cannot write {}: {e}", path.display())))
}

fn render_time(unix: i64) -> String {
    // Unix seconds are shown as such with a UTC calendar date, without a time-zone database.
    let days = unix.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} (unix {unix})")
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn list_text(certs: &[CertSummary]) -> String {
    if certs.is_empty() {
        return "no certificates issued\n".into();
    }
    let mut s = String::new();
    for c in certs {
        let names: Vec<String> = c
            .dns_names
            .iter()
            .chain(c.ips.iter())
            .map(|n| render::sanitize(n))
            .collect();
        let status = match &c.revoked {
            Some(reason) => format!("revoked ({})", render::sanitize(reason)),
            None => "valid".into(),
        };
        s.push_str(&format!(
            "{}  {}  until {}  {}  {}\n",
            c.serial,
            render::sanitize(&c.holder),
            render_time(c.not_after),
            status,
            names.join(",")
        ));
    }
    s
}

struct Output {
    json: bool,
}

impl Output {
    fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<u8, Failure> {
        let text = if self.json {
            let json = serde_json::to_string_pretty(value)
                .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
            format!("{json}\n")
        } else {
            text()
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(EXIT_OK),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
            Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_exactly_the_requested_names() {
        let (_, csr) = make_csr(
            &["wiki.chat.corp.lan".into()],
            &["10.0.0.5".parse().unwrap()],
        )
        .unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(parsed.params.subject_alt_names.len(), 2);
    }

    #[test]
    fn dates_render_in_utc() {
        assert!(render_time(0).starts_with("1970-01-01"));
        assert!(render_time(1_700_000_000).starts_with("2023-11-14"));
    }

    #[test]
    fn private_files_are_new_and_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        drop(create_private(&p).unwrap());
        assert!(create_private(&p).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
