//! `rampart audit verify` and the server's audit sink set-up from its flags.

use std::path::Path;

use anyhow::Context;

use crate::auth::audit::{self, Policy, Sink};
use crate::cli::{AuditArgs, AuditCommand};

pub fn open_sink(args: &AuditArgs, data_dir: &Path, policy: Policy) -> anyhow::Result<Sink> {
    let max_size = crate::test_hooks::audit_max_size_bytes()
        .unwrap_or(args.audit_log_maxsize.saturating_mul(1024 * 1024));
    let max_total_size = crate::test_hooks::audit_max_total_bytes()
        .unwrap_or(args.audit_log_max_total_size.saturating_mul(1024 * 1024));
    let dir = args
        .audit_log_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("audit"));
    Sink::open(audit::Config {
        dir,
        max_size,
        max_backups: args.audit_log_maxbackup,
        max_total_size,
        policy,
        sync_interval: std::time::Duration::from_millis(args.audit_log_sync_interval),
        flood_window: args.audit_stranger_window,
    })
    .context("cannot open the audit log")
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Ship { audit_dir, to } => {
            if !audit_dir.is_dir() {
                anyhow::bail!("{}: not an audit directory", audit_dir.display());
            }
            let done = audit::ship::ship(&audit_dir, &to)?;
            match &done.mark {
                Some(mark) => println!(
                    "shipped {} file(s) ({} already there); {} marked as shipped up to {mark}",
                    done.copied.len(),
                    done.present,
                    audit_dir.display()
                ),
                None => println!("nothing to ship: no rotated audit files yet"),
            }
            Ok(())
        }
        AuditCommand::Verify { path, allow_pruned } => {
            if !path.exists() {
                anyhow::bail!("{}: no such file or directory", path.display());
            }
            match audit::verify(&path) {
                Ok(v) => match v.starts_after {
                    // Missing history is missing evidence: only the caller who knows it was
                    // shipped elsewhere may accept it.
                    Some(h) if !allow_pruned => {
                        eprintln!(
                            "audit log incomplete: {} lines verified in {} files, but the chain starts after pruned history (prevHash {h}); pass --allow-pruned if the older files were shipped elsewhere",
                            v.lines, v.files
                        );
                        std::process::exit(1);
                    }
                    Some(h) => {
                        println!(
                            "{} lines verified in {} files, chain intact (starts after pruned history, prevHash {h})",
                            v.lines, v.files
                        );
                        Ok(())
                    }
                    None => {
                        println!(
                            "{} lines verified in {} files, chain intact",
                            v.lines, v.files
                        );
                        Ok(())
                    }
                },
                Err(finding) => {
                    eprintln!("audit log broken: {finding}");
                    std::process::exit(1);
                }
            }
        }
    }
}
