//! `rampart cert check|rotate|rotate-ca|revoke`. `check` reads certificate files offline (a
//! server's or an agent's data directory); the others ask the running server through its
//! `/rampart/v1/certificates` operations with the admin kubeconfig, so the one process that
//! owns the keys makes every change and picks it up without a restart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{CertArgs, CertCommand, ServerConnection};
use crate::pki::inventory;

pub async fn run(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::Check { data_dir } => check(&data_dir),
        CertCommand::Rotate { conn, services } => {
            let out = call(
                &conn,
                "POST",
                "/rampart/v1/certificates/rotate",
                Some(json!({"services": services})),
            )
            .await?;
            let renewed = names(&out["renewed"]);
            println!(
                "renewed: {}",
                if renewed.is_empty() {
                    "nothing".into()
                } else {
                    renewed.join(", ")
                }
            );
            Ok(())
        }
        CertCommand::RotateCa {
            conn,
            timeout,
            force,
        } => rotate_ca(&conn, timeout, force).await,
        CertCommand::Revoke { conn, serial, node } => {
            let body = match (serial, node) {
                (Some(s), None) => json!({"serial": s}),
                (None, Some(n)) => json!({"node": n}),
                _ => bail!("give a serial number or --node NAME"),
            };
            let out = call(
                &conn,
                "POST",
                "/rampart/v1/certificates/revocations",
                Some(body),
            )
            .await?;
            let r = &out["revoked"];
            match (r["serial"].as_str(), r["node"].as_str()) {
                (Some(s), _) => println!("revoked certificate {s}"),
                (_, Some(n)) => println!("revoked every certificate of node {n} issued so far"),
                _ => println!("revoked"),
            }
            Ok(())
        }
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn call(
    conn: &ServerConnection,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let kubeconfig = conn.kubeconfig_path();
    let client = crate::client::from_kubeconfig(&kubeconfig).await?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .context("cannot build the request")?;
    let text = client
        .request_text(req)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(e)))?;
    serde_json::from_str(&text).context("the server's answer is not JSON")
}

fn describe(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => format!("cannot reach the server: {other}"),
    }
}

async fn rotate_ca_phase(conn: &ServerConnection, phase: &str) -> anyhow::Result<Value> {
    call(
        conn,
        "POST",
        "/rampart/v1/certificates/rotate-ca",
        Some(json!({ "phase": phase })),
    )
    .await
}

async fn rotate_ca(
    conn: &ServerConnection,
    timeout: std::time::Duration,
    force: bool,
) -> anyhow::Result<()> {
    let status = rotate_ca_phase(conn, "status").await?;
    if status["inProgress"].as_bool() != Some(true) {
        let out = rotate_ca_phase(conn, "begin").await?;
        println!(
            "new CA in place, trusted alongside the old one; reissued: {}",
            names(&out["renewed"]).join(", ")
        );
    } else {
        println!("a CA rotation is in its overlap phase; continuing it");
    }
    let started = Instant::now();
    let mut last: Vec<String> = Vec::new();
    loop {
        let status = rotate_ca_phase(conn, "status").await?;
        let pending = names(&status["nodesOnOldCertificates"]);
        if pending.is_empty() {
            break;
        }
        if pending != last {
            println!("waiting for nodes to renew: {}", pending.join(", "));
            last = pending.clone();
        }
        if started.elapsed() >= timeout {
            if force {
                println!(
                    "retiring the old CA anyway; these nodes are cut off: {}",
                    pending.join(", ")
                );
                break;
            }
            bail!(
                "nodes {} have not renewed within {}s; the old CA stays trusted (run `rampart cert rotate-ca` again to continue, or add --force)",
                pending.join(", "),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let out = rotate_ca_phase(conn, "finish").await?;
    println!(
        "old CA retired; reissued: {}",
        names(&out["renewed"]).join(", ")
    );
    Ok(())
}

/// Certificate files under `dir/pki` and `dir/*/pki` (an embedded agent's), sorted.
fn cert_files(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.join("pki")];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path().join("pki");
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "crt") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn check(data_dir: &Path) -> anyhow::Result<()> {
    let files = cert_files(data_dir);
    if files.is_empty() {
        bail!(
            "no certificates under {} (is it a rampart data directory?)",
            data_dir.display()
        );
    }
    let now = jiff::Timestamp::now().as_second();
    let mut rows = vec![[
        "SUBJECT".to_string(),
        "ISSUER".into(),
        "SERIAL".into(),
        "NOT AFTER".into(),
        "DAYS LEFT".into(),
        "FILE".into(),
    ]];
    let mut bad = 0;
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("rampart: cannot read {}: {e}", f.display());
                bad += 1;
                continue;
            }
        };
        let certs = match inventory::parse_all_pem(&text) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) | Err(_) => {
                eprintln!("rampart: {} holds no readable certificate", f.display());
                bad += 1;
                continue;
            }
        };
        // A chain file describes its first certificate; a bundle lists each anchor.
        let bundle = certs.iter().all(|c| c.is_ca && c.subject == c.issuer);
        let shown = if bundle { &certs[..] } else { &certs[..1] };
        for c in shown {
            let not_after = jiff::Timestamp::from_second(c.not_after)
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_default();
            let days = (c.not_after - now) as f64 / 86400.0;
            rows.push([
                short_dn(&c.subject),
                short_dn(&c.issuer),
                c.serial.clone(),
                not_after,
                if days < 0.0 {
                    "EXPIRED".into()
                } else {
                    format!("{days:.1}")
                },
                f.display().to_string(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    if bad > 0 {
        bail!("{bad} file(s) could not be read");
    }
    Ok(())
}

/// `CN=x, O=y` as people read it.
fn short_dn(dn: &str) -> String {
    dn.to_string()
}
