//! Checks the packaging tests of both binaries share (`node/tests/packaging.rs`,
//! `ops/tests/packaging.rs`, included with `#[path]`): the `--version` line, the hidden
//! `generate` subcommand, and the external tools that verify its output. Test code only; the
//! binaries never include it.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `program args`; None (with a printed skip) when the program is not installed.
pub fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP part of this test: {program} is not installed");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

/// `bin --version` is `<name> <version> (commit <git's short hash>[-dirty], <tail>)`, with
/// `unknown` for the commit outside a git checkout. `manifest_dir` is the crate's directory.
pub fn check_version_line(bin: &str, name: &str, version: &str, manifest_dir: &str, tail: &str) {
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end();
    let rest = line
        .strip_prefix(&format!("{name} {version} (commit "))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, rest) = rest.split_once(", ").unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(rest, format!("{tail})"), "{line:?}");
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    match tool(
        "git",
        &["-C", manifest_dir, "rev-parse", "--short=12", "HEAD"],
    ) {
        Some(git) if git.status.success() => {
            assert_eq!(
                hash,
                String::from_utf8_lossy(&git.stdout).trim(),
                "{line:?}"
            );
        }
        _ => assert_eq!(commit, "unknown", "outside git: {line:?}"),
    }
}

/// Runs `bin generate <what> --out <out>`, asserts it succeeded, returns its stdout.
pub fn generate(bin: &str, what: &str, out: &Path) -> String {
    let run = Command::new(bin)
        .args(["generate", what, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

/// `shell -n script` passes, when that shell is installed.
pub fn check_shell_parses(shell: &str, script: &Path) {
    if let Some(check) = tool(shell, &["-n", script.to_str().unwrap()]) {
        assert!(
            check.status.success(),
            "{shell} -n {}: {}",
            script.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

/// groff renders the man page without a single warning (`-ww`: every warning; `-z`: format,
/// discard the output), when groff is installed.
pub fn check_man_renders(page: &Path) {
    if let Some(groff) = tool(
        "groff",
        &["-man", "-Tutf8", "-ww", "-z", page.to_str().unwrap()],
    ) {
        assert!(groff.status.success());
        assert!(
            groff.stderr.is_empty(),
            "groff warns about {}: {}",
            page.display(),
            String::from_utf8_lossy(&groff.stderr)
        );
    }
}
