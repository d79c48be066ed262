//! `tls-bench`: what TLS costs a Conclave cluster. Run by hand on a release build when
//! the machine is quiet; CI smoke-runs it at a tiny size
//! (`chaos-tests/bench/smoke.sh`) so it cannot rot:
//!
//! ```text
//! cargo build --release -p node -p chaos-tests
//! $CARGO_TARGET_DIR/release/tls-bench --duration 10s --concurrency 4 --posts 500
//! ```
//!
//! Starts a 3-node cluster with `[tls]` (HTTPS + mutual TLS between nodes) and measures, against
//! node 1's HTTPS port:
//!
//! * **handshakes per second**, `--concurrency` clients in a loop of "connect, TLS handshake,
//!   `GET /healthz`, close": once with session resumption disabled on the client (every
//!   handshake full: certificate chain + ECDSA signature), once with resumption (TLS 1.3
//!   tickets; each client primes its own ticket store first, and resumed handshakes are counted
//!   from rustls's `handshake_kind`);
//! * **message round trip**: `--posts` sequential `POST /api/v1/channels/bench/messages` on one
//!   keep-alive connection (a follower, so the write is forwarded to the leader over the
//!   cluster port), latency percentiles.
//!
//! Then the same round trip against a 3-node cluster without TLS, for the difference.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use chaos_tests::bench_main;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chaos_tests::{ClusterOptions, TestCluster};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
#[command(about = "TLS handshake and round-trip benchmark of a 3-node Conclave cluster")]
struct Args {
    /// Length of each handshake measurement.
    #[arg(long, default_value = "10s", value_parser = chaos_tests::duration_arg::parse)]
    duration: Duration,
    /// Clients handshaking at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Sequential message posts per round-trip measurement.
    #[arg(long, default_value_t = 500)]
    posts: usize,
    /// The `conclave` binary (default: the release build next to this one, or CONCLAVE_BIN).
    #[arg(long)]
    binary: Option<PathBuf>,
}

fn client_config(root_pem: &[u8], resume: bool) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// One connection: TCP, TLS, `GET /healthz`, read to the end. Returns whether it resumed.
async fn one_connection(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &ServerName<'static>,
) -> Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    anyhow::ensure!(buf.starts_with(b"HTTP/1.1 200"), "unexpected answer");
    Ok(tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

struct HandshakeResult {
    per_sec: f64,
    resumed: u64,
    total: u64,
    errors: u64,
}

async fn handshakes(
    addr: SocketAddr,
    root_pem: &[u8],
    resume: bool,
    args: &Args,
) -> Result<HandshakeResult> {
    let name = ServerName::IpAddress(addr.ip().into());
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Each client gets its own config (and ticket store), primed by one connection first.
    let mut connectors = Vec::new();
    for _ in 0..args.concurrency {
        let connector = TlsConnector::from(client_config(root_pem, resume)?);
        one_connection(addr, &connector, &name).await?;
        connectors.push(connector);
    }
    let start = Instant::now();
    let end = start + args.duration;
    for connector in connectors {
        let (done, resumed, errors, name) =
            (done.clone(), resumed.clone(), errors.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match one_connection(addr, &connector, &name).await {
                    Ok(r) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if r {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = done.load(Ordering::Relaxed);
    Ok(HandshakeResult {
        per_sec: total as f64 / elapsed,
        resumed: resumed.load(Ordering::Relaxed),
        total,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Sequential posts through node 2 on one keep-alive connection; latencies in µs, sorted.
async fn round_trips(cluster: &TestCluster, posts: usize, tag: &str) -> Result<Vec<u64>> {
    let base = cluster.url(2);
    let http = cluster.http();
    let token = cluster.admin_token();
    let r = http
        .post(format!("{}/api/v1/channels", cluster.url(1)))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success() || r.status() == 409,
        "create channel: {}",
        r.status()
    );
    let mut lat = Vec::with_capacity(posts);
    for i in 0..posts + 20 {
        let t = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/channels/bench/messages"))
            .bearer_auth(token)
            .json(&serde_json::json!({"body": "x", "client_msg_id": format!("{tag}-{i}")}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "post: {}", r.status());
        r.bytes().await?;
        // The first 20 warm the connection and the batcher up.
        if i >= 20 {
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn bench(args: Args) -> Result<()> {
    let bin = chaos_tests::node::release_binary(args.binary.as_deref())?;
    println!("binary: {}", bin.display());
    let tls = TestCluster::try_start_with(3, ClusterOptions::default().tls().binary(bin.clone()))
        .await
        .context("start the TLS cluster")?;
    let root_pem = std::fs::read(tls.ca_file().context("no root")?)?;
    let addr: SocketAddr = format!("{}:{}", tls.ip(1), chaos_tests::cluster::HTTPS_PORT).parse()?;

    let full = handshakes(addr, &root_pem, false, &args).await?;
    let resumed = handshakes(addr, &root_pem, true, &args).await?;
    let tls_rt = round_trips(&tls, args.posts, "tls").await?;
    drop(tls);

    let plain = TestCluster::try_start_with(3, ClusterOptions::default().binary(bin))
        .await
        .context("start the plain cluster")?;
    let plain_rt = round_trips(&plain, args.posts, "plain").await?;
    drop(plain);

    println!(
        "\nHTTPS handshakes against one node ({} clients, {:?} each, connect + handshake + GET /healthz + close):",
        args.concurrency, args.duration
    );
    for (what, r) in [("full", &full), ("resumed", &resumed)] {
        println!(
            "  {what:8} {:8.0} connections/s  ({} done, {} resumed, {} errors)",
            r.per_sec, r.total, r.resumed, r.errors
        );
    }
    println!(
        "\nmessage round trip (POST through a follower on a keep-alive connection, {} posts):",
        args.posts
    );
    println!("  cluster          p50 ms   p90 ms   p99 ms");
    for (what, l) in [("with TLS+mTLS", &tls_rt), ("without TLS", &plain_rt)] {
        println!(
            "  {what:14} {:8.2} {:8.2} {:8.2}",
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    bench_main::run("tls-bench", 2, bench(args))
}
