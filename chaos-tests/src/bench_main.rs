//! The shell every benchmark binary's `main` shares: build the tokio runtime the bench asks
//! for, run it, and turn an error into one line on stderr and a failing exit code (what
//! `bench/smoke.sh` and CI check). Owns nothing else; a bench's own set-up (arguments, limits)
//! stays in its binary.

use std::future::Future;
use std::process::ExitCode;

/// Runs `bench` on a runtime with `threads` workers (0 or 1: the current thread only) and
/// reports its outcome as `name: error` on stderr.
pub fn run<F>(name: &str, threads: usize, bench: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `#[tokio::main]` would use: one worker per core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_map_to_exit_codes() {
        assert_eq!(run("t", 1, async { Ok(()) }), ExitCode::SUCCESS);
        assert_eq!(
            run("t", 2, async { Err(anyhow::anyhow!("boom")) }),
            ExitCode::FAILURE
        );
    }
}
