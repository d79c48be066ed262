//! `conclave service install|uninstall|start|stop|status`: `conclave run` as a Windows service,
//! managed through the Service Control Manager (the `windows-service` crate, in `win_service`).
//!
//! Owns the command line and its errors on every platform, so `conclave service` on Linux says
//! what to use instead (the package's systemd unit) rather than being an unknown command. It
//! must never reimplement what `run` does: the service runs exactly `run::run_until`, stopped
//! through the same graceful path as SIGTERM (leadership handed over first), and is reported
//! ready by the same rule as systemd's `READY=1` (`service_report`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

/// The service's name when none is given (`sc query Conclave`, `net stop Conclave`).
pub const DEFAULT_NAME: &str = "Conclave";

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Register `conclave run --config CONFIG` as a Windows service that starts with the
    /// machine, restarts after a crash, and logs to a file. Checks the config first. Needs an
    /// elevated (Administrator) prompt; the node must be initialized or joined already.
    Install {
        /// The node's config file [default: %ProgramData%\Conclave\conclave.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// The account the service runs as (e.g. `NT SERVICE\Conclave`, a virtual account);
        /// LocalSystem when omitted. The data directory and KEK must belong to it.
        #[arg(long)]
        account: Option<String>,
        /// The service's log file [default: conclave.log next to the config file].
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Start only when asked (`conclave service start`), not with the machine.
        #[arg(long)]
        manual: bool,
    },
    /// Stop the service if it runs, then remove it (the data directory is kept).
    Uninstall {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Start the service and wait until the node serves (the readiness `/readyz` reports, as
    /// `systemctl start` waits for READY=1); fails with the log file's path if it stops instead.
    Start {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// How long to wait for readiness, in seconds (a node catching up a large history by
        /// snapshot can take minutes).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stop the service gracefully (a leader hands leadership over first) and wait until it
    /// has stopped.
    Stop {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print the service's state and process id. Exit code 0 when it runs (and serves), 3 when
    /// it does not, 4 when no such service is installed.
    Status {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// What the Service Control Manager starts (install writes this command line); not for
    /// use in a terminal, where `conclave run` is the same thing.
    #[command(hide = true)]
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long)]
        log_file: PathBuf,
    },
}

/// Off Windows only `NotWindows` is ever made; the rest are the SCM's.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(windows), allow(dead_code))]
pub enum ServiceError {
    #[error(
        "`conclave service` manages a Windows service; on Linux the package's systemd unit runs the node (systemctl enable --now conclave)"
    )]
    #[cfg_attr(windows, allow(dead_code))]
    NotWindows,
    #[error("no service named {0:?} is installed (conclave service install)")]
    NotInstalled(String),
    #[error(
        "a service named {0:?} is already installed (conclave service uninstall --name {0} first, or pick another --name)"
    )]
    AlreadyInstalled(String),
    #[error(
        "access denied by the Service Control Manager: run this from an elevated (Administrator) prompt"
    )]
    AccessDenied,
    #[error("{0}")]
    Config(String),
    #[error(
        "the service {name:?} stopped instead of becoming ready (exit code {code}); its log: {log}"
    )]
    StoppedDuringStart {
        name: String,
        code: u32,
        log: String,
    },
    #[error("the service {name:?} is still {state} after {waited:?}; its log: {log}")]
    Timeout {
        name: String,
        state: &'static str,
        waited: Duration,
        log: String,
    },
    #[error(
        "the service {name:?} is still starting (pid {pid}) and Windows does not deliver a stop to a starting service: wait for it (conclave service start) or end it with taskkill /pid {pid} /f"
    )]
    StillStarting { name: String, pid: u32 },
    #[error("the Service Control Manager refused: {0}")]
    Scm(String),
}

impl ServiceError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::NotWindows | Self::Config(_) => ExitCode::from(2),
            Self::NotInstalled(_) => ExitCode::from(4),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs one `conclave service` command; prints its outcome. The exit code for `status` says
/// whether the service runs.
pub fn main(cmd: ServiceCmd) -> ExitCode {
    match dispatch(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conclave service: {e}");
            e.exit_code()
        }
    }
}

#[cfg(windows)]
fn dispatch(cmd: ServiceCmd) -> Result<ExitCode, ServiceError> {
    crate::win_service::dispatch(cmd)
}

#[cfg(not(windows))]
fn dispatch(_cmd: ServiceCmd) -> Result<ExitCode, ServiceError> {
    Err(ServiceError::NotWindows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_error_has_its_exit_code() {
        assert_eq!(ServiceError::NotWindows.exit_code(), ExitCode::from(2));
        assert_eq!(
            ServiceError::NotInstalled("Conclave".into()).exit_code(),
            ExitCode::from(4)
        );
        assert_eq!(ServiceError::AccessDenied.exit_code(), ExitCode::FAILURE);
    }

    #[cfg(not(windows))]
    #[test]
    fn on_unix_the_command_points_at_systemd() {
        let err = dispatch(ServiceCmd::Status {
            name: DEFAULT_NAME.into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("systemctl enable --now conclave"));
    }
}
