//! Composition roots: each role wires components together and owns start order and shutdown.
//! `anyhow` is allowed here (as in `main`): this is where component errors become messages.

pub mod agent;
mod audit;
mod auth;
pub mod cert;
pub mod csr_signer;
pub mod images;
pub mod in_process;
pub mod join;
pub mod logging;
pub mod pki_maintenance;
pub mod policy;
pub mod secrets_encrypt;
pub mod server;
mod server_list;
pub mod snapshot;
pub mod supervisor;
pub mod token;

use crate::cli::{Cli, Command};

/// Run the selected role to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("rampart {}", env!("CARGO_PKG_VERSION"));
            if crate::test_hooks::ENABLED {
                // Only a test build: release builds have no RAMPART_TEST_* hooks at all.
                println!("test hooks: compiled in (RAMPART_TEST_* variables are honoured)");
            }
            Ok(())
        }
        Command::Cert(args) => {
            logging::init(cli.log_format, "warn")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(2)
                .build()?;
            rt.block_on(cert::run(args))
        }
        Command::Server(args) => {
            logging::init(cli.log_format, &cli.log_level)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("rampart")
                .build()?;
            rt.block_on(server::run(*args))
        }
        Command::SecretsEncrypt(cmd) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(secrets_encrypt::run(cmd))
        }
        Command::Agent(args) => {
            logging::init(cli.log_format, &cli.log_level)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("rampart-agent")
                .build()?;
            rt.block_on(agent::run_cli(*args))
        }
        Command::Audit(cmd) => audit::run(cmd),
        Command::Images(cmd) => images::run(cmd),
        // Before any runtime or thread exists: the shim forks and clones containers.
        Command::Shim(args) => {
            crate::kubelet::runtime::shim::main(args).map_err(|e| anyhow::anyhow!(e))
        }
        Command::Policy(cmd) => policy::run(cmd),
        Command::InternalCleanupNetwork => {
            crate::proxy::cleanup().map_err(|e| anyhow::anyhow!("service proxy tables: {e}"))?;
            crate::netpol::cleanup().map_err(|e| anyhow::anyhow!("network policy table: {e}"))
        }
        Command::Snapshot(cmd) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(snapshot::run(cmd))
        }
        Command::Token(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(token::run(args))
        }
    }
}
