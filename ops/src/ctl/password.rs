//! Reading a password that was not given on the command line or in the environment: one line
//! from stdin, with a prompt on stderr when stdin is a terminal.
//!
//! It must never echo, log or store the password. (Input typed at a terminal is visible:
//! turning echo off would need a terminal crate or unsafe code, neither of which this tool
//! takes on; the prompt says so.)

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use super::failure::Failure;

/// Returns `given`, or one line read from stdin.
pub(crate) fn obtain(given: Option<String>, what: &str) -> Result<String, Failure> {
    if let Some(p) = given {
        return Ok(p);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = write!(std::io::stderr().lock(), "{what} (input is visible): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let n = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format_args!("cannot read {what} from stdin: {e}")))?;
    if n == 0 {
        return Err(Failure::usage(format_args!(
            "no {what} given (use --password, the environment, or one line on stdin)"
        )));
    }
    Ok(strip_line_ending(&line).to_owned())
}

/// Removes exactly one trailing `\n` or `\r\n`; other whitespace may be part of a password.
fn strip_line_ending(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_line_ending_is_removed() {
        assert_eq!(strip_line_ending("secret\n"), "secret");
        assert_eq!(strip_line_ending("secret\r\n"), "secret");
        assert_eq!(strip_line_ending(" sp ace \n"), " sp ace ");
        assert_eq!(strip_line_ending("no-newline"), "no-newline");
    }
}
