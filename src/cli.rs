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
    Server(Box<ServerArgs>),
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
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Service-account token and OIDC flags, named as kube-apiserver's.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// `iss` of service-account tokens (and the OIDC discovery issuer).
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    pub service_account_issuer: String,
    /// Overrides `jwks_uri` in /.well-known/openid-configuration.
    #[arg(long, default_value = "")]
    pub service_account_jwks_uri: String,
    /// Audiences the API server accepts in tokens (default: the issuer). Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// OpenID Connect issuer for human users (HTTPS); enables OIDC bearer tokens.
    #[arg(long)]
    pub oidc_issuer_url: Option<String>,
    /// The client id tokens must be issued for (`aud`).
    #[arg(long)]
    pub oidc_client_id: Option<String>,
    /// The claim that names the user.
    #[arg(long, default_value = "sub")]
    pub oidc_username_claim: String,
    /// Prefix for user names (default: `<issuer>#` unless the claim is `email`; `-` for none).
    #[arg(long)]
    pub oidc_username_prefix: Option<String>,
    /// The claim that lists the user's groups.
    #[arg(long)]
    pub oidc_groups_claim: Option<String>,
    /// Prefix for group names.
    #[arg(long, default_value = "")]
    pub oidc_groups_prefix: String,
    /// CA bundle (PEM) that signs the issuer's serving certificate (default: system roots).
    #[arg(long)]
    pub oidc_ca_file: Option<PathBuf>,
}
