//! `rampart server`: the control plane. Opens the store, prepares the PKI and the admin
//! kubeconfig, runs the compactor and the API server until SIGTERM/SIGINT.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::supervisor::Shutdown;
use crate::apiserver;
use crate::cli::ServerArgs;
use crate::pki;
use crate::store::{self, Backend, RocksBackend, RocksConfig};

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
    let store_dir = args.data_dir.join("store");
    let rocks = RocksBackend::open(RocksConfig::new(&store_dir))
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
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
        && store::encrypted::any_sealed(&rocks, &encrypted_prefixes)
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
        Arc::new(rocks.clone()),
        keyring.clone(),
        encrypted_prefixes.clone(),
    ));
    // Resumes a rotation a crash interrupted (safe alongside API traffic), then runs new ones.
    let rotation = store::encrypted::Rotation::new(store::encrypted::rotation::Config {
        inner: Arc::new(rocks.clone()),
        keyring,
        prefixes: encrypted_prefixes,
        batch_size: 100,
        batch_delay: rotation_delay,
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
        },
        shutdown.clone().wait(),
    ));

    let (sa_issuer, mut authn) = super::auth::build(&args.auth, &authority, backend.clone())?;
    authn.cert_checks.push(revocations.clone());

    authn.tokens.push(Arc::new(
        apiserver::join_tokens::JoinTokenAuthenticator::new(backend.clone()),
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
    let snapshotter = crate::store::snapshot::Snapshotter::new(
        crate::store::snapshot::Config {
            data_dir: args.data_dir.clone(),
            schedule,
            retention: args.snapshot_retention,
        },
        rocks.clone(),
    );
    let scheduled_snapshots = tokio::spawn(crate::store::snapshot::run(
        snapshotter.clone(),
        shutdown.clone().wait(),
    ));
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
            snapshots: Some(snapshotter),
            service_accounts: Some(sa_issuer),
            enforcement,
            connections: args.connections.limits(),
            watch_limits: apiserver::WatchLimits {
                per_user: args.max_watches_per_user,
                global: args.max_watches,
            },
            service_repair_interval: args.service_repair_interval,
            shutdown_delay: args.shutdown_delay_duration.unwrap_or_default(),
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
    scheduled_snapshots.abort();
    match rotation_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "key rotation stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "key rotation task failed"),
    }
    drop(backend);
    drop(rocks);
    tracing::info!("rampart server stopped");
    Ok(())
}
