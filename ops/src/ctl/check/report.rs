//! The check's output: one `PASS`/`FAIL`/`SKIP` line per step, streamed as each step finishes,
//! or one JSON array at the end with `--json`.
//!
//! Owns the line format and the JSON shape (both are what scripts read, so they change only on
//! purpose). Must never decide a verdict: the steps do; this only records what they said.

use std::io::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::super::failure::{Failure, one_line};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Pass,
    Fail,
    Skip,
}

/// One printed step.
#[derive(Debug, Clone, Serialize)]
pub(super) struct StepResult {
    pub(super) step: &'static str,
    pub(super) status: Status,
    pub(super) detail: String,
    /// Milliseconds the step took (for `roundtrip`: from the send until the arrival); absent
    /// for skipped steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
}

impl StepResult {
    pub(super) fn done(
        step: &'static str,
        result: Result<String, String>,
        took: Duration,
    ) -> StepResult {
        let (status, detail) = match result {
            Ok(detail) => (Status::Pass, detail),
            Err(detail) => (Status::Fail, detail),
        };
        StepResult {
            step,
            status,
            detail: one_line(&detail),
            ms: Some(millis(took)),
        }
    }

    pub(super) fn skip(step: &'static str, why: impl Into<String>) -> StepResult {
        StepResult {
            step,
            status: Status::Skip,
            detail: one_line(&why.into()),
            ms: None,
        }
    }

    /// `PASS  dns        chat.corp.lan -> ... via 10.0.0.11:53  4 ms`
    pub(super) fn line(&self) -> String {
        let status = match self.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        let mut line = format!("{status}  {:<9}  {}", self.step, self.detail);
        if let Some(ms) = self.ms {
            line.push_str(&format!("  {ms} ms"));
        }
        line.push('\n');
        line
    }
}

/// Prints each step as it finishes (text), or collects them for one JSON array (`--json`).
pub(super) struct Output {
    json: bool,
    steps: Vec<StepResult>,
}

impl Output {
    pub(super) fn new(json: bool) -> Output {
        Output {
            json,
            steps: Vec::new(),
        }
    }

    pub(super) fn record(&mut self, step: StepResult) {
        if !self.json {
            // Streamed, so an operator watching a slow step sees how far the check got. A
            // closed stdout is noticed (and reported) by `finish`.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(step.line().as_bytes())
                .and_then(|()| stdout.flush());
        }
        self.steps.push(step);
    }

    pub(super) fn finish(&self) -> Result<(), Failure> {
        let text = if self.json {
            let json = serde_json::to_string_pretty(&self.steps)
                .map_err(|e| Failure::local(format_args!("cannot encode result: {e}")))?;
            format!("{json}\n")
        } else {
            String::new()
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::stdout_closed()),
            Err(e) => Err(Failure::local(format_args!("cannot write to stdout: {e}"))),
        }
    }
}

/// Records `failed` and every step that now cannot run as SKIP; returns `failed`.
pub(super) fn fail(
    out: &mut Output,
    failed: StepResult,
    remaining: impl Iterator<Item = &'static str>,
) -> StepResult {
    out.record(failed.clone());
    for step in remaining {
        out.record(StepResult::skip(
            step,
            format!("not run: step {} failed", failed.step),
        ));
    }
    failed
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_aligned_and_skips_have_no_time() {
        let pass = StepResult::done("dns", Ok("a -> b".into()), Duration::from_millis(4));
        assert_eq!(pass.line(), "PASS  dns        a -> b  4 ms\n");
        let skip = StepResult::skip("tls", "cluster serves plain HTTP");
        assert_eq!(skip.line(), "SKIP  tls        cluster serves plain HTTP\n");
        let fail = StepResult::done("roundtrip", Err("x\ny".into()), Duration::ZERO);
        assert_eq!(fail.line(), "FAIL  roundtrip  x y  0 ms\n");
        let json = serde_json::to_value([&pass, &skip]).unwrap_or_default();
        assert_eq!(json[0]["status"], "pass");
        assert_eq!(json[0]["ms"], 4);
        assert!(json[1].get("ms").is_none());
    }
}
