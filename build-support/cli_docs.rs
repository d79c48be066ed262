//! The hidden `generate` subcommand of `conclave` and `conclavectl`: shell completions (bash,
//! zsh, fish) and man pages (one for the binary, one per subcommand: `conclave-run.1`...)
//! written from the binary's own clap definition, so they can never describe another version.
//! ops/dist/build.sh runs it on the built binaries for the bundle and the .deb.
//!
//! One file compiled into both binaries (`#[path]` in each `main.rs`): the two crates share no
//! library below them that is about command lines, and the code is the same for both. The
//! subcommand is added to the parser only (`with_generate`), never to the definition the files
//! are generated from: clap_complete lists hidden subcommands, and completing `generate` would
//! offer operators a packaging tool. It only writes into the directory it is given.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command};
use clap_complete::Shell;

const NAME: &str = "generate";

/// `cmd` with the hidden `generate <completions|man> --out DIR` subcommand, for parsing.
pub fn with_generate(cmd: Command) -> Command {
    cmd.subcommand(
        Command::new(NAME)
            .hide(true)
            .about("Write shell completions or man pages for this binary into a directory")
            .arg(
                Arg::new("what")
                    .required(true)
                    .value_parser(["completions", "man"]),
            )
            .arg(
                Arg::new("out")
                    .long("out")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

/// When `matches` is the `generate` subcommand: writes the files for `docs` (the binary's
/// definition, without `generate`), prints their paths and returns the exit code.
pub fn run(matches: &ArgMatches, docs: Command) -> Option<ExitCode> {
    let (NAME, m) = matches.subcommand()? else {
        return None;
    };
    let name = docs.get_name().to_owned();
    let (Some(what), Some(out)) = (m.get_one::<String>("what"), m.get_one::<PathBuf>("out")) else {
        return Some(ExitCode::from(2));
    };
    let written = if what == "man" {
        man_pages(docs, out)
    } else {
        completions(docs, out)
    };
    Some(match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: cannot write into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    })
}

/// `<bin>.bash`, `_<bin>` (zsh) and `<bin>.fish`.
fn completions(mut cmd: Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let name = cmd.get_name().to_owned();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, &name, out))
        .collect()
}

/// `<bin>.1` and `<bin>-<subcommand>.1` for every visible subcommand, at every depth.
fn man_pages(cmd: Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let name = cmd.get_name().to_owned();
    clap_mangen::generate_to(cmd, out)?;
    // The pages of this binary, not whatever else the directory holds.
    let prefix = format!("{name}-");
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let ours = path.extension().is_some_and(|e| e == "1")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s == name || s.starts_with(&prefix));
        if ours {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
}
