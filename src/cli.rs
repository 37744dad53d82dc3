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
    /// Join this machine to a cluster as a node.
    Agent(AgentArgs),
    /// Manage join tokens.
    Token(TokenArgs),
    /// Print the version.
    Version,
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
    /// Longest validity of certificates the CSR signer issues, e.g. 168h (upstream's
    /// kube-controller-manager flag of the same name).
    #[arg(long, default_value = "168h")]
    pub cluster_signing_duration: String,
    /// Run the control plane alone, without the embedded node agent.
    #[arg(long)]
    pub disable_agent: bool,
    /// Name of the embedded agent's node (default: the hostname, lowercased).
    #[arg(long)]
    pub node_name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "RAMPART_SERVER")]
    pub server: String,
    /// The join token from `rampart token create` (needed only for the first join).
    #[arg(long, env = "RAMPART_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the node's keys and certificates live.
    #[arg(
        long,
        default_value = "/var/lib/rampart/agent",
        env = "RAMPART_AGENT_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// The node's name (default: the hostname, lowercased).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's InternalIP (default: the first non-loopback address).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// Kubeconfig of an administrator (default: DATA_DIR/admin.kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data directory, where the admin kubeconfig is.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/rampart/server",
        env = "RAMPART_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it.
    Create {
        /// How long the token is valid, e.g. 30m, 24h, 7d (0 = never expires).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A note shown by `token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens (never their secrets).
    List,
    /// Delete a join token by its id.
    Delete { id: String },
}
