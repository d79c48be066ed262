//! The Windows side of `conclave service`: registering, starting, stopping and removing the
//! service through the Service Control Manager, and the service process itself (the dispatcher,
//! the control handler and the status the SCM is shown).
//!
//! Owns the SCM conversation. The node is `run::run_until`, unchanged: a Stop, Preshutdown or
//! Shutdown control cancels its stop token, which is the graceful path SIGTERM takes on Unix
//! (a leader hands leadership over first), and the service turns Running only when
//! `service_report` says the node serves, the rule systemd's `READY=1` follows. It must never
//! block in the control handler: the SCM calls it on the dispatcher's thread and waits.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::service::{ServiceCmd, ServiceError};
use crate::service_report::{Manager, Sink};

/// How long the SCM is told a pending start or stop step may take before it counts the service
/// as hung. Progress is shown by raising the checkpoint on every readiness poll (a quarter
/// second), so this only matters if the process stops making progress altogether.
const WAIT_HINT: Duration = Duration::from_secs(30);
/// What the machine's shutdown gives the node to hand over leadership and stop (the unit's
/// TimeoutStopSec): Preshutdown is accepted so that this happens before the network goes.
const PRESHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts after a crash or a failed exit, like the unit's Restart=on-failure, RestartSec=2s.
const RESTART_DELAY: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(250);

/// Service-specific exit codes the SCM records (`sc query` shows them): the node failed, the
/// config could not be loaded, the log file could not be opened.
const EXIT_FAILED: u32 = 1;
const EXIT_CONFIG: u32 = 2;
const EXIT_LOG: u32 = 3;

pub fn dispatch(cmd: ServiceCmd) -> Result<ExitCode, ServiceError> {
    match cmd {
        ServiceCmd::Install {
            config,
            name,
            account,
            log_file,
            manual,
        } => install(config, &name, account, log_file, manual),
        ServiceCmd::Uninstall { name } => uninstall(&name),
        ServiceCmd::Start { name, timeout } => start(&name, Duration::from_secs(timeout)),
        ServiceCmd::Stop { name, timeout } => stop(&name, Duration::from_secs(timeout)),
        ServiceCmd::Status { name } => status(&name),
        ServiceCmd::Run {
            config,
            name,
            log_file,
        } => run_dispatcher(config, name, log_file),
    }
}

/// The SCM's errors as the operator needs them: the three that have a fix of their own by
/// their Win32 code, anything else with the system's message.
fn scm_error(name: &str, e: windows_service::Error) -> ServiceError {
    // ERROR_ACCESS_DENIED, ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_EXISTS,
    // ERROR_SERVICE_MARKED_FOR_DELETE.
    match &e {
        windows_service::Error::Winapi(io) => match io.raw_os_error() {
            Some(5) => ServiceError::AccessDenied,
            Some(1060) => ServiceError::NotInstalled(name.to_owned()),
            Some(1073) => ServiceError::AlreadyInstalled(name.to_owned()),
            Some(1072) => ServiceError::Scm(format!(
                "the service {name:?} is marked for deletion: close the Services console and any `sc` window, then retry"
            )),
            _ => ServiceError::Scm(format!("{io}")),
        },
        other => ServiceError::Scm(other.to_string()),
    }
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, ServiceError> {
    ServiceManager::local_computer(None::<&str>, access).map_err(|e| scm_error("", e))
}

fn open(
    name: &str,
    access: ServiceAccess,
) -> Result<windows_service::service::Service, ServiceError> {
    manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, access)
        .map_err(|e| scm_error(name, e))
}

/// The log file a service writes when none is named: next to its config file.
fn default_log_file(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("conclave.log")
}

/// An absolute path: the SCM starts the service in %SystemRoot%\System32, where a relative one
/// would mean something else.
fn absolute(path: &Path) -> Result<PathBuf, ServiceError> {
    std::path::absolute(path).map_err(|e| ServiceError::Config(format!("{}: {e}", path.display())))
}

fn install(
    config: Option<PathBuf>,
    name: &str,
    account: Option<String>,
    log_file: Option<PathBuf>,
    manual: bool,
) -> Result<ExitCode, ServiceError> {
    let config = absolute(&config.unwrap_or_else(crate::default_config_path))?;
    // The same check `conclave run --validate` makes: a service that cannot start is refused
    // here, with the reason, rather than failing later in a log nobody has opened yet.
    crate::config::Config::load(&config, std::env::vars())
        .map_err(|e| ServiceError::Config(format!("{e}")))?;
    let log_file = absolute(&log_file.unwrap_or_else(|| default_log_file(&config)))?;
    let exe =
        std::env::current_exe().map_err(|e| ServiceError::Scm(format!("current_exe: {e}")))?;
    let info = ServiceInfo {
        name: name.into(),
        display_name: OsString::from(format!("Conclave chat server ({name})")),
        service_type: ServiceType::OWN_PROCESS,
        start_type: match manual {
            true => ServiceStartType::OnDemand,
            false => ServiceStartType::AutoStart,
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: vec![
            "service".into(),
            "run".into(),
            "--config".into(),
            config.clone().into_os_string(),
            "--name".into(),
            name.into(),
            "--log-file".into(),
            log_file.clone().into_os_string(),
        ],
        dependencies: vec![],
        account_name: account.map(OsString::from),
        account_password: None,
    };
    let service = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG | ServiceAccess::DELETE,
        )
        .map_err(|e| scm_error(name, e))?;
    // Settings after creation: a failure leaves no half-configured service behind. An SCM
    // that does not know a setting at all (ERROR_INVALID_LEVEL: Wine's lacks some; every
    // supported Windows has them) gets a warning, not a refusal.
    let settings: [(&str, &dyn Fn() -> windows_service::Result<()>); 4] = [
        ("description", &|| {
            service.set_description(
                "Conclave chat server node: one member of the Raft cluster serving the workspace.",
            )
        }),
        ("restart on failure", &|| {
            service.update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![
                    ServiceAction {
                        action_type: ServiceActionType::Restart,
                        delay: RESTART_DELAY,
                    };
                    3
                ]),
            })
        }),
        // A stop with a non-zero exit code (storage gone, config broken by an edit) restarts
        // too, as Restart=on-failure does, not only a crash.
        ("restart after a failed exit", &|| {
            service.set_failure_actions_on_non_crash_failures(true)
        }),
        ("preshutdown timeout", &|| {
            service.set_preshutdown_timeout(PRESHUTDOWN_TIMEOUT)
        }),
    ];
    for (what, apply) in settings {
        match apply() {
            Ok(()) => {}
            Err(windows_service::Error::Winapi(io)) if io.raw_os_error() == Some(124) => {
                eprintln!(
                    "conclave service: warning: this Service Control Manager does not support the {what} setting; installed without it"
                );
            }
            Err(e) => {
                let _ = service.delete();
                return Err(scm_error(name, e));
            }
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "installed service {name} ({}): conclave run --config {}, logging to {}",
            match manual {
                true => "manual start",
                false => "starts with the machine",
            },
            config.display(),
            log_file.display()
        );
        println!("start it with: conclave service start --name {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Stopped => "stopped",
        ServiceState::StartPending => "starting",
        ServiceState::StopPending => "stopping",
        ServiceState::Running => "running",
        ServiceState::ContinuePending => "resuming",
        ServiceState::PausePending => "pausing",
        ServiceState::Paused => "paused",
    }
}

/// The log file a service was installed with (from its command line), for error messages.
fn installed_log(service: &windows_service::service::Service) -> String {
    let Ok(config) = service.query_config() else {
        return "(unknown)".into();
    };
    let line = config.executable_path.to_string_lossy().into_owned();
    match line.split_once("--log-file ") {
        Some((_, rest)) => rest.trim().trim_matches('"').to_owned(),
        None => "(unknown)".into(),
    }
}

fn exit_code_of(status: &ServiceStatus) -> u32 {
    match status.exit_code {
        ServiceExitCode::Win32(c) | ServiceExitCode::ServiceSpecific(c) => c,
    }
}

/// Polls the service until `done` says so; a `Timeout` naming the last state (and the
/// service's log) when `timeout` passes first.
fn wait_for(
    name: &str,
    service: &windows_service::service::Service,
    timeout: Duration,
    mut done: impl FnMut(&ServiceStatus) -> Result<bool, ServiceError>,
) -> Result<ServiceStatus, ServiceError> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = service.query_status().map_err(|e| scm_error(name, e))?;
        if done(&status)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::Timeout {
                name: name.to_owned(),
                state: state_name(status.current_state),
                waited: timeout,
                log: installed_log(service),
            });
        }
        std::thread::sleep(POLL);
    }
}

fn start(name: &str, timeout: Duration) -> Result<ExitCode, ServiceError> {
    let service = open(
        name,
        ServiceAccess::START | ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    let before = service.query_status().map_err(|e| scm_error(name, e))?;
    if before.current_state == ServiceState::Stopped {
        service.start::<&str>(&[]).map_err(|e| scm_error(name, e))?;
    }
    let status = wait_for(name, &service, timeout, |s| match s.current_state {
        ServiceState::Running => Ok(true),
        ServiceState::Stopped => Err(ServiceError::StoppedDuringStart {
            name: name.to_owned(),
            code: exit_code_of(s),
            log: installed_log(&service),
        }),
        _ => Ok(false),
    })?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "service {name} is running and the node serves (pid {})",
            status.process_id.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stop(name: &str, timeout: Duration) -> Result<ExitCode, ServiceError> {
    let service = open(
        name,
        ServiceAccess::STOP | ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    stop_service(name, &service, timeout)?;
    #[allow(clippy::print_stdout)]
    {
        println!("service {name} is stopped");
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_service(
    name: &str,
    service: &windows_service::service::Service,
    timeout: Duration,
) -> Result<(), ServiceError> {
    let status = service.query_status().map_err(|e| scm_error(name, e))?;
    match status.current_state {
        ServiceState::Stopped => return Ok(()),
        ServiceState::StartPending => {
            return Err(ServiceError::StillStarting {
                name: name.to_owned(),
                pid: status.process_id.unwrap_or_default(),
            });
        }
        ServiceState::StopPending => {}
        _ => {
            service.stop().map_err(|e| scm_error(name, e))?;
        }
    }
    wait_for(name, service, timeout, |s| {
        Ok(s.current_state == ServiceState::Stopped)
    })?;
    Ok(())
}

fn uninstall(name: &str) -> Result<ExitCode, ServiceError> {
    let service = open(
        name,
        ServiceAccess::STOP
            | ServiceAccess::QUERY_STATUS
            | ServiceAccess::QUERY_CONFIG
            | ServiceAccess::DELETE,
    )?;
    stop_service(name, &service, Duration::from_secs(60))?;
    service.delete().map_err(|e| scm_error(name, e))?;
    #[allow(clippy::print_stdout)]
    {
        println!("service {name} removed (the data directory and config are kept)");
    }
    Ok(ExitCode::SUCCESS)
}

fn status(name: &str) -> Result<ExitCode, ServiceError> {
    let service = open(name, ServiceAccess::QUERY_STATUS)?;
    let status = service.query_status().map_err(|e| scm_error(name, e))?;
    #[allow(clippy::print_stdout)]
    {
        match status
            .process_id
            .filter(|_| status.current_state != ServiceState::Stopped)
        {
            Some(pid) => println!("{name}: {} (pid {pid})", state_name(status.current_state)),
            // ERROR_SERVICE_NEVER_STARTED: no exit code to show yet.
            None if exit_code_of(&status) == 1077 => {
                println!(
                    "{name}: {} (not started since boot)",
                    state_name(status.current_state)
                )
            }
            None => println!(
                "{name}: {} (last exit code {})",
                state_name(status.current_state),
                exit_code_of(&status)
            ),
        }
    }
    Ok(match status.current_state {
        ServiceState::Running => ExitCode::SUCCESS,
        _ => ExitCode::from(3),
    })
}

/// What `service run` was started with; the dispatcher calls `service_main` on a thread of
/// its own with the SCM's start arguments only, so this is how the command line reaches it.
struct RunArgs {
    config: PathBuf,
    name: String,
    log_file: PathBuf,
}

static RUN_ARGS: OnceLock<RunArgs> = OnceLock::new();
static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

fn run_dispatcher(
    config: PathBuf,
    name: String,
    log_file: PathBuf,
) -> Result<ExitCode, ServiceError> {
    let service_name = name.clone();
    if RUN_ARGS
        .set(RunArgs {
            config,
            name,
            log_file,
        })
        .is_err()
    {
        return Err(ServiceError::Scm("the service dispatcher ran twice".into()));
    }
    // Blocks until the service has stopped. Fails at once (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
    // when this was not started by the SCM.
    windows_service::service_dispatcher::start(&service_name, ffi_service_main).map_err(|e| {
        ServiceError::Scm(format!(
            "{} (`conclave service run` is what the Service Control Manager starts; in a terminal use `conclave run`)",
            scm_error(&service_name, e)
        ))
    })?;
    match OUTCOME.get() {
        Some(Err(e)) => Err(ServiceError::Scm(e.clone())),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let outcome = match RUN_ARGS.get() {
        Some(args) => serve(args),
        None => Err("service_main without arguments".into()),
    };
    let _ = OUTCOME.set(outcome);
}

/// The status the SCM is shown, shared by the control handler and the readiness report.
struct Scm {
    handle: OnceLock<service_control_handler::ServiceStatusHandle>,
    checkpoint: AtomicU32,
    running: AtomicBool,
    stopping: AtomicBool,
}

impl Scm {
    fn set(&self, state: ServiceState, exit: ServiceExitCode) {
        let Some(handle) = self.handle.get() else {
            return;
        };
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        let status = ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            // A pending service is not sent controls anyway; once it runs it takes Stop and
            // Preshutdown (Shutdown is exclusive with Preshutdown, which comes earlier).
            controls_accepted: match state {
                ServiceState::Running => {
                    ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN
                }
                _ => ServiceControlAccept::empty(),
            },
            exit_code: exit,
            checkpoint: match pending {
                true => self.checkpoint.fetch_add(1, Ordering::SeqCst) + 1,
                false => 0,
            },
            wait_hint: match pending {
                true => WAIT_HINT,
                false => Duration::ZERO,
            },
            process_id: None,
        };
        if let Err(e) = handle.set_service_status(status) {
            tracing::warn!(error = %e, "cannot report the service status to the SCM");
        }
    }

    fn stop_pending(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.checkpoint.store(0, Ordering::SeqCst);
        }
        self.set(ServiceState::StopPending, ServiceExitCode::NO_ERROR);
    }
}

impl Sink for Scm {
    fn ready(&self, _status: &str) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        self.running.store(true, Ordering::SeqCst);
        self.set(ServiceState::Running, ServiceExitCode::NO_ERROR);
    }

    fn status(&self, status: &str) {
        tracing::info!(status, "service status");
    }

    fn still_starting(&self) {
        // After an in-process restart the service stays Running: the SCM has no way back to
        // StartPending, and a restarting node is still the running service.
        if !self.running.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst) {
            self.set(ServiceState::StartPending, ServiceExitCode::NO_ERROR);
        }
    }

    fn stopping(&self) {
        self.stop_pending();
    }

    fn restarting(&self) {}
}

/// The service: reports StartPending, runs the node until a stop control, reports Stopped with
/// the outcome.
fn serve(args: &RunArgs) -> Result<(), String> {
    let scm = Arc::new(Scm {
        handle: OnceLock::new(),
        checkpoint: AtomicU32::new(0),
        running: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let (handler_scm, handler_stop) = (scm.clone(), stop.clone());
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Preshutdown | ServiceControl::Shutdown => {
            tracing::info!(control = ?control, "stop requested by the Service Control Manager");
            handler_scm.stop_pending();
            handler_stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(&args.name, handler)
        .map_err(|e| format!("cannot register the service control handler: {e}"))?;
    let _ = scm.handle.set(handle);
    scm.set(ServiceState::StartPending, ServiceExitCode::NO_ERROR);

    let result = run_node(args, stop, scm.clone());
    let exit = match &result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err((code, e)) => {
            tracing::error!(error = %e, "the service stopped with an error");
            ServiceExitCode::ServiceSpecific(*code)
        }
    };
    scm.set(ServiceState::Stopped, exit);
    result.map_err(|(_, e)| e)
}

fn run_node(args: &RunArgs, stop: CancellationToken, scm: Arc<Scm>) -> Result<(), (u32, String)> {
    let loaded = crate::config::Config::load(&args.config, std::env::vars());
    let (node_id, filter) = match &loaded {
        Ok(cfg) => (Some(cfg.node_id), cfg.log.clone()),
        Err(_) => (None, "info".to_owned()),
    };
    // A service nobody can read the log of is not started: `conclave service start` reports
    // this exit code and the path.
    crate::logging::init_file(node_id, &filter, &args.log_file).map_err(|e| {
        (
            EXIT_LOG,
            format!("cannot open the log file {}: {e}", args.log_file.display()),
        )
    })?;
    let cfg = loaded.map_err(|e| {
        let message = format!("{}: {e}", args.config.display());
        tracing::error!(%message, "cannot load the config");
        (EXIT_CONFIG, message)
    })?;
    tracing::info!(node_id = cfg.node_id, service = %args.name, "starting as a Windows service");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| (EXIT_FAILED, format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(crate::run::run_until(cfg, stop, Manager::new(scm)));
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome.map_err(|e| (EXIT_FAILED, format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_defaults_to_the_config_directory() {
        assert_eq!(
            default_log_file(Path::new(r"C:\ProgramData\Conclave\conclave.toml")),
            PathBuf::from(r"C:\ProgramData\Conclave\conclave.log")
        );
    }
}
