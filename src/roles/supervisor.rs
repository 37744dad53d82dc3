//! Process lifetime: the shutdown signal every component listens to.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A shutdown latch: cloneable receivers that resolve once SIGINT or SIGTERM arrives.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Install the signal handlers and return the latch.
    pub fn from_signals() -> std::io::Result<Self> {
        let (tx, rx) = watch::channel(false);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            let _ = tx.send(true);
        });
        Ok(Shutdown(rx))
    }

    /// Resolves when shutdown has been requested.
    pub async fn wait(mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}
