//! `rampart server`: the control plane. Today it owns the store and its compactor; the API
//! server, controllers and scheduler are started here as they arrive.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::supervisor::Shutdown;
use crate::cli::ServerArgs;
use crate::store::{self, Backend, RocksBackend, RocksConfig};

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::from_signals().context("cannot install signal handlers")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let store_dir = args.data_dir.join("store");
    let rocks = RocksBackend::open(RocksConfig::new(&store_dir))
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    let backend: Arc<dyn Backend> = Arc::new(rocks.clone());
    tracing::info!(
        data_dir = %args.data_dir.display(),
        revision = backend.current_revision(),
        "store open"
    );
    let compactor = tokio::spawn(store::compactor::run(
        backend.clone(),
        store::compactor::Config {
            keep_duration: Duration::from_secs(args.history_seconds),
            keep_revisions: args.history_revisions,
            ..Default::default()
        },
        shutdown.clone().wait(),
    ));
    tracing::info!("rampart server ready");
    shutdown.wait().await;
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
