//! Getting a container's image before it starts (upstream's `images/image_manager.go`
//! `EnsureImageExists` and `pull_secrets`): `imagePullPolicy` (unset: `Always` for `:latest`
//! or no tag, else `IfNotPresent`), the pod's `imagePullSecrets` (docker config Secrets, read
//! with the node's identity — the node authorizer lets a node read the pull secrets of pods
//! bound to it), and upstream's back-off per image (10 s doubling to 5 min; meanwhile the
//! container waits in `ImagePullBackOff`).
//!
//! Waiting reasons and Events as upstream reports them: `ErrImagePull` (Events `Failed`:
//! "Failed to pull image …" and "Error: ErrImagePull"), `ImagePullBackOff` (Event `BackOff`
//! "Back-off pulling image …"), `ErrImageNeverPull`, `InvalidImageName` (Event
//! `InspectFailed`); `Pulling` and `Pulled` ("Successfully pulled image … in 1.2s (1.2s
//! including waiting). Image size: N bytes." or "… already present on machine").

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;
use serde::Deserialize;

use super::events::{self, Ev};
use super::Shared;
use crate::kubelet::images::registries::Auth;
use crate::kubelet::images::{Keyring, PullError};
use crate::kubelet::runtime::image::{reference, Image};

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Per pod: the back-off of each image and which one-time events were recorded.
#[derive(Default)]
pub struct PullState {
    backoff: HashMap<String, Backoff>,
    said: HashSet<String>,
}

struct Backoff {
    delay: Duration,
    since: Instant,
    /// The last pull's error (shown in the `ImagePullBackOff` message).
    error: String,
    /// Failed pulls so far (keys the one-time `BackOff` event of each window).
    failures: u32,
}

/// Why the container cannot start yet: (waiting reason, message).
pub type Waiting = (String, String);

/// The pull policy upstream defaults to when the pod does not say.
pub fn default_policy(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn event(
    shared: &Shared,
    pod: &Pod,
    reason: &str,
    message: String,
    warning: bool,
    fp: Option<String>,
) {
    events::record(
        &shared.clients.borrow().clone(),
        &shared.node_name,
        pod,
        Ev {
            reason,
            message,
            warning,
            field_path: fp,
        },
    );
}

/// Make sure the container's image is in the store: the image, or why the container waits.
pub async fn ensure(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    init: bool,
    state: &mut PullState,
) -> Result<Image, Waiting> {
    let fp = events::field_path(init, &c.name);
    let image_ref = c.image.clone().unwrap_or_default();
    if reference::normalize(&image_ref).is_err() {
        let msg = format!(
            "Failed to apply default image tag \"{image_ref}\": couldn't parse image name \"{image_ref}\": invalid reference format"
        );
        if state.said.insert(format!("invalid:{}", c.name)) {
            event(shared, pod, "InspectFailed", msg.clone(), true, fp);
        }
        return Err(("InvalidImageName".into(), msg));
    }
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| default_policy(&image_ref).to_string());
    let present = shared.store.resolve(&image_ref).ok();
    match (policy.as_str(), present) {
        ("Never", Some(i)) | ("IfNotPresent", Some(i)) => {
            event(
                shared,
                pod,
                "Pulled",
                format!("Container image \"{image_ref}\" already present on machine"),
                false,
                fp,
            );
            return Ok(i);
        }
        ("Never", None) => {
            let msg =
                format!("Container image \"{image_ref}\" is not present with pull policy of Never");
            if state.said.insert(format!("never:{}", c.name)) {
                event(shared, pod, "ErrImageNeverPull", msg.clone(), true, fp);
            }
            return Err(("ErrImageNeverPull".into(), msg));
        }
        _ => {}
    }
    let now = Instant::now();
    if let Some(b) = state.backoff.get(&image_ref) {
        if now.duration_since(b.since) < b.delay {
            if state
                .said
                .insert(format!("backoff:{image_ref}:{}", b.failures))
            {
                event(
                    shared,
                    pod,
                    "BackOff",
                    format!("Back-off pulling image \"{image_ref}\""),
                    false,
                    fp.clone(),
                );
                event(
                    shared,
                    pod,
                    "Failed",
                    "Error: ImagePullBackOff".into(),
                    true,
                    fp,
                );
            }
            return Err((
                "ImagePullBackOff".into(),
                format!(
                    "Back-off pulling image \"{image_ref}\": ErrImagePull: {}",
                    b.error
                ),
            ));
        }
    }
    event(
        shared,
        pod,
        "Pulling",
        format!("Pulling image \"{image_ref}\""),
        false,
        fp.clone(),
    );
    let keyring = keyring(shared, pod, state).await;
    let started = Instant::now();
    match shared.puller.pull(&image_ref, &keyring).await {
        Ok(p) => {
            state.backoff.remove(&image_ref);
            let took = go_duration(started.elapsed());
            event(
                shared,
                pod,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image_ref}\" in {took} ({took} including waiting). Image size: {} bytes.",
                    p.size
                ),
                false,
                fp,
            );
            Ok(p.image)
        }
        Err(e) => {
            let reason = match e {
                PullError::InvalidName(_) => "InvalidImageName",
                _ => "ErrImagePull",
            };
            let msg = e.to_string();
            event(
                shared,
                pod,
                "Failed",
                format!("Failed to pull image \"{image_ref}\": {msg}"),
                true,
                fp.clone(),
            );
            event(shared, pod, "Failed", format!("Error: {reason}"), true, fp);
            let b = state.backoff.entry(image_ref).or_insert(Backoff {
                delay: Duration::ZERO,
                since: now,
                error: String::new(),
                failures: 0,
            });
            b.delay = if b.delay.is_zero() {
                BACKOFF_START
            } else {
                (b.delay * 2).min(BACKOFF_MAX)
            };
            b.since = Instant::now();
            b.error = msg.clone();
            b.failures += 1;
            Err((reason.into(), msg))
        }
    }
}

/// Go's `time.Duration` text, as upstream's message has it (`523ms`, `1.062s`).
fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

impl From<DockerAuth> for Auth {
    fn from(d: DockerAuth) -> Auth {
        Auth {
            username: d.username,
            password: d.password,
            auth: d.auth,
            identitytoken: d.identitytoken,
        }
    }
}

/// Credentials in a `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` Secret.
pub fn secret_credentials(s: &Secret) -> Vec<(String, Auth)> {
    let data = s.data.clone().unwrap_or_default();
    let mut out: Vec<(String, Auth)> = Vec::new();
    if let Some(b) = data.get(".dockerconfigjson") {
        if let Ok(c) = serde_json::from_slice::<DockerConfig>(&b.0) {
            out.extend(c.auths.into_iter().map(|(k, v)| (k, v.into())));
        }
    } else if let Some(b) = data.get(".dockercfg") {
        if let Ok(c) = serde_json::from_slice::<HashMap<String, DockerAuth>>(&b.0) {
            out.extend(c.into_iter().map(|(k, v)| (k, v.into())));
        }
    }
    // Deterministic order (a JSON object has none): exact hosts before wildcards.
    out.sort_by(|a, b| {
        a.0.starts_with("*.")
            .cmp(&b.0.starts_with("*."))
            .then(a.0.cmp(&b.0))
    });
    out
}

/// The pod's pull secrets, read with the node's identity; a missing one is an event, as
/// upstream ("Unable to retrieve some image pull secrets").
async fn keyring(shared: &Shared, pod: &Pod, state: &mut PullState) -> Keyring {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Keyring::default();
    }
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(shared.clients.borrow().clone(), &ns);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match api.get(&n).await {
            Ok(s) => out.extend(secret_credentials(&s)),
            Err(e) => {
                tracing::warn!(secret = %n, namespace = %ns, error = %e, "cannot read an image pull secret");
                missing.push(n);
            }
        }
    }
    if !missing.is_empty() && state.said.insert(format!("secrets:{}", missing.join(","))) {
        event(
            shared,
            pod,
            "FailedToRetrieveImagePullSecret",
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            ),
            true,
            None,
        );
    }
    Keyring(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_durations() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("busybox:latest"), "Always");
        assert_eq!(default_policy("reg:5000/busybox"), "Always");
        assert_eq!(default_policy("reg:5000/busybox:1"), "IfNotPresent");
        assert_eq!(default_policy("busybox@sha256:aa"), "IfNotPresent");
        assert_eq!(go_duration(Duration::from_millis(523)), "523ms");
        assert_eq!(go_duration(Duration::from_millis(1062)), "1.062s");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn docker_config_secrets() {
        let mut s = Secret::default();
        let cfg = br#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p","email":"x"},"*.example.com":{"auth":"dTpw"}}}"#;
        s.data = Some(
            [(
                ".dockerconfigjson".to_string(),
                k8s_openapi::ByteString(cfg.to_vec()),
            )]
            .into(),
        );
        let c = secret_credentials(&s);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "127.0.0.1:5000");
        assert_eq!(c[0].1.basic(), Some(("u".into(), "p".into())));
        assert_eq!(c[1].1.basic(), Some(("u".into(), "p".into())));
    }
}
