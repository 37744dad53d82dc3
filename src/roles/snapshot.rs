//! `rampart snapshot save|ls|restore|prune` (k3s's `etcd-snapshot`). `save` asks the running
//! server over `/rampart/v1/snapshots` with the admin kubeconfig (the server holds the store and
//! takes a consistent checkpoint); `ls`, `prune` and `restore` work on files and need no server.
//! Errors are one line on stderr and a non-zero exit.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{OutputFormat, SnapshotCommand};
use crate::store::snapshot;

const SNAPSHOTS: &str = "/rampart/v1/snapshots";

fn one_line(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => anyhow::anyhow!("{} ({})", status.message, status.code),
        other => {
            anyhow::anyhow!("cannot reach the API server (is rampart server running?): {other}")
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

pub async fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save {
            target,
            name,
            output,
        } => {
            let name = name.unwrap_or_else(|| format!("on-demand-{}", unix_now()));
            if !snapshot::valid_name(&name) {
                bail!("{}", snapshot::Error::Name(name));
            }
            let kubeconfig = target
                .kubeconfig
                .clone()
                .unwrap_or_else(|| target.data_dir.join("admin.kubeconfig"));
            let client = crate::client::from_kubeconfig(&kubeconfig).await?;
            let body = json!({ "name": name, "stream": output.is_some() });
            let req = http::Request::builder()
                .method(http::Method::POST)
                .uri(SNAPSHOTS)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body)?)
                .context("cannot build the request")?;
            match output {
                Some(path) => {
                    // The sealed bytes come back base64-encoded in a JSON document.
                    let text = client.request_text(req).await.map_err(one_line)?;
                    let v: Value =
                        serde_json::from_str(&text).context("the server's answer is not JSON")?;
                    let bytes = v["snapshot"]
                        .as_str()
                        .and_then(|b| {
                            use base64::Engine;
                            base64::engine::general_purpose::STANDARD.decode(b).ok()
                        })
                        .context("the server's answer holds no snapshot")?;
                    write_output(&path, &bytes)?;
                    println!("saved {name} to {} ({} bytes)", path.display(), bytes.len());
                }
                None => {
                    let text = client.request_text(req).await.map_err(one_line)?;
                    let v: Value =
                        serde_json::from_str(&text).context("the server's answer is not JSON")?;
                    println!(
                        "saved {} ({} bytes, revision {})",
                        v["path"].as_str().unwrap_or(&name),
                        v["size"],
                        v["revision"]
                    );
                }
            }
            Ok(())
        }
        SnapshotCommand::Ls { data_dir, output } => {
            let list = snapshot::list(&data_dir.join("snapshots"))?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                OutputFormat::Table => {
                    println!("{:<40} {:>12} {:>10}  CREATED", "NAME", "SIZE", "REVISION");
                    for l in list {
                        println!(
                            "{:<40} {:>12} {:>10}  {}",
                            l.name,
                            l.size,
                            l.revision,
                            rfc3339(l.created)
                        );
                    }
                }
            }
            Ok(())
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            key_file,
        } => {
            let progress: Option<Box<dyn FnMut(u64, u64)>> = if std::io::stderr().is_terminal() {
                let mut last = 0u64;
                Some(Box::new(move |read: u64, total: u64| {
                    let pct = read.saturating_mul(100) / total.max(1);
                    if pct != last {
                        last = pct;
                        eprint!("\rrestoring: {pct:>3}%");
                        if pct == 100 {
                            eprintln!();
                        }
                    }
                }))
            } else {
                None
            };
            let header = snapshot::restore(&file, &data_dir, &key_file, progress)?;
            println!(
                "restored snapshot {} (revision {}, taken {}) into {}; start it with: rampart server --data-dir {}",
                header.name,
                header.revision,
                rfc3339(header.created),
                data_dir.display(),
                data_dir.display()
            );
            Ok(())
        }
        SnapshotCommand::Prune {
            data_dir,
            snapshot_retention,
        } => {
            let removed = snapshot::prune(&data_dir.join("snapshots"), snapshot_retention)?;
            for name in &removed {
                println!("removed {name}");
            }
            println!("{} scheduled snapshot(s) removed", removed.len());
            Ok(())
        }
    }
}

/// Write the sealed bytes next to the target and rename, so a failed save leaves no partial
/// file under the user's name.
fn write_output(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
