//! The command line of `conclavectl`, declared with clap's derive API.
//!
//! Only the shape of the command line lives here; nothing in this module talks to a server,
//! touches files or decides exit codes.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Parser, Subcommand, ValueEnum};

/// `conclavectl --version`: the release, the commit it was built from
/// (build-support/git_commit.rs) and the WebSocket protocol version it speaks. Not the
/// cluster's command version, which `conclave --version` prints: this crate talks to nodes over
/// the wire only and does not depend on `cluster`.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (commit {}, protocol version {})",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_GIT_COMMIT"),
        api::PROTOCOL_VERSION
    )
});

/// Operate a Conclave chat cluster.
///
/// Exit codes: 0 ok; 1 the server refused the request; 2 usage error; 3 no server reachable;
/// 4 `status` found the cluster degraded; 5 not logged in.
#[derive(Debug, Parser)]
#[command(name = "conclavectl", version = VERSION.as_str(), propagate_version = true)]
pub(crate) struct Cli {
    /// Server base URL; repeat the option or separate with commas to list several nodes
    /// (give all of them on the same side of the subcommand name).
    /// [default: the servers saved by `login`, else http://127.0.0.1:8080]
    #[arg(
        long = "server",
        global = true,
        env = "CONCLAVE_SERVER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub servers: Vec<String>,

    /// The cluster's root CA certificate (PEM) to check `https://` servers against; get it
    /// with `conclavectl ca root --server http://NODE:8080` and compare its fingerprint with
    /// the one `conclave init` printed.
    #[arg(long, global = true, env = "CONCLAVE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Where the session token is kept.
    /// [default: $HOME/.config/conclave/token, on Windows %APPDATA%\conclave\token]
    #[arg(long, global = true, env = "CONCLAVE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Print raw JSON results instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Log in and save the session token.
    Login {
        #[arg(long)]
        username: String,
        /// Password; if absent (and CONCLAVE_PASSWORD is unset), one line is read from stdin.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The new password to set when the server says this one (set by an admin) must be
        /// changed; if absent (and CONCLAVE_NEW_PASSWORD is unset), the next line of stdin.
        #[arg(long, env = "CONCLAVE_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Revoke the session token on every node and delete the token file.
    Logout,
    /// Show every node of the cluster; exits with 4 if any node is unhealthy or not ready.
    Status,
    /// Manage users (admin only).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Post a message (use `--` before text that starts with '-').
    Send {
        channel: String,
        /// The message; several words are joined with spaces.
        #[arg(required = true)]
        text: Vec<String>,
        /// Idempotency key; re-sending with the same id never posts twice. Random if absent.
        #[arg(long = "id", value_name = "CLIENT_MSG_ID")]
        id: Option<String>,
    },
    /// Upload FILE to a channel as a message, in chunks of 8 MiB. Each chunk is acknowledged
    /// once a majority of nodes has it; when the node dies the upload goes on with the next
    /// chunk on another node.
    Upload {
        #[arg(long)]
        channel: String,
        file: std::path::PathBuf,
        /// Caption posted with the file.
        #[arg(long)]
        message: Option<String>,
        /// The name shown for the file (default: FILE's own name).
        #[arg(long)]
        name: Option<String>,
        /// Idempotency key; re-sending with the same id never posts twice. Random if absent.
        #[arg(long = "id", value_name = "CLIENT_MSG_ID")]
        id: Option<String>,
    },
    /// Download a file by its id into PATH (written to PATH.part, renamed when complete).
    Download {
        file_id: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print messages of a channel (with --json: the message page, or with --follow one JSON
    /// message per line).
    Tail {
        channel: String,
        /// Print messages with a sequence number above SEQ [default: the last LIMIT messages].
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// At most this many messages per request (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Keep polling for new messages until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// Search the messages you can read (newest first; every word must occur, "..." for a
    /// phrase). Matched words are shown between [ and ].
    Search {
        /// The words to find; several words are joined with spaces.
        #[arg(required = true)]
        query: Vec<String>,
        /// Only this channel.
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        /// Only messages by this user.
        #[arg(long, value_name = "USER")]
        from: Option<String>,
        /// At most this many results (1 to 1000; fetched in pages of up to 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Change the cluster membership, or drain a node (admin only).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage the static DNS records of the workspace zone (admin only).
    #[command(subcommand)]
    Dns(DnsCommand),
    /// The built-in certificate authority: download the root, issue certificates for other
    /// LAN services, revoke, take the root key offline.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Chat interactively: one line per message, `/help` for commands. Reads stdin (a terminal
    /// or a pipe); at end of input waits until every sent message is acknowledged (exit 3 if
    /// that takes longer than --ack-timeout).
    Chat {
        /// The channel to start in [default: your first channel].
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        /// Seconds to wait at the end for unacknowledged messages.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        ack_timeout: u64,
        /// Your password, to log in again when the server ends the session (expiry); without
        /// it (and CONCLAVE_PASSWORD unset) the chat asks at the terminal, or exits 5 on a pipe.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Change your own password (revokes your other sessions).
    Passwd {
        /// Current password; if absent (and CONCLAVE_PASSWORD is unset), the first line of
        /// stdin.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current: Option<String>,
        /// New password; if absent (and CONCLAVE_NEW_PASSWORD is unset), the next line of
        /// stdin.
        #[arg(long, env = "CONCLAVE_NEW_PASSWORD", hide_env_values = true)]
        new: Option<String>,
    },
    /// Open (or find) the direct-message channel with one or more users.
    Dm {
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
    /// Check an install end to end: resolve the workspace through a DNS server, probe every
    /// listed node, log in, and time a message from one node to another. One PASS/FAIL/SKIP
    /// line per step; exit 0 only if no step failed (else 1, with the reason on stderr).
    /// `--server` is not used: the nodes come from DNS.
    Check(CheckArgs),
    /// Back up the whole cluster state and every live file's content to an encrypted file
    /// (admin), or check such a file
    /// offline (`backup verify`). The backup is encrypted here, never on a server: give
    /// --passphrase-file, CONCLAVE_BACKUP_PASSPHRASE, or --recipient.
    Backup(BackupArgs),
}

/// `conclavectl backup --out FILE`, or one of its subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// Where to write the backup; it appears only once complete (FILE.partial until then) and
    /// an existing FILE is never overwritten.
    #[arg(long, value_name = "FILE", required = true)]
    pub out: Option<PathBuf>,
    /// Read the passphrase (at least 12 characters) from the first line of FILE; without it
    /// and without --recipient, CONCLAVE_BACKUP_PASSPHRASE is used. Never on the command line.
    #[arg(long, value_name = "FILE", conflicts_with = "recipient")]
    pub passphrase_file: Option<PathBuf>,
    /// Encrypt to this age public key (age1..., from `backup keygen` or age-keygen) instead of
    /// a passphrase; repeat for several.
    #[arg(long, value_name = "AGE1...")]
    pub recipient: Vec<String>,
    /// Include login sessions (without them every user logs in again after a restore).
    #[arg(long)]
    pub sessions: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Check a backup file offline: decrypt it, check every record, every file blob's sha256
    /// and the manifest's checksums and counts, print the manifest. Exits 1 with one line on any damage or a wrong key.
    Verify {
        file: PathBuf,
        /// Read the passphrase from the first line of FILE [default: CONCLAVE_BACKUP_PASSPHRASE].
        #[arg(long, value_name = "FILE", conflicts_with = "identity")]
        passphrase_file: Option<PathBuf>,
        /// An age identity file (for backups made with --recipient).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Create an age identity for `--recipient` backups: writes the secret key to FILE (mode
    /// 0600, never overwritten) and prints the public key (age1...).
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    Admin,
    Member,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user.
    Add {
        username: String,
        /// Password; if absent (and CONCLAVE_NEW_PASSWORD is unset), one line is read from stdin.
        #[arg(long, env = "CONCLAVE_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Disable a user: they cannot log in, and their sessions end on every node.
    Disable {
        username: String,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
    /// Enable a disabled user again.
    Enable {
        username: String,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
    /// End every session of a user on every node (their WebSockets close with 4011).
    EndSessions { username: String },
    /// Set a user's password (revokes all their sessions).
    ResetPassword {
        username: String,
        /// New password; if absent (and CONCLAVE_NEW_PASSWORD is unset), one line is read from
        /// stdin (after the current password, when that is read from stdin too).
        #[arg(long, env = "CONCLAVE_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
    /// Make a user an admin or a member.
    SetRole {
        username: String,
        #[arg(value_enum)]
        role: RoleArg,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelCommand {
    /// Create a channel (you become a member).
    Create {
        name: String,
        /// Only members may read it (add them with the web client or the API).
        #[arg(long)]
        private: bool,
        #[arg(long, value_name = "TEXT")]
        topic: Option<String>,
    },
    /// Archive a channel: it stays readable and refuses new messages.
    Archive { name: String },
    /// Set a channel's topic (several words are joined with spaces; "" clears it).
    Topic {
        name: String,
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Join a channel.
    Join { name: String },
    /// List channels.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Add a running, uninitialized node as a voter.
    Add {
        id: u64,
        /// The node's client API address, e.g. 10.0.0.4:8080.
        #[arg(long)]
        api_addr: String,
        /// The node's cluster (Raft) address, e.g. 10.0.0.4:9080.
        #[arg(long)]
        cluster_addr: String,
    },
    /// Remove a node from the cluster.
    Remove { id: u64 },
    /// Take a node out of DNS answers and `/readyz` while it keeps serving its clients (the
    /// first step of a rolling restart).
    Drain { id: u64 },
    /// Put a drained node back into DNS answers and `/readyz`.
    Undrain { id: u64 },
    /// Print a single-use join token for `conclave join --token T --seed ADDRESS` on a new
    /// machine. It embeds the cluster root's fingerprint and holds a secret: hand it over like
    /// a password.
    JoinToken {
        /// How long the token stays valid: seconds, or a number with s, m, h or d (max 7d).
        #[arg(long, default_value = "1h", value_parser = super::join_token::parse_ttl)]
        ttl: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DnsCommand {
    /// Add a record, or set the TTL of an existing one (use `--` before a value that starts
    /// with '-').
    Add {
        /// Relative to the workspace zone, e.g. `wiki` or `_ldap._tcp`.
        name: String,
        /// A, AAAA, CNAME, SRV or TXT.
        #[arg(value_name = "TYPE")]
        rtype: String,
        /// Zone-file form: `10.0.0.5`, `fd00::5`, `web`, `10 5 389 ldap`, `"v=spf1 -all"`;
        /// several words are joined with spaces.
        #[arg(required = true, value_name = "VALUE")]
        value: Vec<String>,
        /// Seconds resolvers may cache the record (1 to 86400) [default: 300].
        #[arg(long, value_name = "SECS")]
        ttl: Option<u32>,
    },
    /// List every record (with --json: the records as JSON).
    List,
    /// Remove the records of TYPE at NAME with VALUE, or all of that type without VALUE.
    Rm {
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        #[arg(value_name = "VALUE")]
        value: Vec<String>,
    },
}

/// Formats of the root certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RootFormatArg {
    /// PEM text (Linux, curl --cacert, most servers).
    Pem,
    /// DER, the `.crt` Windows and Android install.
    Der,
    /// An Apple configuration profile for iPhone, iPad and macOS.
    Mobileconfig,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Print the root CA's SHA-256 fingerprint (compare it with what `conclave init` printed).
    Fingerprint,
    /// Download the root certificate.
    Root {
        #[arg(long, value_enum, default_value = "pem")]
        format: RootFormatArg,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Issue a certificate for another LAN service (admin). The key is generated here and
    /// never leaves this machine; writes DIR/key.pem (0600), cert.pem, chain.pem (certificate
    /// + issuing CA) and root.pem.
    Issue {
        /// A DNS name inside the workspace zone, e.g. wiki.chat.corp.lan (repeatable).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// An address inside the site's permitted ranges (repeatable).
        #[arg(long, value_name = "IP")]
        ip: Vec<std::net::IpAddr>,
        /// Lifetime in days [default: the server's ca.service_cert_days].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=825))]
        days: Option<u32>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// List the certificates issued and not yet expired (admin).
    List,
    /// Revoke a certificate (admin); the next CRL lists it.
    Revoke {
        serial: String,
        /// unspecified, key_compromise, ca_compromise, affiliation_changed, superseded,
        /// cessation_of_operation or privilege_withdrawn.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take the root key out of the cluster into FILE (mode 0600; never overwritten). Works
    /// once; keep the file offline.
    ExportRootKey {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
    /// Replace the issuing CA, signed with the offline root key from FILE (admin).
    RenewIntermediate {
        #[arg(long, value_name = "FILE")]
        root_key: PathBuf,
        /// Your own current password (step-up); if absent (and CONCLAVE_PASSWORD is unset),
        /// one line is read from stdin. The server refuses this over plain HTTP.
        #[arg(long, env = "CONCLAVE_PASSWORD", hide_env_values = true)]
        current_password: Option<String>,
    },
    /// Create the CA on a cluster that has none (admin; `conclave init` normally does it).
    Init,
}

/// `conclavectl check` (see `ctl::check` for what each step does).
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The workspace name clients use, e.g. chat.corp.lan.
    #[arg(long, value_name = "NAME")]
    pub workspace: String,
    /// The DNS server to ask: a node's DNS address or the site's DNS server, as an IP address
    /// with an optional port (53 if absent), e.g. 10.0.0.11 or 127.0.0.1:8053.
    #[arg(long, value_name = "SERVER[:PORT]")]
    pub dns: String,
    /// Log in as this user and send a test message; without it, login and roundtrip are
    /// skipped. The password comes from CONCLAVE_PASSWORD, --password-stdin or a prompt.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the password from the first line of stdin (takes precedence over
    /// CONCLAVE_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
    /// Channel for the test message; it must exist (it is joined if public).
    /// [default: conclave-check, created as a private channel if missing]
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    /// The nodes' API port, used only when the DNS server has no SRV records for
    /// _conclave._tcp.<workspace> (Conclave's own DNS always has them).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Seconds to wait for each answer: a DNS reply, an HTTP response, the test message.
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn servers_are_repeatable_and_comma_separated() {
        for argv in [
            &[
                "conclavectl",
                "--server",
                "a:1,b:2",
                "--server",
                "c:3",
                "status",
            ][..],
            &[
                "conclavectl",
                "status",
                "--server",
                "a:1",
                "--server",
                "b:2,c:3",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(cli.servers, vec!["a:1", "b:2", "c:3"]);
            assert!(matches!(cli.command, Command::Status));
        }
    }

    #[test]
    fn ca_file_is_global() {
        let cli = Cli::try_parse_from([
            "conclavectl",
            "status",
            "--ca-file",
            "/etc/conclave/root.pem",
            "--server",
            "https://10.0.0.1:8443",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/conclave/root.pem"))
        );
        assert_eq!(cli.servers, vec!["https://10.0.0.1:8443"]);
    }

    #[test]
    fn send_joins_words_and_takes_id() {
        let cli = Cli::try_parse_from([
            "conclavectl",
            "send",
            "general",
            "hello",
            "world",
            "--id",
            "c-1",
        ])
        .unwrap();
        let Command::Send { channel, text, id } = cli.command else {
            panic!("expected send");
        };
        assert_eq!(channel, "general");
        assert_eq!(text, vec!["hello", "world"]);
        assert_eq!(id.as_deref(), Some("c-1"));
    }

    #[test]
    fn tail_limit_is_range_checked() {
        assert!(Cli::try_parse_from(["conclavectl", "tail", "g", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["conclavectl", "tail", "g", "--limit", "1001"]).is_err());
        assert!(Cli::try_parse_from(["conclavectl", "tail", "g", "--limit", "1000"]).is_ok());
    }

    #[test]
    fn new_commands_parse() {
        let cli = Cli::try_parse_from(["conclavectl", "user", "set-role", "bob", "admin"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::User(UserCommand::SetRole {
                role: RoleArg::Admin,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["conclavectl", "user", "set-role", "bob", "root"]).is_err());
        let cli = Cli::try_parse_from([
            "conclavectl",
            "channel",
            "create",
            "ops",
            "--private",
            "--topic",
            "pager duty",
        ])
        .unwrap();
        let Command::Channel(ChannelCommand::Create {
            name,
            private,
            topic,
        }) = cli.command
        else {
            panic!("expected channel create");
        };
        assert_eq!((name.as_str(), private), ("ops", true));
        assert_eq!(topic.as_deref(), Some("pager duty"));
        let cli = Cli::try_parse_from(["conclavectl", "dm", "bob", "carol"]).unwrap();
        assert!(matches!(cli.command, Command::Dm { users } if users == ["bob", "carol"]));
        assert!(Cli::try_parse_from(["conclavectl", "dm"]).is_err());
        let cli = Cli::try_parse_from(["conclavectl", "chat", "--channel", "general"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Chat { channel: Some(c), ack_timeout: 10, .. } if c == "general"
        ));
    }

    #[test]
    fn dns_and_drain_commands_parse() {
        let cli = Cli::try_parse_from([
            "conclavectl",
            "dns",
            "add",
            "_ldap._tcp",
            "SRV",
            "10",
            "5",
            "389",
            "ldap",
            "--ttl",
            "60",
        ])
        .unwrap();
        let Command::Dns(DnsCommand::Add {
            name,
            rtype,
            value,
            ttl,
        }) = cli.command
        else {
            panic!("expected dns add");
        };
        assert_eq!((name.as_str(), rtype.as_str()), ("_ldap._tcp", "SRV"));
        assert_eq!(value.join(" "), "10 5 389 ldap");
        assert_eq!(ttl, Some(60));
        assert!(Cli::try_parse_from(["conclavectl", "dns", "add", "wiki", "A"]).is_err());
        let cli = Cli::try_parse_from(["conclavectl", "dns", "rm", "wiki", "A"]).unwrap();
        assert!(
            matches!(cli.command, Command::Dns(DnsCommand::Rm { value, .. }) if value.is_empty())
        );
        let cli = Cli::try_parse_from(["conclavectl", "dns", "list", "--json"]).unwrap();
        assert!(cli.json && matches!(cli.command, Command::Dns(DnsCommand::List)));
        let cli = Cli::try_parse_from(["conclavectl", "node", "drain", "2"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Node(NodeCommand::Drain { id: 2 })
        ));
        assert!(Cli::try_parse_from(["conclavectl", "node", "undrain", "x"]).is_err());
    }

    #[test]
    fn backup_commands_parse() {
        let cli = Cli::try_parse_from([
            "conclavectl",
            "backup",
            "--out",
            "b.age",
            "--recipient",
            "age1a",
            "--recipient",
            "age1b",
        ])
        .unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("expected backup");
        };
        assert!(args.command.is_none() && !args.sessions);
        assert_eq!(args.recipient, ["age1a", "age1b"]);
        // --out is required to take a backup, not to verify one.
        assert!(Cli::try_parse_from(["conclavectl", "backup"]).is_err());
        let cli = Cli::try_parse_from([
            "conclavectl",
            "backup",
            "verify",
            "b.age",
            "--identity",
            "id.txt",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Backup(BackupArgs {
                command: Some(BackupCommand::Verify {
                    identity: Some(_),
                    ..
                }),
                ..
            })
        ));
        // No passphrase argument exists: it would show in `ps`.
        assert!(
            Cli::try_parse_from(["conclavectl", "backup", "--out", "b", "--passphrase", "x"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "conclavectl",
                "backup",
                "--out",
                "b",
                "--passphrase-file",
                "p",
                "--recipient",
                "age1a"
            ])
            .is_err()
        );
    }

    #[test]
    fn usage_errors_are_exit_code_2() {
        let err = Cli::try_parse_from(["conclavectl", "node", "add", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
