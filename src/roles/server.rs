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
const SECRETS_PREFIX: &str = "/registry/core/secrets/";

/// Leaf certificates live a year until automatic rotation lands with the identity work.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Longest certificate the CSR signer issues (node certificates renew at 2/3 of it).
    let signing_duration = super::token::parse_ttl(&args.cluster_signing_duration)
        .ok()
        .flatten()
        .map(Duration::from_secs)
        .with_context(|| {
            format!(
                "invalid --cluster-signing-duration {:?}: use a duration like 168h",
                args.cluster_signing_duration
            )
        })?;
    let shutdown = Shutdown::from_signals().context("cannot install signal handlers")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let store_dir = args.data_dir.join("store");
    let rocks = RocksBackend::open(RocksConfig::new(&store_dir))
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    // Secrets are encrypted at rest by default (AES-256-GCM, keys 0600 in DATA_DIR/encryption).
    let keyring = store::encrypted::Keyring::load_or_create(&args.data_dir.join("encryption"))
        .context("cannot load the secrets encryption keys")?;
    let backend: Arc<dyn Backend> = Arc::new(store::encrypted::EncryptedBackend::new(
        Arc::new(rocks.clone()),
        keyring,
        vec![SECRETS_PREFIX.to_string()],
    ));
    tracing::info!(
        data_dir = %args.data_dir.display(),
        revision = backend.current_revision(),
        "store open"
    );

    let local_ips = pki::local_ips();
    let advertise = args.advertise_address.unwrap_or_else(|| {
        local_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    });
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
    let bundle = pki::bootstrap(&pki::Config {
        dir: args.data_dir.join("pki"),
        serving,
        leaf_validity: LEAF_VALIDITY,
    })
    .context("cannot prepare the cluster PKI")?;

    let compactor = tokio::spawn(store::compactor::run(
        backend.clone(),
        store::compactor::Config {
            keep_duration: Duration::from_secs(args.history_seconds),
            keep_revisions: args.history_revisions,
            interval: Duration::from_secs(args.compaction_interval_seconds.max(1)),
        },
        shutdown.clone().wait(),
    ));

    // Controllers, CSR signer and the embedded agent start once the API server listens.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
    let in_process = tokio::spawn(super::in_process::run(
        super::in_process::Config {
            bundle: bundle.clone(),
            data_dir: args.data_dir.clone(),
            leaf_validity: signing_duration,
            agent: (!args.disable_agent).then(|| super::in_process::EmbeddedAgent {
                node_name: args
                    .node_name
                    .clone()
                    .unwrap_or_else(super::agent::default_node_name),
                node_ip: advertise,
            }),
        },
        ready_rx,
        shutdown.clone(),
    ));
    let join_tokens = Arc::new(apiserver::join_tokens::JoinTokenAuthenticator::new(
        backend.clone(),
    ));

    let kubeconfig_path = args.data_dir.join("admin.kubeconfig");
    let kc_bundle = bundle.clone();
    let kc_path = kubeconfig_path.clone();
    apiserver::run(
        apiserver::Config {
            bind_address: args.bind_address,
            port: args.https_port,
            advertise_address: advertise,
            pki: bundle,
            authn: crate::auth::authn::Authenticator {
                tokens: vec![join_tokens],
                ..Default::default()
            },
        },
        backend.clone(),
        shutdown.clone().wait(),
        |bound| {
            // Point the kubeconfig at loopback when listening everywhere: it works on this host
            // whatever its addresses, and the certificate covers 127.0.0.1.
            let host = if args.bind_address.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                args.bind_address
            };
            let server = format!("https://{}", std::net::SocketAddr::new(host, bound.port()));
            let doc = pki::kubeconfig::render(
                "rampart",
                &server,
                &kc_bundle.ca_pem,
                "admin",
                &kc_bundle.admin,
            );
            pki::kubeconfig::write(&kc_path, &doc)
                .map_err(|e| format!("cannot write the admin kubeconfig: {e}"))?;
            let _ = ready_tx.send(server.clone());
            tracing::info!(
                address = %bound,
                kubeconfig = %kc_path.display(),
                "rampart server ready"
            );
            Ok(())
        },
    )
    .await
    .context("API server failed")?;
    in_process.abort();
    match compactor.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "compactor stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "compactor task failed"),
    }
    drop(backend);
    drop(rocks);
    tracing::info!("rampart server stopped");
    Ok(())
}
