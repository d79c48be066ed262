//! The hidden `generate` subcommand of `conclave` and `conclavectl`: shell completions (bash,
//! zsh, fish) and man pages (one for the binary, one per subcommand: `conclave-run.1`...)
//! written from the binary's own clap definition, so they can never describe another version.
//!
//! One file compiled into both binaries (`#[path]` in each `main.rs`): the two crates share no
//! library below them that is about command lines, and the code is the same for both. It only
//! writes into the directory it is given; it never touches anything else and never runs as part
//! of a server.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// What `generate` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Generate {
    /// `<bin>.bash`, `_<bin>` (zsh) and `<bin>.fish`.
    Completions,
    /// `<bin>.1` and `<bin>-<subcommand>.1` for every visible subcommand.
    Man,
}

/// Writes `what` for `cmd` into `out` (created if missing) and returns the files written.
pub fn generate(
    what: Generate,
    mut cmd: clap::Command,
    out: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let name = cmd.get_name().to_owned();
    match what {
        Generate::Completions => [Shell::Bash, Shell::Zsh, Shell::Fish]
            .into_iter()
            .map(|shell| clap_complete::generate_to(shell, &mut cmd, &name, out))
            .collect(),
        Generate::Man => {
            clap_mangen::generate_to(cmd, out)?;
            // The pages of this binary, not whatever else the directory holds.
            let prefix = format!("{name}-");
            Ok(list(out)?
                .into_iter()
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "1")
                        && p.file_stem()
                            .and_then(|s| s.to_str())
                            .is_some_and(|s| s == name || s.starts_with(&prefix))
                })
                .collect())
        }
    }
}

fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    files.sort();
    Ok(files)
}
