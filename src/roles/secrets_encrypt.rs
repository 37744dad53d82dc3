//! `rampart secrets-encrypt status|rotate-keys`: the operator's view of encryption at rest,
//! like k3s's `secrets-encrypt` command, over the API server's `/rampart/v1/secrets-encrypt/`
//! endpoints with the admin kubeconfig (so it works from any host holding that file).
//!
//! Output: a short table (or `-o json`, the endpoint's document); errors are one line on stderr
//! and a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::{AdminTarget, OutputFormat, SecretsEncryptCommand};

const STATUS: &str = "/rampart/v1/secrets-encrypt/status";
const ROTATE: &str = "/rampart/v1/secrets-encrypt/rotate-keys";

/// Consecutive failed polls `--wait` tolerates (a server restarting mid-rotation).
const WAIT_RETRIES: u32 = 60;

fn kubeconfig(target: &AdminTarget) -> PathBuf {
    target
        .kubeconfig
        .clone()
        .unwrap_or_else(|| target.data_dir.join("admin.kubeconfig"))
}

/// One line from a kube error: the Status message when the server sent one.
fn one_line(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => anyhow::anyhow!("{} ({})", status.message, status.code),
        other => {
            anyhow::anyhow!("cannot reach the API server (is rampart server running?): {other}")
        }
    }
}

async fn call(client: &kube::Client, method: http::Method, path: &str) -> anyhow::Result<Value> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .context("cannot build the request")?;
    let text = client.request_text(req).await.map_err(one_line)?;
    serde_json::from_str(&text).context("the server's answer is not JSON")
}

pub async fn run(cmd: SecretsEncryptCommand) -> anyhow::Result<()> {
    match cmd {
        SecretsEncryptCommand::Status { target, output } => {
            let client = crate::client::from_kubeconfig(&kubeconfig(&target)).await?;
            let status = call(&client, http::Method::GET, STATUS).await?;
            print(&status, output)
        }
        SecretsEncryptCommand::RotateKeys { target, wait } => {
            let client = crate::client::from_kubeconfig(&kubeconfig(&target)).await?;
            let mut status = call(&client, http::Method::POST, ROTATE).await?;
            if wait {
                let mut failures = 0;
                while status["running"].as_bool() == Some(true) || status["stage"] != "done" {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match call(&client, http::Method::GET, STATUS).await {
                        Ok(s) => {
                            failures = 0;
                            status = s;
                        }
                        Err(e) if failures < WAIT_RETRIES => {
                            failures += 1;
                            tracing::debug!(error = %e, "status poll failed; retrying");
                        }
                        Err(e) => return Err(e),
                    }
                    if status["running"] == false && status["stage"] != "done" {
                        bail!(
                            "the rotation stopped at stage {}: {}",
                            status["stage"].as_str().unwrap_or("?"),
                            status["lastError"].as_str().unwrap_or("no error reported")
                        );
                    }
                }
            } else {
                println!("key rotation started; `rampart secrets-encrypt status` shows progress");
            }
            print(&status, OutputFormat::Table)
        }
    }
}

fn print(status: &Value, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let readable: Vec<String> = status["readableKeys"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    let mut stage = s(&status["stage"]);
    if stage == "re-encrypting" {
        let done = status["rotation"]["done"].as_u64().unwrap_or(0);
        stage = format!("re-encrypting ({done} objects done)");
    }
    if status["running"] == true {
        stage.push_str(", running");
    }
    println!("{:<16}{}", "Write key:", s(&status["writeKey"]));
    println!("{:<16}{}", "Readable keys:", readable.join(", "));
    println!("{:<16}{}", "Rotation:", stage);
    if let Some(err) = status["lastError"].as_str() {
        println!("{:<16}{}", "Last error:", err);
    }
    println!();
    println!("{:<12}OBJECTS", "KEY ID");
    if let Some(objects) = status["objects"].as_object() {
        for (id, n) in objects {
            println!("{:<12}{}", id, n.as_u64().unwrap_or(0));
        }
    }
    let plain = status["unencrypted"].as_u64().unwrap_or(0);
    if plain > 0 {
        println!("{:<12}{}", "(none)", plain);
    }
    Ok(())
}
