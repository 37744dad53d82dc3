//! `rampart audit verify` and the server's audit sink set-up from its flags.

use std::path::Path;

use anyhow::Context;

use crate::auth::audit::{self, Policy, Sink};
use crate::cli::{AuditArgs, AuditCommand};

/// Test hook: rotate at this many bytes instead of `--audit-log-maxsize` MiB.
const MAXSIZE_BYTES_ENV: &str = "RAMPART_TEST_AUDIT_MAXSIZE_BYTES";

pub fn open_sink(args: &AuditArgs, data_dir: &Path, policy: Policy) -> anyhow::Result<Sink> {
    let max_size = std::env::var(MAXSIZE_BYTES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(args.audit_log_maxsize.saturating_mul(1024 * 1024));
    let dir = args
        .audit_log_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("audit"));
    Sink::open(audit::Config {
        dir,
        max_size,
        max_backups: args.audit_log_maxbackup,
        policy,
        sync_interval: std::time::Duration::from_millis(args.audit_log_sync_interval),
    })
    .context("cannot open the audit log")
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { path } => {
            if !path.exists() {
                anyhow::bail!("{}: no such file or directory", path.display());
            }
            match audit::verify(&path) {
                Ok(v) => {
                    match v.starts_after {
                        Some(h) => println!(
                            "{} lines verified in {} files, chain intact (starts after pruned history, prevHash {h})",
                            v.lines, v.files
                        ),
                        None => println!(
                            "{} lines verified in {} files, chain intact",
                            v.lines, v.files
                        ),
                    }
                    Ok(())
                }
                Err(finding) => {
                    eprintln!("audit log broken: {finding}");
                    std::process::exit(1);
                }
            }
        }
    }
}
