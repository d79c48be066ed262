//! What ops/dist ships about `conclavectl`: `--version` names the release, the commit (as git
//! says it) and the protocol version; the hidden `generate` subcommand writes completions that
//! parse and man pages for every subcommand. Tools that may be missing (git, bash, groff) skip
//! their check with a printed reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;

fn conclavectl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclavectl"))
}

/// Runs `program args`; None (with a printed skip) when the program is not installed.
fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP part of this test: {program} is not installed");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

#[test]
fn version_names_release_commit_and_protocol_version() {
    let out = conclavectl().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end();
    let rest = line
        .strip_prefix(&format!(
            "conclavectl {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, rest) = rest.split_once(", ").unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(
        rest,
        format!("protocol version {})", api::PROTOCOL_VERSION),
        "{line:?}"
    );
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    match tool(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
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

#[test]
fn generated_completions_parse_and_man_pages_cover_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let completions = dir.path().join("completions");
    let out = conclavectl()
        .args(["generate", "completions", "--out"])
        .arg(&completions)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["conclavectl.bash", "_conclavectl", "conclavectl.fish"] {
        assert!(completions.join(f).is_file(), "{f} written");
    }
    let bash = completions.join("conclavectl.bash");
    let text = std::fs::read_to_string(&bash).unwrap();
    assert!(
        text.contains("__subcmd__node__subcmd__join__subcmd__token"),
        "nested subcommands complete"
    );
    assert!(
        !text.contains("__subcmd__generate"),
        "the hidden subcommand stays hidden"
    );
    if let Some(check) = tool("bash", &["-n", bash.to_str().unwrap()]) {
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let man = dir.path().join("man");
    let out = conclavectl()
        .args(["generate", "man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "conclavectl.1",
        "conclavectl-status.1",
        "conclavectl-node-join-token.1",
        "conclavectl-check.1",
    ] {
        assert!(man.join(page).is_file(), "{page} written");
    }
    let page = man.join("conclavectl-node-join-token.1");
    if let Some(groff) = tool(
        "groff",
        &["-man", "-Tutf8", "-ww", "-z", page.to_str().unwrap()],
    ) {
        assert!(groff.status.success());
        assert!(
            groff.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
    }
}
