//! Acceptance suite: real `conclave` processes, real faults. One integration binary (one link)
//! with a module per scenario; each test starts only the nodes it needs on its own loopback
//! block, so tests are independent and may run in parallel.
//!
//! Needs the server binary: `cargo build -p node` first (or set `CONCLAVE_BIN`); the `ctl`
//! scenarios also need `conclavectl` (`cargo build -p ops`, or set `CONCLAVECTL_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_schema;
mod backup;
mod bad_input;
mod browser;
mod browser_files;
mod browser_install;
mod browser_search;
mod browser_ui;
mod ca;
mod conn_flood;
mod ctl;
mod ctl_chat;
mod ctl_check;
mod ctl_tls;
#[cfg(target_os = "linux")]
mod deb_install;
mod disk_faults;
mod disk_full;
mod dns_faults;
mod dns_fuzz;
mod dns_health;
mod dns_records;
mod dns_util;
mod docker_browser;
mod docker_compose;
mod docker_kill;
mod docker_partition;
mod docker_pause;
mod docker_restart;
mod docker_util;
mod faultfs;
mod files;
mod flood_util;
mod forward_follow;
mod full_restart;
mod handover;
mod healthcheck;
mod join;
mod leader_kill;
mod login_flood;
mod membership;
mod metrics;
mod partition;
mod power_loss;
mod recover;
mod replication;
mod rolling_restart;
mod search;
mod secure_defaults;
mod sessions;
mod snapshot;
mod storage_heal;
mod tls;
#[cfg(target_os = "linux")]
mod unit_privileges;
mod upgrade;
mod util;
#[cfg(unix)]
mod windows_wine;
mod ws_failover;
mod ws_protocol;
mod ws_slow_consumer;
mod ws_util;
