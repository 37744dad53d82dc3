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
    /// Inspect and rotate the cluster's certificates.
    Cert(CertArgs),
    /// Join this machine to a cluster as a node.
    Agent(Box<AgentArgs>),
    /// Manage join tokens.
    Token(TokenArgs),
    /// Print the version.
    Version,
    /// Secrets encryption at rest: key status and crash-safe key rotation.
    #[command(subcommand)]
    SecretsEncrypt(SecretsEncryptCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check Cedar policy files and evaluate policy test cases offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The node's local images: import archives (air gap), list, remove.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// The per-pod runtime shim, started by the agent (not for direct use).
    #[command(name = "__shim", hide = true)]
    Shim(crate::kubelet::runtime::shim::ShimArgs),
    /// Encrypted snapshots of a server: save (online), ls, restore (on a fresh machine), prune.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Remove this node's Rampart network state (the service proxy's nftables tables); run
    /// by `rampart-killall.sh` (not for direct use).
    #[command(name = "internal-cleanup-network", hide = true)]
    InternalCleanupNetwork,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of the running server now: into DATA_DIR/snapshots/, or into --output.
    Save {
        #[command(flatten)]
        target: AdminTarget,
        /// Snapshot name (default: on-demand-<unix time>).
        #[arg(long)]
        name: Option<String>,
        /// Write the sealed snapshot to this file instead of keeping it on the server.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// List the snapshots in DATA_DIR/snapshots/ (newest first).
    Ls {
        #[arg(
            long,
            default_value = "/var/lib/rampart/server",
            env = "RAMPART_DATA_DIR"
        )]
        data_dir: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Rebuild a server directory from a snapshot (the server must not run on it); needs only
    /// the snapshot file and the snapshot key file.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The new server directory (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The snapshot key file (DATA_DIR/snapshot.key of the server that saved it).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Delete the oldest scheduled snapshots, keeping --snapshot-retention of them.
    Prune {
        #[arg(
            long,
            default_value = "/var/lib/rampart/server",
            env = "RAMPART_DATA_DIR"
        )]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        snapshot_retention: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import `docker save` or OCI-archive tarballs (optionally gzip-compressed).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// List images.
    Ls {
        /// Only print image ids.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
    /// Remove images (by name or id).
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        store: ImageStoreArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImageStoreArgs {
    /// The agent's data directory (a server's embedded agent uses SERVER_DATA_DIR/agent).
    #[arg(
        long,
        default_value = "/var/lib/rampart/agent",
        env = "RAMPART_AGENT_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files strictly against the schema: `FILE: N policies OK`, or
    /// `FILE:LINE: message` and exit 1.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Use this directory's schema (and policies) over the embedded ones.
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        /// What the files are (default: `admission` when a path has an `admission`
        /// directory, else `authz`).
        #[arg(long, value_enum)]
        kind: Option<PolicyKind>,
    },
    /// Evaluate request cases (YAML) against the embedded (or --policy-dir) policies, no
    /// server: one PASS/FAIL line per case, exit 1 on any failure.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        policy_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    Authz,
    Admission,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain: DIR is the audit directory or one log file. A chain
    /// that starts after pruned history (older files removed) fails unless --allow-pruned.
    Verify {
        path: PathBuf,
        /// Accept a chain whose oldest files were pruned (e.g. shipped and removed).
        #[arg(long)]
        allow_pruned: bool,
    },
    /// Copy the rotated audit files of AUDIT_DIR that are not yet shipped to --to DIR,
    /// verify each copy, and record them in AUDIT_DIR/audit.shipped so that
    /// --audit-log-maxbackup may prune them. The live audit.log is never shipped.
    Ship {
        audit_dir: PathBuf,
        /// The archive directory (created 0700 if missing).
        #[arg(long)]
        to: PathBuf,
    },
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
    /// Lifetime of leaf certificates (e.g. 168h, 7d, 90m); renewed at 2/3 of it.
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub cert_validity: std::time::Duration,
    /// Also encrypt this resource at rest (repeatable): `configmaps`, or `<plural>.<group>`
    /// such as `widgets.example.com`. Secrets are always encrypted.
    #[arg(long = "encrypt-resource", value_parser = parse_resource)]
    pub encrypt_resources: Vec<String>,
    /// Run the control plane alone, without the embedded node agent.
    #[arg(long)]
    pub disable_agent: bool,
    /// Cron schedule (5 fields, UTC) of automatic snapshots into DATA_DIR/snapshots/; an
    /// empty value disables them.
    #[arg(long, default_value = "0 */12 * * *")]
    pub snapshot_schedule: String,
    /// How many scheduled snapshots to keep.
    #[arg(long, default_value_t = 5)]
    pub snapshot_retention: usize,
    /// The embedded agent's kubelet settings.
    #[command(flatten)]
    pub kubelet: KubeletArgs,
    /// Name of the embedded agent's node (default: the hostname, lowercased).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Run the scheduler and controller manager under Lease-based leader election
    /// (`kube-system/kube-scheduler`, `kube-system/kube-controller-manager`), as upstream.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a node's Lease may go unrenewed before the node is marked Unknown and tainted.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// Terminated pods (Succeeded/Failed) kept before pod GC deletes the oldest; 0 disables.
    #[arg(long, default_value_t = 12_500)]
    pub terminated_pod_gc_threshold: usize,
    /// How often the HorizontalPodAutoscaler controller reconciles every HPA.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// Where `local-path` volumes live on every node (default DATA_DIR/storage, as k3s).
    #[arg(long)]
    pub default_local_storage_path: Option<PathBuf>,
    /// The cluster's network settings (pod and Service ranges, DNS, the embedded agent's
    /// node IP and pod network backend).
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// A directory overlaying the embedded Cedar policies (`schema/`, `system/`, `authz/`,
    /// `admission/`): same-named files replace the embedded ones, others are added. Every
    /// policy is validated strictly against the schema at start-up.
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
    /// Watches one user may hold open; more are refused with 429 TooManyRequests.
    #[arg(long, default_value_t = 1_000)]
    pub max_watches_per_user: usize,
    /// Watches the server holds open over every user; more are refused with 429.
    #[arg(long, default_value_t = 10_000)]
    pub max_watches: usize,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Time between passes of the Service claim repair loop (orphaned ClusterIP and
    /// node-port claims released, missing ones re-created); it also runs at start.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub service_repair_interval: std::time::Duration,
    /// After SIGTERM, keep serving this long with `/readyz` failing its `shutdown` check, so
    /// load balancers stop sending new requests first (kube-apiserver's flag; default none).
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_delay_duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Where a server keeps its data and which cluster it joins (k3s's `--datastore-*`,
/// `--server` and `--token` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// External etcd endpoints, comma-separated (`https://host:2379,...`); default: the
    /// embedded store in DATA_DIR/store. Every server of one cluster uses the same etcd.
    #[arg(long, env = "RAMPART_DATASTORE_ENDPOINT", value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,
    /// CA bundle that signed etcd's serving certificate.
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    pub datastore_keyfile: Option<PathBuf>,
    /// An existing server of the cluster to join as another server (needs a server token
    /// and the same --datastore-endpoint).
    #[arg(long)]
    pub server: Option<String>,
    /// The server join token from `rampart token create --role server` (first start only).
    #[arg(long, env = "RAMPART_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What a join token lets its holder join as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    /// A node (`rampart agent`).
    Agent,
    /// Another server on the same datastore (`rampart server --server URL --token T`).
    Server,
}

/// The API server's connection limits (defaults as kube-apiserver's). Hidden: tests shorten
/// them; operators rarely need to.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Time allowed from accept to a finished TLS handshake.
    #[arg(long, hide = true, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: std::time::Duration,
    /// Time allowed for a connection's (next) request headers, as Go's ReadHeaderTimeout.
    #[arg(long, hide = true, default_value = "32s", value_parser = parse_duration)]
    pub request_header_timeout: std::time::Duration,
    /// A connection without a request in flight for this long is closed.
    #[arg(long, hide = true, default_value = "90s", value_parser = parse_duration)]
    pub idle_connection_timeout: std::time::Duration,
    /// Connections one address may hold without having authenticated (and four times as
    /// many still in their TLS handshake).
    #[arg(long, hide = true, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unauthenticated_connections_per_ip: u32,
}

impl ConnectionArgs {
    pub fn limits(&self) -> crate::apiserver::ConnectionLimits {
        crate::apiserver::ConnectionLimits {
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.request_header_timeout,
            idle_timeout: self.idle_connection_timeout,
            max_unauthenticated_per_ip: self.max_unauthenticated_connections_per_ip as usize,
        }
    }
}

/// Audit log flags, named as kube-apiserver's.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Directory of the audit log (default: DATA_DIR/audit).
    #[arg(long)]
    pub audit_log_dir: Option<PathBuf>,
    /// Rotate `audit.log` when it would grow past this many MiB.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated files to keep once shipped (0, the default, never deletes history). Only files
    /// at or before the one named in `audit.shipped` in the audit directory are pruned.
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Disk budget of all audit files together, in MiB (0: none). When it is used up,
    /// mutations are refused (503) rather than history deleted; reads go on a little longer.
    #[arg(long, default_value_t = 0)]
    pub audit_log_max_total_size: u64,
    /// Window over which requests from unauthenticated peers are aggregated into counted
    /// summary lines.
    #[arg(long, hide = true, default_value = "10s", value_parser = parse_duration)]
    pub audit_stranger_window: std::time::Duration,
    /// An `audit.k8s.io/v1` Policy (YAML); default: Metadata for every request.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// fdatasync the audit log this often (milliseconds) when lines were written; 0 syncs
    /// every line before its response. A machine crash loses at most one interval's lines.
    #[arg(long, default_value_t = 1000)]
    pub audit_log_sync_interval: u64,
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

/// A resource name for `--encrypt-resource`, as the store key prefix it names
/// (`/registry/<group|core>/<plural>/`).
pub fn parse_resource(s: &str) -> Result<String, String> {
    let (plural, group) = s.split_once('.').unwrap_or((s, "core"));
    let ok = |x: &str| {
        !x.is_empty()
            && x.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !ok(plural) || !ok(group) {
        return Err(format!(
            "{s:?} is not a resource like configmaps or widgets.example.com"
        ));
    }
    Ok(crate::apiserver::storage::resource_prefix(group, plural))
}

/// `30s`, `90m`, `168h`, `7d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 90m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => return Err(format!("{s:?} is not a duration like 30s, 90m, 24h or 7d")),
    };
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConnection {
    /// The server's data directory (its admin kubeconfig is used unless --kubeconfig is given).
    #[arg(
        long,
        default_value = "/var/lib/rampart/server",
        env = "RAMPART_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// Kubeconfig with system:masters credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

impl ServerConnection {
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.kubeconfig"))
    }
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// List the certificates in a server's or agent's data directory and when they expire.
    Check {
        #[arg(
            long,
            default_value = "/var/lib/rampart/server",
            env = "RAMPART_DATA_DIR"
        )]
        data_dir: PathBuf,
    },
    /// Reissue certificates of the running server now (all, or the named services).
    Rotate {
        #[command(flatten)]
        conn: ServerConnection,
        /// A service: apiserver-serving, apiserver-kubelet-client, scheduler,
        /// controller-manager, admin (repeatable).
        #[arg(long = "service")]
        services: Vec<String>,
    },
    /// Replace the cluster CA: new CA trusted alongside the old one, every certificate
    /// reissued, nodes renew on their own, then the old CA is retired.
    RotateCa {
        #[command(flatten)]
        conn: ServerConnection,
        /// How long to wait for every node to renew before giving up (the rotation then
        /// stays in its overlap phase; run the command again to finish it).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Retire the old CA even if some nodes have not renewed (they are cut off).
        #[arg(long)]
        force: bool,
    },
    /// Refuse a certificate from now on: by serial number, or every certificate of a node.
    Revoke {
        #[command(flatten)]
        conn: ServerConnection,
        /// Serial number in hex (as `rampart cert check` prints it).
        #[arg(required_unless_present = "node", conflicts_with = "node")]
        serial: Option<String>,
        /// Revoke every certificate issued to this node so far.
        #[arg(long)]
        node: Option<String>,
    },
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
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
}

/// Networking flags shared by `rampart server` and `rampart agent`, with k3s's names and
/// defaults. The agent needs the cluster CIDR for its routes (and the proxy for its
/// masquerade rule), the Service CIDR and DNS address for the proxy and pods' resolv.conf.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// The pod network; each node gets a slice of it as spec.podCIDR.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The range ClusterIPs of Services are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// The cluster DNS Service's address (inside --service-cidr), written into pods'
    /// resolv.conf.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: std::net::IpAddr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's InternalIP (default: the first non-loopback address; on a server, the
    /// advertise address).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// How pods reach other nodes' pods: `host-gw` (routes via the nodes' IPs, one L2
    /// segment), `vxlan` (overlay, UDP 8472) or `auto` (host-gw where the node is on one of
    /// our subnets, VXLAN otherwise).
    #[arg(long, value_enum, default_value_t = crate::kubelet::network::Backend::Auto)]
    pub pod_network_backend: crate::kubelet::network::Backend,
}

impl NetworkArgs {
    /// Checks the ranges; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        use crate::kubelet::network::Ipv4Net;
        let cluster: Ipv4Net = self
            .cluster_cidr
            .parse()
            .map_err(|e| format!("--cluster-cidr: {e}"))?;
        let service: Ipv4Net = self
            .service_cidr
            .parse()
            .map_err(|e| format!("--service-cidr: {e}"))?;
        if !(12..=30).contains(&service.prefix()) {
            return Err(format!(
                "--service-cidr {service}: the prefix must be between /12 and /30"
            ));
        }
        if cluster.covers(&service) || service.covers(&cluster) {
            return Err(format!(
                "--cluster-cidr {cluster} and --service-cidr {service} overlap"
            ));
        }
        match self.cluster_dns {
            std::net::IpAddr::V4(ip) if service.contains(ip) => {}
            other => {
                return Err(format!(
                    "--cluster-dns {other} is not inside --service-cidr {service}"
                ))
            }
        }
        if crate::api::validation::dns1123_subdomain(&self.cluster_domain).is_err() {
            return Err(format!(
                "--cluster-domain {:?} is not a DNS name",
                self.cluster_domain
            ));
        }
        Ok(())
    }
}

/// Kubelet settings shared by `rampart agent` and the server's embedded agent.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeletArgs {
    /// Root of the containers' CRI-format logs (`<ns>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_log_dir: PathBuf,
    /// cgroup parent of the pods below each cgroup v1 controller.
    #[arg(long, default_value = "kubepods")]
    pub kubelet_cgroup_root: String,
    /// Registry mirrors, credentials and TLS in k3s's `registries.yaml` format (a missing
    /// file means none: every registry is pulled from directly over HTTPS).
    #[arg(long, default_value = "/etc/rampart/registries.yaml")]
    pub registry_config: PathBuf,
    /// Disk use (percent) of the image filesystem at which image garbage collection starts.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Disk use (percent) image garbage collection frees down to.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Minimum age of an unused image before it may be garbage-collected.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub image_minimum_gc_age: std::time::Duration,
    /// How often image garbage collection checks the disk (upstream: 5 minutes).
    #[arg(long, hide = true, default_value = "5m", value_parser = parse_duration)]
    pub image_gc_period: std::time::Duration,
    /// Resources reserved for the OS, subtracted from the node's allocatable
    /// (`cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=100`), as upstream's kubelet flag.
    #[arg(long, default_value = "")]
    pub system_reserved: String,
    /// Resources reserved for Kubernetes' own daemons (same syntax as --system-reserved).
    #[arg(long, default_value = "")]
    pub kube_reserved: String,
    /// Hard eviction thresholds (`memory.available<100Mi,nodefs.available<10%,...`); empty:
    /// upstream's defaults (memory.available<100Mi, nodefs.available<10%,
    /// imagefs.available<15%, nodefs.inodesFree<5%).
    #[arg(long, default_value = "")]
    pub eviction_hard: String,
    /// Directory of static pod manifests, run on this node with mirror pods `<name>-<node>`.
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Port of the kubelet API (logs, exec, port-forward, stats); 0 picks a free port.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Do not run the service proxy (k3s's flag); `--disable-kube-proxy=false` turns it on.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_kube_proxy: bool,
    /// Do not enforce NetworkPolicies on this node (k3s's flag); the table
    /// `ip rampart-netpol` is then not programmed.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_network_policy: bool,
    #[command(flatten)]
    pub dns: DnsArgs,
}

/// The node's embedded cluster DNS (`src/dns/`) and the resolv.conf pods get.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// The node's resolv.conf: its nameservers get the names outside the cluster, and pods
    /// with dnsPolicy Default (or hostNetwork) get its contents (k3s's `--resolv-conf`).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Serve the cluster DNS on these addresses instead of the cluster DNS IP on the
    /// `rampart-dns` dummy interface (e.g. `127.0.0.1:5353` for tests; repeatable).
    #[arg(long = "cluster-dns-listen", value_name = "ADDR:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Do not run the embedded cluster DNS on this node.
    #[arg(long)]
    pub disable_cluster_dns: bool,
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
        /// What the token joins: a node (agent) or another server.
        #[arg(long, value_enum, default_value_t = TokenRole::Agent)]
        role: TokenRole,
    },
    /// List join tokens (never their secrets).
    List,
    /// Delete a join token by its id.
    Delete { id: String },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn network(args: &[&str]) -> super::NetworkArgs {
        let mut argv = vec!["rampart", "agent", "--server", "https://127.0.0.1:6443"];
        argv.extend_from_slice(args);
        match super::Cli::try_parse_from(argv).unwrap().command {
            super::Command::Agent(a) => a.network,
            _ => unreachable!(),
        }
    }

    #[test]
    fn network_flags_have_k3s_defaults_and_are_checked() {
        let n = network(&[]);
        assert_eq!(n.cluster_cidr, "10.42.0.0/16");
        assert_eq!(n.service_cidr, "10.43.0.0/16");
        assert_eq!(n.cluster_dns.to_string(), "10.43.0.10");
        assert_eq!(n.cluster_domain, "cluster.local");
        assert_eq!(
            n.pod_network_backend,
            crate::kubelet::network::Backend::Auto
        );
        assert_eq!(n.validate(), Ok(()));
        let vx = network(&["--pod-network-backend", "vxlan", "--node-ip", "10.0.0.5"]);
        assert_eq!(
            vx.pod_network_backend,
            crate::kubelet::network::Backend::Vxlan
        );
        for (bad, flag) in [
            (vec!["--cluster-cidr", "10.42.0.1/16"], "--cluster-cidr"),
            (vec!["--service-cidr", "10.42.128.0/20"], "overlap"),
            (vec!["--service-cidr", "10.0.0.0/8"], "--service-cidr"),
            (vec!["--cluster-dns", "10.44.0.10"], "--cluster-dns"),
            (vec!["--cluster-domain", "Bad_Domain"], "--cluster-domain"),
        ] {
            let e = network(&bad).validate().unwrap_err();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
        assert!(super::Cli::try_parse_from([
            "rampart",
            "agent",
            "--server",
            "x",
            "--pod-network-backend",
            "flannel"
        ])
        .is_err());
    }
}
