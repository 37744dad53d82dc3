//! Container lifecycle hooks, as upstream's `lifecycle/handlers.go`: `postStart` right
//! after the container starts (the worker waits for it; a failure is a
//! `FailedPostStartHook` event and the container is killed, then restarted by its policy)
//! and `preStop` before SIGTERM, bounded by the termination grace period (a failure is a
//! `FailedPreStopHook` event; the container is stopped anyway). Actions: `httpGet` (dialled
//! in the pod's network namespace, like probes), `sleep`, and `exec` (run in the container by
//! its shim, `probe::exec`).
//!
//! Messages follow upstream: an HTTP hook failure names the path and the container; an exec
//! hook failure names the command, the container, the error and the output
//! (`Exec lifecycle hook ([cmd]) for Container "c" in Pod "p" failed - error: ..., message:
//! "..."`); a sleep hook only says it failed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::probe::{Action, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    pub fn reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Hook::PostStart => "PostStartHook",
            Hook::PreStop => "PreStopHook",
        }
    }

    pub fn handler(self, c: &Container) -> Option<&LifecycleHandler> {
        let l = c.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => l.post_start.as_ref(),
            Hook::PreStop => l.pre_stop.as_ref(),
        }
    }
}

/// Runs `c`'s hook (if it has one) within `timeout`; `Err` is the event message.
pub async fn run(
    hook: Hook,
    c: &Container,
    pod_name: &str,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let Some(h) = hook.handler(c) else {
        return Ok(());
    };
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let Some(at) = &target.exec else {
            return Err(format!(
                "{} failed: the container is not running",
                hook.word()
            ));
        };
        return super::probe::exec::hook(at, &cmd, timeout)
            .await
            .map_err(|(err, output)| {
                format!(
                    "Exec lifecycle hook ([{}]) for Container {:?} in Pod {:?} failed - error: {err}, message: {output:?}",
                    cmd.join(" "),
                    c.name,
                    pod_name
                )
            });
    }
    let outcome = async {
        let action = Action::from_handler(h, target).await?;
        // The HTTP client's own timeout is the whole budget: hooks have no timeoutSeconds.
        action.perform(target, timeout).await
    };
    let r = match tokio::time::timeout(timeout, outcome).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    };
    r.map_err(|e| match h.http_get.as_ref() {
        Some(g) => format!(
            "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {e}",
            g.path.as_deref().unwrap_or("/"),
            c.name,
            pod_name
        ),
        None => format!("{} failed: {e}", hook.word()),
    })
}
