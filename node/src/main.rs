//! `conclave`: the Conclave server binary. Parses arguments, sets up logging and the runtime,
//! and hands over to `run`, `init` or `dev`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod ca;
mod ca_runtime;
mod config;
mod dev;
mod dns;
#[path = "../../build-support/cli_docs.rs"]
mod generate;
mod healthcheck;
mod join;
mod logging;
mod malloc;
mod metrics;
mod node_cert;
mod recover;
mod restore;
mod run;
mod sd_notify;
mod service;
mod service_report;
mod signals;
mod storage_wait;
mod tls;
#[cfg(windows)]
mod win_service;

/// `conclave --version`: the release, the commit it was built from (build-support/git_commit.rs)
/// and the newest command version this binary applies, which decides whether it may join or
/// replace a node in a rolling upgrade (docs/operations.md).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (commit {}, command version {})",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_GIT_COMMIT"),
        cluster::command::COMMAND_VERSION
    )
});

#[derive(Parser)]
#[command(name = "conclave", version = VERSION.as_str(), about = "Conclave chat server node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node from its configuration file until SIGTERM or Ctrl-C.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Only check the configuration and exit.
        #[arg(long)]
        validate: bool,
    },
    /// Create a new cluster on this node (its only voter) with the first admin user, then exit.
    Init {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// Admin password; a random one is generated and printed when omitted.
        #[arg(long, env = "CONCLAVE_ADMIN_PASSWORD")]
        admin_password: Option<String>,
    },
    /// Join a running cluster with a single-use token from `conclavectl node join-token`, then
    /// run like `run`: verifies the seed's CA against the token's fingerprint first, receives
    /// the node certificate and the KEK (over HTTPS only), and is added as learner, then voter.
    Join {
        #[arg(long)]
        config: PathBuf,
        /// The join token (prefer CONCLAVE_JOIN_TOKEN: arguments are visible to other users).
        #[arg(long, env = "CONCLAVE_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Any cluster node's client API address (HOST:PORT; its plain-HTTP port with TLS).
        #[arg(long)]
        seed: String,
        /// Join a seed that serves plain HTTP only (no TLS). Lab only: without it such a seed is
        /// refused, so a man in the middle cannot downgrade the join.
        #[arg(long)]
        insecure: bool,
    },
    /// Get this node's TLS certificate from a running cluster node before its first start
    /// (TLS on): generates the key here, sends only a CSR, writes <data_dir>/tls/. Admin
    /// credentials from CONCLAVE_ADMIN_USER (default admin) and CONCLAVE_ADMIN_PASSWORD.
    Provision {
        #[arg(long)]
        config: PathBuf,
        /// An HTTPS node of the cluster, e.g. https://10.0.0.1:8443.
        #[arg(long)]
        seed: String,
        /// The cluster's root certificate (PEM), checked out of band by its fingerprint.
        #[arg(long)]
        ca_file: PathBuf,
    },
    /// Exit 0 iff this node's `/readyz` (on its plain api_addr; 127.0.0.1 when it listens on
    /// 0.0.0.0) says ready within 2 s; otherwise one line on stderr and exit 1. The container
    /// image's HEALTHCHECK (a scratch image has no curl).
    Healthcheck {
        /// The node's config file (on Windows under %ProgramData%\Conclave by default).
        #[arg(long, default_value_os_t = default_config_path())]
        config: PathBuf,
    },
    /// Make this stopped node the only member of a new cluster with the same state, after its
    /// cluster lost its majority for good (the other nodes must never come back). Prints the
    /// membership it drops and what to do next; keeps the old data dir aside.
    Recover {
        #[arg(long)]
        config: PathBuf,
        /// Required: rewrite the membership to this node alone (like etcd's).
        #[arg(long)]
        force_new_cluster: bool,
        /// Confirms that the other nodes are gone for good (without it, the workspace name must
        /// be typed on a terminal).
        #[arg(long)]
        yes_the_other_nodes_are_gone: bool,
    },
    /// Create the first node of a new cluster from a backup (`conclavectl backup`): same
    /// workspace, CA, users and history; sessions revoked unless --keep-sessions. Needs an
    /// empty data_dir; others join with tokens as usual.
    Restore {
        #[arg(long)]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Read the passphrase from the first line of FILE [default: CONCLAVE_BACKUP_PASSPHRASE].
        #[arg(long, value_name = "FILE", conflicts_with = "identity")]
        passphrase_file: Option<PathBuf>,
        /// Decrypt with this age identity file (a backup made with --recipient).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Keep the backup's login sessions (by default every user logs in again).
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Run the node as a Windows service: install, uninstall, start, stop, status (on Linux,
    /// the package's systemd unit does this).
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// Run a local 3-node cluster (127.0.0.1-3, HTTPS port 8443, plain HTTP port 8080, DNS port
    /// 8053) as three processes.
    Dev {
        #[arg(long, default_value = "./conclave-dev")]
        data_dir: PathBuf,
        #[arg(long, env = "CONCLAVE_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// Plain-HTTP port of every node (the client API itself with --no-tls).
        #[arg(long, default_value_t = 8080)]
        api_port: u16,
        /// HTTPS client API port of every node.
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        /// Serve plain HTTP only, with no TLS between the nodes either.
        #[arg(long)]
        no_tls: bool,
        /// Cluster (Raft) port of every node.
        #[arg(long, default_value_t = 9080)]
        cluster_port: u16,
        /// DNS port of every node (UDP and TCP), answering for the workspace name.
        #[arg(long, default_value_t = 8053)]
        dns_port: u16,
        /// The workspace name (DNS zone) the nodes answer for.
        #[arg(long, default_value = "chat.conclave.test")]
        workspace: String,
    },
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::Config::load(path, std::env::vars()).map_err(|e| {
        eprintln!("conclave: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    malloc::tune();
    let matches = generate::with_generate(Cli::command()).get_matches();
    // Before the owner-only umask: packaging files are meant to be world-readable.
    if let Some(code) = generate::run(&matches, Cli::command()) {
        return code;
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    owner_only_files();
    // One crypto provider for the whole process (ring); a second install returns Err, which
    // is fine: nothing else installs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli_cmd = match cli.cmd {
        // The service process builds its own runtime on the SCM's thread (win_service).
        Cmd::Service { cmd } => return service::main(cmd),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conclave: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli_cmd {
        // Returned above, before the runtime: nothing is left to do here.
        Cmd::Service { .. } => ExitCode::SUCCESS,
        Cmd::Run { config, validate } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if validate {
                eprintln!("conclave: {} is valid", config.display());
                return ExitCode::SUCCESS;
            }
            logging::init(Some(cfg.node_id), &cfg.log);
            finish(runtime.block_on(run::run(cfg)))
        }
        Cmd::Init {
            config,
            admin_user,
            admin_password,
        } => init(&runtime, &config, &admin_user, admin_password),
        Cmd::Join {
            config,
            token,
            seed,
            insecure,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(Some(cfg.node_id), &cfg.log);
            finish(runtime.block_on(join::join_and_run(cfg, &token, &seed, insecure)))
        }
        Cmd::Provision {
            config,
            seed,
            ca_file,
        } => provision(&runtime, &config, &seed, &ca_file),
        Cmd::Recover {
            config,
            force_new_cluster,
            yes_the_other_nodes_are_gone,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !force_new_cluster {
                eprintln!("conclave: recover needs --force-new-cluster (the only mode there is)");
                return ExitCode::from(2);
            }
            logging::init(Some(cfg.node_id), &cfg.log);
            finish(runtime.block_on(recover::force_new_cluster(
                cfg,
                yes_the_other_nodes_are_gone,
            )))
        }
        Cmd::Restore {
            config,
            from,
            passphrase_file,
            identity,
            keep_sessions,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(Some(cfg.node_id), &cfg.log);
            finish(restore(
                &runtime,
                &cfg,
                &from,
                passphrase_file.as_deref(),
                identity.as_deref(),
                keep_sessions,
            ))
        }
        Cmd::Healthcheck { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime.block_on(healthcheck::check(&cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("conclave healthcheck: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Dev {
            data_dir,
            admin_password,
            api_port,
            https_port,
            no_tls,
            cluster_port,
            dns_port,
            workspace,
        } => {
            // The console is for the developer: the banner and what happens to the nodes. Each
            // node logs to its own file; RUST_LOG brings the launcher's own INFO lines back.
            logging::init(None, "warn");
            let ports = dev::Ports {
                api: api_port,
                https: (!no_tls).then_some(https_port),
                cluster: cluster_port,
                dns: dns_port,
            };
            finish(runtime.block_on(dev::dev(data_dir, admin_password, ports, &workspace)))
        }
    }
}

/// `conclave init`: prints the generated password once (it is nowhere else).
fn init(
    runtime: &tokio::runtime::Runtime,
    config: &std::path::Path,
    admin_user: &str,
    admin_password: Option<String>,
) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(Some(cfg.node_id), &cfg.log);
    let generated = admin_password.is_none();
    finish(
        runtime
            .block_on(run::init(cfg, admin_user, admin_password))
            .map(|out| {
                #[allow(clippy::print_stdout)]
                {
                    println!("cluster initialized; admin user: {admin_user}");
                    if generated {
                        println!("admin password: {}", out.password);
                        println!("(shown once; store it safely)");
                    }
                    if let Some(fp) = &out.root_fingerprint {
                        println!("root CA SHA-256 fingerprint: {fp}");
                    }
                }
            }),
    )
}

/// `conclave restore`: the offline part (decrypt, check, seed; the decrypted stream is not
/// `Send`) on this thread, then the node started once on the runtime.
fn restore(
    runtime: &tokio::runtime::Runtime,
    cfg: &config::Config,
    from: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
    identity: Option<&std::path::Path>,
    keep_sessions: bool,
) -> anyhow::Result<()> {
    let key = restore::backup_key(passphrase_file, identity)?;
    let restored = restore::restore_offline(cfg, from, &key, keep_sessions)?;
    let fingerprint = runtime.block_on(restore::finish(cfg, &restored))?;
    restore::print_outcome(cfg, &restored, fingerprint.as_deref());
    Ok(())
}

/// `conclave provision`: the admin's credentials come from the environment, never argv (argv
/// is visible to every user of the machine).
fn provision(
    runtime: &tokio::runtime::Runtime,
    config: &std::path::Path,
    seed: &str,
    ca_file: &std::path::Path,
) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(Some(cfg.node_id), &cfg.log);
    let user = std::env::var("CONCLAVE_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    let Ok(password) = std::env::var("CONCLAVE_ADMIN_PASSWORD") else {
        eprintln!(
            "conclave: set CONCLAVE_ADMIN_PASSWORD (and CONCLAVE_ADMIN_USER unless it is admin)"
        );
        return ExitCode::from(2);
    };
    finish(
        runtime
            .block_on(node_cert::provision(&cfg, seed, ca_file, &user, &password))
            .map(|p| {
                #[allow(clippy::print_stdout)]
                {
                    println!(
                        "node {} certificate {} (valid until unix {}) written to {}",
                        cfg.node_id,
                        p.serial,
                        p.not_after,
                        p.dir.display()
                    );
                }
            })
            .map_err(anyhow::Error::from),
    )
}

/// The default config file: `/etc/conclave/conclave.toml`, or on Windows
/// `%ProgramData%\Conclave\conclave.toml` (where a service keeps machine-wide data; the
/// variable, so a relocated ProgramData is followed, else its standard place).
fn default_config_path() -> PathBuf {
    #[cfg(windows)]
    {
        let base = std::env::var_os("ProgramData")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
        base.join("Conclave").join("conclave.toml")
    }
    #[cfg(not(windows))]
    PathBuf::from("/etc/conclave/conclave.toml")
}

/// Everything this process creates (sled's files, which sled opens with the default mode, the
/// Raft log, TLS files, the logs `dev` writes) is owner-only whatever the caller's umask: new
/// directories 0700, new files 0600 (docs/security.md). The data directory itself is also
/// created 0700 and checked by `ClusterNode::start`, which covers in-process tests too.
#[allow(unsafe_code)]
fn owner_only_files() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail and touches no
    // memory. Called first thing in main, before the runtime starts any thread.
    unsafe {
        libc::umask(0o077);
    }
}

/// One line on stderr for a failure; the exit code says success or failure.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave: {e:#}");
            ExitCode::FAILURE
        }
    }
}
