//! Build script shared by `node` (`conclave`) and `ops` (`conclavectl`): exports
//! `BUILD_GIT_COMMIT`, the commit the binary is built from, for `--version`. Not a `CONCLAVE_`
//! name: cargo also puts it into the environment of `cargo test`/`run`, and the node refuses
//! `CONCLAVE_*` variables that name no config field.
//!
//! The value is `git rev-parse --short=12 HEAD`, plus `-dirty` when tracked files differ from
//! that commit, or `unknown` outside a git checkout (a source tarball) or without git. It must
//! never fail the build: a binary without a known commit is still a working binary.
//!
//! Cargo reruns it when HEAD, the branch it points to, packed refs or the index change (a
//! commit, checkout, reset or `git add`); an edit that touches none of them keeps the previous
//! dirty flag until one does.

// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from("."), std::path::PathBuf::from);
    let commit = match git(&dir, &["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            // Untracked files do not count (like `git describe --dirty`): build outputs and
            // scratch files are not part of what was built.
            let dirty = git(&dir, &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            // `--git-path` resolves inside a linked worktree too (its HEAD is per worktree,
            // refs and packed-refs are shared).
            let mut watched = vec![
                "HEAD".to_owned(),
                "index".to_owned(),
                "packed-refs".to_owned(),
            ];
            if let Some(head_ref) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                watched.push(head_ref);
            }
            for name in watched {
                if let Some(path) = git(&dir, &["rev-parse", "--git-path", &name]) {
                    let path = if Path::new(&path).is_absolute() {
                        std::path::PathBuf::from(path)
                    } else {
                        dir.join(path)
                    };
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            if dirty { format!("{hash}-dirty") } else { hash }
        }
        _ => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
}
