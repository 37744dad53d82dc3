//! `/healthz`, `/livez`, `/readyz` (with `?verbose` per-check lines and `/readyz/<check>`) and
//! `/version`, in upstream's plain-text format (`[+]ping ok` ... `readyz check passed`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Response;
use serde_json::json;

use super::body::{json_response, text_response, Body};
use super::request::Query;
use super::State;

/// The Kubernetes release whose API we serve.
pub const KUBE_MINOR: &str = "37";

async fn run_check(state: &Arc<State>, name: &str) -> Result<(), String> {
    match name {
        "ping" => Ok(()),
        "log" => Ok(()),
        "etcd" => {
            // A real read through the store, so a wedged store shows up here.
            state
                .store
                .get("/registry/core/namespaces/default", None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "informer-sync" | "poststarthook/bootstrap" => {
            if state.ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not finished".into())
            }
        }
        "shutdown" => Ok(()),
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
            "gitVersion": format!("v1.{KUBE_MINOR}.0+rampart.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": "linux/amd64",
        }),
    )
}
