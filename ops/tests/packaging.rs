//! What ops/dist ships about `conclavectl`: `--version` names the release, the commit (as git
//! says it) and the protocol version; the hidden `generate` subcommand writes completions that
//! parse and man pages for every subcommand. Tools that may be missing (git, bash, groff) skip
//! their check with a printed reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

const BIN: &str = env!("CARGO_BIN_EXE_conclavectl");

#[path = "../../build-support/packaging_checks.rs"]
mod packaging_checks;

use packaging_checks::{check_man_renders, check_shell_parses, generate};

#[test]
fn version_names_release_commit_and_protocol_version() {
    packaging_checks::check_version_line(
        BIN,
        "conclavectl",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_MANIFEST_DIR"),
        &format!("protocol version {}", api::PROTOCOL_VERSION),
    );
}

#[test]
fn generated_completions_parse_and_man_pages_cover_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let completions = dir.path().join("completions");
    generate(BIN, "completions", &completions);
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
    check_shell_parses("bash", &bash);

    let man = dir.path().join("man");
    generate(BIN, "man", &man);
    for page in [
        "conclavectl.1",
        "conclavectl-status.1",
        "conclavectl-node-join-token.1",
        "conclavectl-check.1",
    ] {
        assert!(man.join(page).is_file(), "{page} written");
    }
    check_man_renders(&man.join("conclavectl-node-join-token.1"));
}
