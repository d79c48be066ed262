//! The OpenAPI description against a live 3-node cluster, with `schemathesis` (PyPI), a
//! third-party API fuzzer, generating the requests from the description alone:
//! - every node serves `/api/v1/openapi.json`, the same document, OpenAPI 3.1;
//! - a positive pass (examples, coverage and fuzzing phases; fixed seed, bounded examples) as
//!   the admin over every operation that cannot destroy the fixture: no 5xx, every status,
//!   content type and body as described;
//! - the fixture-destroying operations with a member's token instead (see `ADMIN_UNSAFE`);
//! - a negative pass (schema-violating requests) as the admin: every request refused
//!   (schemathesis's `negative_data_rejection`), and nothing written: the replicated state is
//!   the same before and after (see `Snapshot`).
//!
//! The cluster has a `workspace`, so the CA routes run against a real CA (without one they
//! answer 503 `ca_unavailable`, which is documented but is a 5xx). Needs `schemathesis`
//! ([`SCHEMATHESIS_VERSION`]; `python3 -m pip install schemathesis==4.32.5`): the command in
//! `$SCHEMATHESIS` (split on spaces: `.ci/run` sets `python3 -m schemathesis.cli`), else
//! `schemathesis` on PATH, else `python3 -m schemathesis.cli`.
//! Without it the test prints why and passes, unless `CHAOS_REQUIRE_SCHEMATHESIS` is set
//! (`.ci/run` sets it), when it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chaos_tests::{ClusterOptions, TestCluster};
use serde_json::Value;

/// The version `.ci/run` installs; another one runs too, with a note (its options may differ).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const MEMBER: &str = "schema-member";
const MEMBER_PASSWORD: &str = "fuzz-pass-phrase-1";
/// Fixed, so a failure reproduces (`--seed`).
const SEED: &str = "20261206";
/// Per operation and phase; with the coverage phase's own cases this keeps the whole test
/// around a minute on two cores.
const MAX_EXAMPLES: &str = "40";
/// The checks of every pass. `negative_data_rejection` joins them in the negative pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";
/// Operations that would destroy the fixture if they succeeded as the admin, which the
/// fuzzer's generated values can make them do: logging the admin's token out; taking away the
/// admin's password or role or disabling it (`PATCH /users/{name}` and
/// `POST /users/{name}/password` with the name `admin`, the admin's own password change);
/// adding or removing cluster members, draining (a drained node 503s `/readyz`); exporting
/// the CA root key (once only, then every later root-key operation is 409); ending sessions
/// (`DELETE /users/admin/sessions` would end the fixture's own token). They run with a
/// member's token instead, which exercises their bodies, refusals and error shapes without the
/// effect; the member's own logout runs last, alone.
const ADMIN_UNSAFE: &str = "^(session\\.(logout|end_own)\
                            |accounts\\.(change_password|update|reset_password|end_all_of_user)\
                            |cluster\\.(add_node|remove_node|drain|undrain)|ca\\.export_root_key)$";
const MEMBER_OPS: &str = "^(session\\.end_own\
                          |accounts\\.(change_password|update|reset_password|end_all_of_user)\
                          |cluster\\.(add_node|remove_node|drain|undrain)|ca\\.export_root_key)$";
/// Drops schemathesis's Content-Type probes of body-less operations from the negative pass:
/// they are valid requests (see the file).
const HOOKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/cluster/api_schema_hooks.py"
);
const QUIET: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_schema_fuzzed_by_schemathesis() {
    let Some(st) = schemathesis() else {
        return;
    };
    let started = Instant::now();
    let opts = ClusterOptions::default().top_level("workspace", "\"schema.test\"");
    let cluster = TestCluster::start_with(3, opts).await;
    let admin = cluster.admin_token().to_owned();

    // Served by every node, the same document.
    let mut served = Vec::new();
    for id in cluster.ids() {
        let resp = cluster
            .http()
            .get(format!("{}/api/v1/openapi.json", cluster.url(id)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET openapi.json on node {id}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "node {id}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("application/json"), "node {id}: {ct}");
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["openapi"].as_str().unwrap_or_default().starts_with("3.1"),
            "node {id}: {}",
            v["openapi"]
        );
        assert!(v["paths"]["/api/v1/channels"]["post"].is_object());
        served.push(text);
    }
    assert!(
        served.windows(2).all(|w| w[0] == w[1]),
        "nodes serve different descriptions"
    );
    let work = logs_dir();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let spec = work.join("openapi.json");
    std::fs::write(&spec, &served[0]).unwrap();
    // schemathesis's default list of answers to invalid data leaves out 413, which is the right
    // answer to a JSON body over the API's size limit (a fuzzed 16 KiB string field can make
    // one): accepted here like the other refusals.
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        "[checks.negative_data_rejection]\n\
         expected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \
         \"413\", \"415\", \"422\", \"428\", \"429\", \"5xx\"]\n",
    )
    .unwrap();

    cluster
        .client(1)
        .create_user(MEMBER, MEMBER_PASSWORD, ops::Role::Member)
        .await
        .unwrap_or_else(|e| panic!("create {MEMBER}: {e}"));
    let member = cluster
        .login_client(1, MEMBER, MEMBER_PASSWORD)
        .await
        .token()
        .unwrap_or_default()
        .to_owned();

    let base = cluster.url(1);
    let run = |name: &'static str, token: &str, hooks: Option<&'static str>, extra: Vec<String>| {
        let mut args: Vec<String> = vec![
            "--config-file".into(),
            config.display().to_string(),
            "run".into(),
            spec.display().to_string(),
            "--url".into(),
            base.clone(),
            "--header".into(),
            format!("Authorization: Bearer {token}"),
            "--seed".into(),
            SEED.into(),
            "--max-examples".into(),
            MAX_EXAMPLES.into(),
            // One worker: with two, CPython 3.11's parser can fail inside Hypothesis
            // ("AST constructor recursion depth mismatch"), an error of the tool itself.
            "--workers".into(),
            "1".into(),
            "--request-timeout".into(),
            "20".into(),
            "--generation-database".into(),
            "none".into(),
            "--no-shrink".into(),
            "--no-color".into(),
            "--phases".into(),
            "examples,coverage,fuzzing".into(),
            "--suppress-health-check".into(),
            "all".into(),
        ];
        // Every request and answer, for reading a failure afterwards.
        args.extend(["--report".into(), "har".into(), "--report-har-path".into()]);
        args.push(work.join(format!("{name}.har")).display().to_string());
        args.extend(extra);
        run_schemathesis(&st, &work, name, hooks, args)
    };

    // 1. Positive and negative data as the admin, every operation but the unsafe ones.
    let t = Instant::now();
    run(
        "admin",
        &admin,
        None,
        vec![
            "--checks".into(),
            CHECKS.into(),
            "--exclude-operation-id-regex".into(),
            ADMIN_UNSAFE.into(),
        ],
    )
    .await;
    eprintln!("admin pass: {:?}", t.elapsed());

    // 2. The unsafe ones as a member; the member's logout last, alone.
    let t = Instant::now();
    run(
        "member",
        &member,
        None,
        vec![
            "--checks".into(),
            CHECKS.into(),
            "--include-operation-id-regex".into(),
            MEMBER_OPS.into(),
        ],
    )
    .await;
    run(
        "member-logout",
        &member,
        None,
        vec![
            "--checks".into(),
            CHECKS.into(),
            "--include-operation-id".into(),
            "session.logout".into(),
        ],
    )
    .await;
    eprintln!("member passes: {:?}", t.elapsed());

    // 3. Nothing written by a refused request: invalid data only, every request refused, and
    // the replicated state unchanged.
    let before = Snapshot::settled(&cluster, &admin).await;
    let t = Instant::now();
    run(
        "negative",
        &admin,
        Some(HOOKS),
        vec![
            "--mode".into(),
            "negative".into(),
            "--checks".into(),
            format!("{CHECKS},negative_data_rejection"),
            "--exclude-operation-id-regex".into(),
            ADMIN_UNSAFE.into(),
        ],
    )
    .await;
    eprintln!("negative pass: {:?}", t.elapsed());
    let after = Snapshot::settled(&cluster, &admin).await;
    before.assert_same(&after);
    eprintln!("api_schema: {:?} in all", started.elapsed());
}

/// Where the description and each pass's output are kept after the test (the cluster's own
/// directory is removed): `$CHAOS_ARTIFACTS/api-schema`, else `<temp dir>/conclave-api-schema`.
fn logs_dir() -> PathBuf {
    std::env::var_os("CHAOS_ARTIFACTS")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("api-schema"))
        .unwrap_or_else(|| std::env::temp_dir().join("conclave-api-schema"))
}

/// The command that runs schemathesis, or `None` (after saying why) when it is not installed
/// and `CHAOS_REQUIRE_SCHEMATHESIS` is not set.
fn schemathesis() -> Option<Vec<String>> {
    let candidates: Vec<Vec<String>> = [
        std::env::var("SCHEMATHESIS")
            .ok()
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .filter(|c: &Vec<String>| !c.is_empty()),
        Some(vec!["schemathesis".to_owned()]),
        Some(vec![
            "python3".to_owned(),
            "-m".to_owned(),
            "schemathesis.cli".to_owned(),
        ]),
    ]
    .into_iter()
    .flatten()
    .collect();
    for cmd in candidates {
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !version.contains(SCHEMATHESIS_VERSION) {
                eprintln!(
                    "note: {version} (the test is written for {SCHEMATHESIS_VERSION}); {cmd:?}"
                );
            }
            return Some(cmd);
        }
    }
    let required = std::env::var("CHAOS_REQUIRE_SCHEMATHESIS").unwrap_or_default();
    if !required.is_empty() && required != "0" {
        panic!(
            "CHAOS_REQUIRE_SCHEMATHESIS is set but schemathesis is not installed \
             (python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION})"
        );
    }
    eprintln!(
        "SKIPPED api_schema test: schemathesis is not installed (python3 -m pip install \
         schemathesis=={SCHEMATHESIS_VERSION}; with CHAOS_REQUIRE_SCHEMATHESIS=1 the test fails \
         instead)"
    );
    None
}

/// Runs one schemathesis pass in `work` (its files stay there); fails the test with its
/// report when it finds anything.
async fn run_schemathesis(
    cmd: &[String],
    work: &Path,
    name: &str,
    hooks: Option<&str>,
    args: Vec<String>,
) {
    let log: PathBuf = work.join(format!("{name}.log"));
    let mut command = tokio::process::Command::new(&cmd[0]);
    if let Some(hooks) = hooks {
        command.env("SCHEMATHESIS_HOOKS", hooks);
    }
    let out = command
        .args(&cmd[1..])
        .args(&args)
        .current_dir(work)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .unwrap_or_else(|_| panic!("schemathesis {name} pass ran over 10 minutes"))
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&log, &text).unwrap();
    if !out.status.success() {
        let tail: String = {
            let chars: Vec<char> = text.chars().collect();
            chars[chars.len().saturating_sub(30_000)..].iter().collect()
        };
        panic!(
            "schemathesis {name} pass failed ({}), log {}:\n{tail}",
            out.status,
            log.display()
        );
    }
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("passed") || l.contains("Test cases"))
        .collect();
    eprintln!("schemathesis {name}: {}", summary.join(" | "));
}

/// What a refused request must not change: the replicated state as reads show it.
///
/// Compared: the user directory (names, display names, roles, disabled), every channel with
/// its members, kind, title, topic, archived flag, last sequence number and last event
/// sequence (`last_ev` counts every channel event: posts, edits, deletions, reactions, pins,
/// member changes, updates), the admin's read markers (in the channel list), DNS records, the
/// CA's certificates and its fingerprint record. The admin made every channel of the fixture
/// (the member only ran the refused operations), so the admin's channel list shows them all.
/// The term must not change (an election would make the comparison meaningless).
///
/// Not compared: the Raft applied index, which is printed. A refusal decided by the state
/// machine at apply time (a message that does not exist for an edit, a deletion or a
/// reaction, a read marker in an unknown channel, joining an archived channel) is an entry in
/// the log that changes nothing; and schemathesis's negative mode sends some valid requests
/// when a location has nothing it can break. So the log may grow while the state must not.
#[derive(Debug, PartialEq)]
struct Snapshot {
    term: u64,
    applied: u64,
    users: Value,
    channels: Value,
    dns: Value,
    certs: Value,
    ca: Value,
}

impl Snapshot {
    /// Once every node has applied the same index and it stayed there for a second.
    async fn settled(cluster: &TestCluster, admin: &str) -> Snapshot {
        let deadline = Instant::now() + QUIET;
        let mut last: Option<(u64, u64)> = None;
        loop {
            let (term, applied) = applied_everywhere(cluster).await;
            if let (Some(a), Some(prev)) = (applied, last)
                && (term, a) == prev
            {
                return Snapshot {
                    term,
                    applied: a,
                    users: get(cluster, admin, "/api/v1/users").await,
                    channels: get(cluster, admin, "/api/v1/channels").await,
                    dns: get(cluster, admin, "/api/v1/dns/records").await,
                    certs: get(cluster, admin, "/api/v1/ca/certs").await,
                    ca: get(cluster, admin, "/api/v1/ca/fingerprint").await,
                };
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle on one applied index within {QUIET:?}"
            );
            last = applied.map(|a| (term, a));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn assert_same(&self, after: &Snapshot) {
        assert_eq!(
            self.term, after.term,
            "a leader election happened during the negative pass; the states cannot be compared"
        );
        assert_eq!(
            self.users, after.users,
            "a refused request changed the users"
        );
        assert_eq!(
            self.channels, after.channels,
            "a refused request changed a channel"
        );
        assert_eq!(self.dns, after.dns, "a refused request changed DNS records");
        assert_eq!(
            self.certs, after.certs,
            "a refused request changed the CA's certificates"
        );
        assert_eq!(self.ca, after.ca, "a refused request changed the CA");
        eprintln!(
            "negative pass: state unchanged; {} Raft entries appended (refusals decided at \
             apply, and valid requests among the negative cases)",
            after.applied.saturating_sub(self.applied)
        );
    }
}

/// The current term and, when every node reports the same applied index, that index.
async fn applied_everywhere(cluster: &TestCluster) -> (u64, Option<u64>) {
    let v = cluster
        .cluster_json(1)
        .await
        .unwrap_or_else(|e| panic!("GET /api/v1/cluster: {e}"));
    let term = v["term"].as_u64().unwrap_or(0);
    let applied: Vec<Option<u64>> = v["nodes"]
        .as_array()
        .map(|n| n.iter().map(|n| n["last_applied"].as_u64()).collect())
        .unwrap_or_default();
    let first = applied.first().copied().flatten();
    let same = applied.len() == 3 && applied.iter().all(|a| *a == first);
    (term, if same { first } else { None })
}

async fn get(cluster: &TestCluster, token: &str, path: &str) -> Value {
    let resp = cluster
        .http()
        .get(format!("{}{path}", cluster.url(1)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}
