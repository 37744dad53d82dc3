//! `/healthz`, `/livez`, `/readyz` (with `?verbose` per-check lines and `/readyz/<check>`) and
//! `/version`, in upstream's plain-text format (`[+]ping ok` ... `readyz check passed`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Response;
use serde_json::json;

use crate::apiserver::edge::body::{json_response, text_response, Body};
use crate::apiserver::edge::request::Query;
use crate::apiserver::State;

pub use crate::api::version::KUBE_MINOR;

/// First-list flags of the in-server followers (RBAC's is `Rbac::ready`).
#[derive(Default)]
pub struct Feeds {
    pub cedar_policies: Arc<AtomicBool>,
    pub node_graph: Arc<AtomicBool>,
}

/// The followers that have not delivered their first list yet (empty when all have).
fn unsynced(state: &State) -> Vec<&'static str> {
    let mut out = Vec::new();
    if state.enforcement.rbac().is_some_and(|r| !r.ready()) {
        out.push("RBAC");
    }
    if !state.feeds.cedar_policies.load(Ordering::Acquire) {
        out.push("CedarPolicy");
    }
    if !state.feeds.node_graph.load(Ordering::Acquire) {
        out.push("node graph");
    }
    out
}

/// Start-up only (never a request handler): wait up to `limit` for the followers' first
/// lists, so the ready line normally comes after them.
pub async fn wait_for_feeds(state: &State, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !unsynced(state).is_empty() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(missing = ?unsynced(state), "serving before every follower listed; /readyz says not ready");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn run_check(state: &Arc<State>, name: &str) -> Result<(), String> {
    match name {
        "ping" => Ok(()),
        // The audit writer can take a line now (the request path refuses requests otherwise).
        "log" => match state.enforcement.audit() {
            Some(sink) if !sink.writable() => Err("the audit log cannot be written".into()),
            _ => Ok(()),
        },
        "etcd" => {
            // A real read through the store, so a wedged store shows up here.
            state
                .store
                .get(
                    &crate::apiserver::storage::Builtin::Namespaces.key("", "default"),
                    None,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "poststarthook/bootstrap" => {
            if state.ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not finished".into())
            }
        }
        "informer-sync" => {
            let missing = unsynced(state);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("waiting for {}", missing.join(", ")))
            }
        }
        "shutdown" => {
            if state.draining.load(Ordering::Acquire) {
                Err("the server is shutting down".into())
            } else {
                Ok(())
            }
        }
        other => Err(format!("unknown check {other}")),
    }
}

fn checks_for(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "/readyz" => &[
            "ping",
            "log",
            "etcd",
            "informer-sync",
            "poststarthook/bootstrap",
            "shutdown",
        ],
        "/livez" => &["ping", "log", "etcd", "poststarthook/bootstrap"],
        _ => &["ping", "log", "etcd", "poststarthook/bootstrap"],
    }
}

pub async fn check(
    state: &Arc<State>,
    endpoint: &str,
    query: &Query,
    only: Option<&str>,
) -> Response<Body> {
    let name = endpoint.trim_start_matches('/');
    if let Some(one) = only {
        if !checks_for(endpoint).contains(&one) {
            return text_response(404, format!("404 page not found: no check {one:?}"));
        }
        return match run_check(state, one).await {
            Ok(()) => text_response(200, "ok"),
            Err(e) => text_response(500, format!("internal server error: {e}")),
        };
    }
    let exclude: Vec<&str> = query
        .0
        .get("exclude")
        .map(|s| vec![s.as_str()])
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut failed = false;
    for c in checks_for(endpoint) {
        if exclude.contains(c) {
            lines.push(format!("[+]{c} excluded: ok"));
            continue;
        }
        match run_check(state, c).await {
            Ok(()) => lines.push(format!("[+]{c} ok")),
            Err(e) => {
                failed = true;
                lines.push(format!("[-]{c} failed: reason withheld ({e})"));
            }
        }
    }
    let verdict = if failed {
        format!("{name} check failed")
    } else {
        format!("{name} check passed")
    };
    if query.0.contains_key("verbose") || failed {
        lines.push(verdict);
        text_response(if failed { 500 } else { 200 }, lines.join("\n") + "\n")
    } else {
        text_response(200, "ok")
    }
}

pub fn version() -> Response<Body> {
    json_response(
        200,
        &json!({
            "major": "1",
            "minor": KUBE_MINOR,
            "emulationMajor": "1",
            "emulationMinor": KUBE_MINOR,
            "gitVersion": crate::api::version::git_version(),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": "linux/amd64",
        }),
    )
}
