//! The check's command line made into a [`Plan`]: every usage error is found here, before
//! anything is sent, and the password is obtained (stdin, `CONCLAVE_PASSWORD`, or a prompt).
//!
//! Must never take the password from the command line or print it.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use ops::dns_query;

use super::super::args::CheckArgs;
use super::super::failure::Failure;
use super::{DEFAULT_CHANNEL, Plan};

/// Usage errors, all found before anything is sent.
pub(super) fn validate(args: CheckArgs) -> Result<Plan, Failure> {
    let dns = dns_query::parse_dns_server(&args.dns).map_err(Failure::usage)?;
    let workspace = dns_query::normalize_domain(&args.workspace).map_err(Failure::usage)?;
    if let Some(channel) = &args.channel
        && (channel.is_empty() || channel.chars().any(char::is_control))
    {
        return Err(Failure::usage("--channel needs a channel name"));
    }
    if args.port == Some(0) {
        return Err(Failure::usage("--port must be from 1 to 65535"));
    }
    if args.password_stdin && args.user.is_none() {
        return Err(Failure::usage(
            "--password-stdin needs --user (the password is only used to log in)",
        ));
    }
    let credentials = match args.user {
        Some(user) if user.is_empty() => return Err(Failure::usage("--user needs a user name")),
        Some(user) => {
            let password = obtain_password(&user, args.password_stdin)?;
            Some((user, password))
        }
        None => None,
    };
    Ok(Plan {
        workspace,
        dns,
        credentials,
        channel_given: args.channel.is_some(),
        channel: args.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_owned()),
        port: args.port,
        timeout: Duration::from_secs(args.timeout),
        root: None,
    })
}

/// `--password-stdin`: the first line of stdin; else `CONCLAVE_PASSWORD`; else a prompt when
/// stdin is a terminal. Never a command-line argument: those show up in `ps` and shell history.
fn obtain_password(user: &str, from_stdin: bool) -> Result<String, Failure> {
    if !from_stdin && let Ok(password) = std::env::var("CONCLAVE_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if !from_stdin && !terminal {
        return Err(Failure::usage(format_args!(
            "no password for {user}: set CONCLAVE_PASSWORD or pass --password-stdin"
        )));
    }
    if terminal {
        let _ = write!(
            std::io::stderr().lock(),
            "password for {user} (input is visible): "
        );
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let n = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format_args!("cannot read the password from stdin: {e}")))?;
    if n == 0 {
        return Err(Failure::usage(format_args!(
            "no password for {user} on stdin (expected one line)"
        )));
    }
    // Only the line ending goes; other whitespace may be part of the password.
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}
