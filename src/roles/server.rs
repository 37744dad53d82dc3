//! `rampart server`: the control plane. Opens the datastore (the embedded RocksDB store, or
//! an external etcd with `--datastore-endpoint`, as k3s), prepares the PKI and the admin
//! kubeconfig, runs the compactor and the API server until SIGTERM/SIGINT.
//!
//! More than one server (k3s's HA with an external datastore): the first server starts on
//! the etcd; the others start with `--server URL --token T` (a server token) and the same
//! `--datastore-endpoint`, and before anything else fetch the cluster's CAs, service-account
//! and encryption keys from the first (`join::fetch_server_bootstrap`), written 0600 into
//! their own data directory. Each then issues its own serving certificate and keeps its own
//! audit log. On the embedded store there is exactly one server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::supervisor::Shutdown;
use crate::apiserver;
use crate::cli::ServerArgs;
use crate::pki;
use crate::store::{self, Backend, EtcdBackend, EtcdConfig, RocksBackend, RocksConfig};

/// Where the API server stores Secrets (see `apiserver::storage`).
const SECRETS_PREFIX: &str = crate::apiserver::storage::Builtin::Secrets.prefix();

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::from_signals().context("cannot install signal handlers")?;
    // A bad audit policy refuses to start before anything else is touched.
    let audit_policy = match &args.audit.audit_policy_file {
        Some(path) => crate::auth::audit::Policy::load(path)?,
        None => crate::auth::audit::Policy::default_policy(),
    };
    // So does a policy that does not validate against the schema (the error names file:line).
    let policy_files = crate::auth::cedar::PolicyFiles::load(args.policy_dir.as_deref())?;
    let authorizer = Arc::new(crate::auth::cedar::authorizer(
        &policy_files,
        crate::auth::cedar::NodeGraph::new(),
    )?);
    let admission = Arc::new(crate::auth::admission::Admission::load(&policy_files)?);
    // And a bad registries.yaml for the embedded agent.
    if !args.disable_agent {
        crate::kubelet::images::registries::Registries::load(&args.kubelet.registry_config)?;
        crate::kubelet::ImageGc::new(
            args.kubelet.image_gc_high_threshold,
            args.kubelet.image_gc_low_threshold,
            args.kubelet.image_minimum_gc_age,
            args.kubelet.image_gc_period,
        )?;
    }
    // The data directory holds keys, the store and the audit log: owner only (0700), also
    // when it already existed with a looser mode (as k3s' and kubeadm's data dirs).
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.data_dir)
            .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!(
                    "cannot make data directory {} private (0700)",
                    args.data_dir.display()
                )
            })?;
    }
    if args.cluster.server.is_some() {
        join_as_server(&args).await?;
    }
    let (raw, rocks) = open_datastore(&args).await?;
    let on_etcd = rocks.is_none();
    // Secrets are encrypted at rest by default (AES-256-GCM, keys 0600 in DATA_DIR/encryption).
    // Test hook: slow key rotation down so tests can kill the server mid-rotation.
    let rotation_delay = crate::test_hooks::rotation_batch_delay().unwrap_or_default();
    let mut encrypted_prefixes = vec![SECRETS_PREFIX.to_string()];
    for p in &args.encrypt_resources {
        if !encrypted_prefixes.contains(p) {
            encrypted_prefixes.push(p.clone());
        }
    }
    let key_file = args.data_dir.join("encryption/keys.json");
    if !key_file.exists()
        && store::encrypted::any_sealed(raw.as_ref(), &encrypted_prefixes)
            .await
            .context("cannot scan the store for encrypted values")?
    {
        anyhow::bail!(
            "{} is missing but the store holds encrypted values; restore the key file from your backup (a new key could never decrypt them)",
            key_file.display()
        );
    }
    let keyring = Arc::new(
        store::encrypted::Keyring::load_or_create(&args.data_dir.join("encryption"))
            .context("cannot load the secrets encryption keys")?
            .with_file_delay(rotation_delay),
    );
    let backend: Arc<dyn Backend> = Arc::new(store::encrypted::EncryptedBackend::new(
        raw.clone(),
        keyring.clone(),
        encrypted_prefixes.clone(),
    ));
    // On a shared datastore every server holds the same keyring: take the published one
    // before serving, then follow it (and heartbeat) while running.
    let key_sync = if on_etcd {
        let sync = store::encrypted::KeySync::new(store::encrypted::sync::Config {
            inner: raw.clone(),
            keyring: keyring.clone(),
            identity: server_identity(&args.data_dir)?,
            dir: args.data_dir.join("encryption"),
        })
        .context("secrets encryption key sync")?;
        sync.catch_up()
            .await
            .context("cannot take the cluster's secrets encryption keys")?;
        tokio::spawn({
            let sync = sync.clone();
            let stop = shutdown.clone();
            async move {
                if let Err(e) = sync.run(stop.wait()).await {
                    tracing::warn!(error = %e, "secrets encryption key sync stopped");
                }
            }
        });
        Some(sync)
    } else {
        None
    };
    // Resumes a rotation a crash interrupted (safe alongside API traffic), then runs new ones.
    let rotation = store::encrypted::Rotation::new(store::encrypted::rotation::Config {
        inner: raw.clone(),
        keyring,
        prefixes: encrypted_prefixes,
        batch_size: 100,
        batch_delay: rotation_delay,
        sync: key_sync,
    });
    let rotation_task = tokio::spawn(rotation.clone().run(shutdown.clone().wait()));
    tracing::info!(
        data_dir = %args.data_dir.display(),
        revision = backend.current_revision(),
        "store open"
    );

    let local_ips = pki::local_ips();
    let advertise = args.advertise_address.unwrap_or_else(pki::host_ipv4);
    let mut serving = pki::ServingNames {
        dns: pki::hostname().into_iter().collect(),
        ips: local_ips,
    };
    for san in &args.tls_san {
        match san.parse::<IpAddr>() {
            Ok(ip) => serving.ips.push(ip),
            Err(_) => serving.dns.push(san.clone()),
        }
    }
    if !serving.ips.contains(&advertise) {
        serving.ips.push(advertise);
    }
    args.network
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Ok(svc) = args
        .network
        .service_cidr
        .parse::<crate::kubelet::network::Ipv4Net>()
    {
        crate::apiserver::set_service_cidr(svc.addr(), svc.prefix());
    }
    let cluster_cidr = crate::controllers::node_ipam::Cidr::parse(
        &args.network.cluster_cidr,
        args.node_cidr_mask_size,
    )?;
    let authority = pki::Authority::open(pki::Config {
        dir: args.data_dir.join("pki"),
        serving,
        leaf_validity: args.cert_validity,
    })
    .context("cannot prepare the cluster PKI")?;
    let revocations = Arc::new(crate::auth::revocation::Revocations::default());
    let audit = Arc::new(super::audit::open_sink(
        &args.audit,
        &args.data_dir,
        audit_policy,
    )?);
    audit.start_syncer();
    let audit_at_shutdown = audit.clone();

    let compactor = tokio::spawn(store::compactor::run(
        backend.clone(),
        store::compactor::Config {
            keep_duration: Duration::from_secs(args.history_seconds),
            keep_revisions: args.history_revisions,
            interval: Duration::from_secs(args.compaction_interval_seconds.max(1)),
            // Servers on one etcd take turns (one compaction per interval for the cluster).
            shared: on_etcd,
        },
        shutdown.clone().wait(),
    ));

    let (sa_issuer, mut authn) = super::auth::build(&args.auth, &authority, backend.clone())?;
    authn.cert_checks.push(revocations.clone());

    authn.tokens.push(Arc::new(
        apiserver::endpoints::join_tokens::JoinTokenAuthenticator::new(backend.clone()),
    ));
    // Controllers, CSR signer and the embedded agent start once the API server listens.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
    let in_process = tokio::spawn(super::in_process::run(
        super::in_process::Config {
            authority: authority.clone(),
            data_dir: args.data_dir.clone(),
            agent: (!args.disable_agent).then(|| super::in_process::EmbeddedAgent {
                node_name: args
                    .node_name
                    .clone()
                    .unwrap_or_else(super::agent::default_node_name),
                node_ip: args.network.node_ip.unwrap_or(advertise),
                kubelet: args.kubelet.clone(),
                network: args.network.clone(),
            }),
            leader_elect: args.leader_elect,
            node_monitor_grace_period: args.node_monitor_grace_period,
            terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
            hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
            local_storage_path: (args.default_local_storage_path.clone())
                .unwrap_or_else(|| args.data_dir.join("storage")),
            cluster_cidr,
        },
        ready_rx,
        shutdown.clone(),
    ));

    // Point the kubeconfig at loopback when listening everywhere: it works on this host
    // whatever its addresses, and the certificate covers 127.0.0.1.
    let host = if args.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        args.bind_address
    };
    let kubeconfig_path = args.data_dir.join("admin.kubeconfig");
    let enforcement = crate::auth::enforcement::Enforcement::on(authorizer, admission, audit);
    // See the `bench-bypass` feature in Cargo.toml: compiled out of every other build.
    #[cfg(feature = "bench-bypass")]
    let enforcement = if std::env::var_os("RAMPART_BENCH_BYPASS").is_some() {
        tracing::warn!("RAMPART_BENCH_BYPASS: authorization, admission and audit are OFF");
        crate::auth::enforcement::Enforcement::Bypassed
    } else {
        enforcement
    };
    // Snapshots: scheduled ones here, on-demand ones through /rampart/v1/snapshots.
    let schedule = Some(args.snapshot_schedule.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(expr) = &schedule {
        crate::store::snapshot::parse_schedule(expr)?;
    }
    // On etcd the datastore is backed up with etcd's own tool (see `rampart_api`'s answer).
    let snapshotter = rocks.clone().map(|rocks| {
        crate::store::snapshot::Snapshotter::new(
            crate::store::snapshot::Config {
                data_dir: args.data_dir.clone(),
                schedule,
                retention: args.snapshot_retention,
            },
            rocks,
        )
    });
    if on_etcd {
        tracing::info!("datastore is an external etcd: rampart snapshots are off; back it up with `etcdctl snapshot save` and keep DATA_DIR/pki and DATA_DIR/encryption");
    }
    let scheduled_snapshots = snapshotter
        .clone()
        .map(|s| tokio::spawn(crate::store::snapshot::run(s, shutdown.clone().wait())));
    let ha = if on_etcd {
        Some(apiserver::HaConfig {
            identity: server_identity(&args.data_dir)?,
            data_dir: args.data_dir.clone(),
        })
    } else {
        None
    };
    let maintenance_authority = authority.clone();
    let maintenance_shutdown = shutdown.clone();
    let served = apiserver::run(
        apiserver::Config {
            bind_address: args.bind_address,
            port: args.https_port,
            advertise_address: advertise,
            pki: authority.clone(),
            authn,
            revocations,
            encryption: Some(rotation),
            snapshots: snapshotter,
            service_accounts: Some(sa_issuer),
            enforcement,
            connections: args.connections.limits(),
            watch_limits: apiserver::WatchLimits {
                per_user: args.max_watches_per_user,
                global: args.max_watches,
            },
            service_repair_interval: args.service_repair_interval,
            shutdown_delay: args.shutdown_delay_duration.unwrap_or_default(),
            ha,
        },
        backend.clone(),
        shutdown.clone().wait(),
        |bound| {
            let server_url = format!("https://{}", std::net::SocketAddr::new(host, bound.port()));
            let cfg = super::pki_maintenance::Config {
                kubeconfig: kubeconfig_path.clone(),
                server_url,
            };
            super::pki_maintenance::write_kubeconfig(&maintenance_authority, &cfg)?;
            let _ = ready_tx.send(cfg.server_url.clone());
            tokio::spawn(super::pki_maintenance::run(
                maintenance_authority,
                cfg,
                maintenance_shutdown.wait(),
            ));
            tracing::info!(
                address = %bound,
                kubeconfig = %kubeconfig_path.display(),
                "rampart server ready"
            );
            Ok(())
        },
    )
    .await;
    // Whatever ended the server, the lines written so far reach the disk.
    audit_at_shutdown.finish();
    served.context("API server failed")?;
    in_process.abort();
    match compactor.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "compactor stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "compactor task failed"),
    }
    if let Some(s) = scheduled_snapshots {
        s.abort();
    }
    match rotation_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "key rotation stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "key rotation task failed"),
    }
    drop(backend);
    drop(raw);
    drop(rocks);
    tracing::info!("rampart server stopped");
    Ok(())
}

/// The datastore, raw (below encryption), and the RocksDB handle when it is the embedded one
/// (snapshots need its checkpoints).
async fn open_datastore(
    args: &ServerArgs,
) -> anyhow::Result<(Arc<dyn Backend>, Option<RocksBackend>)> {
    let c = &args.cluster;
    if c.datastore_endpoint.is_empty() {
        if c.datastore_cafile.is_some() || c.datastore_certfile.is_some() {
            anyhow::bail!("--datastore-cafile/--datastore-certfile need --datastore-endpoint");
        }
        let store_dir = args.data_dir.join("store");
        let rocks = RocksBackend::open(RocksConfig::new(&store_dir))
            .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
        return Ok((Arc::new(rocks.clone()), Some(rocks)));
    }
    for e in &c.datastore_endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            anyhow::bail!("--datastore-endpoint {e:?}: expected http(s)://HOST:PORT (etcd)");
        }
    }
    let cfg = EtcdConfig {
        endpoints: c.datastore_endpoint.clone(),
        ca_file: c.datastore_cafile.clone(),
        cert_file: c.datastore_certfile.clone(),
        key_file: c.datastore_keyfile.clone(),
    };
    let etcd = EtcdBackend::connect(&cfg)
        .await
        .context("cannot open the etcd datastore (--datastore-endpoint)")?;
    tracing::info!(
        endpoints = c.datastore_endpoint.len(),
        "datastore: external etcd"
    );
    Ok((Arc::new(etcd), None))
}

/// This server's stable identity in the cluster (its `apiserver-<id>` Lease), created once
/// in `DATA_DIR/server-id`.
fn server_identity(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Ok(id);
        }
    }
    let id: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    pki::write_atomic(&path, id.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// `--server URL --token T`: on the first start, fetch the cluster's keys from that server
/// and write them (0600) where this server's PKI and keyring load them from. Later starts
/// find them and join nothing.
async fn join_as_server(args: &ServerArgs) -> anyhow::Result<()> {
    let Some(server) = args.cluster.server.as_deref() else {
        return Ok(());
    };
    if args.cluster.datastore_endpoint.is_empty() {
        anyhow::bail!(
            "--server needs --datastore-endpoint: every server of a cluster serves the same etcd"
        );
    }
    let pki_dir = args.data_dir.join("pki");
    // `pki/ca.key` is written last: its presence means the join completed.
    if pki_dir.join("ca.key").exists() {
        tracing::info!(
            "cluster keys present in {}: already joined",
            pki_dir.display()
        );
        return Ok(());
    }
    let raw = args
        .cluster
        .token
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--server needs --token (rampart token create --role server on an existing server)"
            )
        })?;
    let token = crate::auth::bootstrap::JoinToken::parse(raw).map_err(|e| anyhow::anyhow!(e))?;
    let server = server.trim_end_matches('/');
    let mut files = super::join::fetch_server_bootstrap(server, &token).await?;
    files.sort_by_key(|(name, _)| name == "pki/ca.key");
    pki::ensure_private_dir(&pki_dir)?;
    pki::ensure_private_dir(&args.data_dir.join("encryption"))?;
    for (name, bytes) in &files {
        let path = args.data_dir.join(name);
        // Keys and the keyring owner-only; certificates readable.
        let mode = if name.ends_with(".crt") || name.ends_with(".pub") {
            0o644
        } else {
            0o600
        };
        pki::write_atomic(&path, bytes, mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(server = %server, files = files.len(), "joined the cluster as a server: keys received");
    Ok(())
}
