//! The command line, with clap. Each subcommand maps to a role or a tool; `main` only parses
//! and dispatches, so everything here is plain data.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "A zero-trust, auditable Kubernetes distribution in one binary"
)]
pub struct Cli {
    /// Log format: human-readable on a terminal, JSON otherwise when `auto`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "RAMPART_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `rampart=debug`.
    #[arg(long, global = true, default_value = "info", env = "RAMPART_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Server(ServerArgs),
    /// Print the version.
    Version,
    /// Secrets encryption at rest: key status and crash-safe key rotation.
    #[command(subcommand)]
    SecretsEncrypt(SecretsEncryptCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Show the write key, readable keys, rotation stage and objects per key.
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Output format: a short table (default) or the JSON document.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Add a new key, make it the write key, re-encrypt every secret, drop the old key.
    RotateKeys {
        #[command(flatten)]
        target: AdminTarget,
        /// Wait until the rotation is done (otherwise it continues in the background).
        #[arg(long)]
        wait: bool,
    },
}

/// Which cluster an admin tool talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// Admin kubeconfig (default: DATA_DIR/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data directory, to find its admin kubeconfig.
    #[arg(
        long,
        default_value = "/var/lib/rampart/server",
        env = "RAMPART_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the store, certificates and audit log live.
    #[arg(
        long,
        default_value = "/var/lib/rampart/server",
        env = "RAMPART_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// Compact store history older than this many seconds (and at least --history-revisions
    /// revisions back).
    #[arg(long, default_value_t = 300)]
    pub history_seconds: u64,
    /// Keep at least this many revisions of history for watch resume.
    #[arg(long, default_value_t = 10_000)]
    pub history_revisions: u64,
    /// How often the compactor checks history (seconds).
    #[arg(long, default_value_t = 30)]
    pub compaction_interval_seconds: u64,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,
    /// HTTPS port of the API server (0 picks a free port; the ready log line says which).
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// Address advertised to clients (default: the first non-loopback address).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
}
