//! `conclave`: the Conclave server binary. Parses arguments, sets up logging and the runtime,
//! and hands over to `run`, `init` or `dev`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Parts of the CA library (node keys and certificates, KEK transfer at join, key import) are
// used by the HTTPS, mTLS and join steps of issue 4, which are not wired in yet.
#[allow(dead_code, unused_imports)]
mod ca;
mod ca_http;
mod ca_service;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod ca_service_tests;
mod config;
mod dev;
mod dns;
mod logging;
mod run;
mod signals;
// HTTPS serving (issue 4) is built and tested standalone first; `run.rs` wires it next, and
// until then nothing in the binary calls it.
#[allow(dead_code, unused_imports)]
mod tls;

#[derive(Parser)]
#[command(name = "conclave", version, about = "Conclave chat server node")]
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
    /// Run a local 3-node cluster (127.0.0.1-3, API port 8080, DNS port 8053) as three processes.
    Dev {
        #[arg(long, default_value = "./conclave-dev")]
        data_dir: PathBuf,
        #[arg(long, env = "CONCLAVE_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// Client API port of every node.
        #[arg(long, default_value_t = 8080)]
        api_port: u16,
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
    let cli = Cli::parse();
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
    let result = match cli.cmd {
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
            runtime.block_on(run::run(cfg))
        }
        Cmd::Init {
            config,
            admin_user,
            admin_password,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(Some(cfg.node_id), &cfg.log);
            let generated = admin_password.is_none();
            runtime
                .block_on(run::init(cfg, &admin_user, admin_password))
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
                })
        }
        Cmd::Dev {
            data_dir,
            admin_password,
            api_port,
            cluster_port,
            dns_port,
            workspace,
        } => {
            logging::init(None, "info");
            let ports = dev::Ports {
                api: api_port,
                cluster: cluster_port,
                dns: dns_port,
            };
            runtime.block_on(dev::dev(data_dir, admin_password, ports, &workspace))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave: {e:#}");
            ExitCode::FAILURE
        }
    }
}
