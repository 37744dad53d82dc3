//! A pod's container → the runtime's spec, as upstream's `kuberuntime_container.go` and
//! containerd's CRI plugin build it: command/args against the image's entrypoint/cmd with
//! `$(VAR)` expansion, environment (image, then `HOSTNAME`, then the container's own with
//! `fieldRef`s resolved), user and groups, containerd's default capabilities with add/drop,
//! seccomp `RuntimeDefault` unless `Unconfined` (★ upstream needs `--seccomp-default`),
//! `no_new_privs` for `allowPrivilegeEscalation: false`, runc's masked paths unless
//! privileged, the pod's files (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
//! termination log) and volume mounts, cgroup path and limits, CRI log path.
//!
//! Errors here are upstream's `CreateContainerConfigError`: the pod asks for something the
//! node cannot give as asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

use super::resources::{self, Qos};
use crate::kubelet::runtime::image::{Image, Store};
use crate::kubelet::runtime::spec::{self, Mount, Process, Root, Spec, User, DEFAULT_CAPS};

pub const ANN_NAME: &str = "io.kubernetes.container.name";
pub const ANN_ATTEMPT: &str = "io.kubernetes.container.restartCount";
pub const ANN_INIT: &str = "io.kubernetes.container.init";

/// Everything the translation needs besides the pod and container.
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub init: bool,
    pub attempt: u32,
    pub image: &'a Image,
    pub store: &'a Store,
    pub pod_dir: &'a Path,
    pub log_dir: &'a Path,
    pub cgroup_root: &'a str,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    /// Volume name → host directory prepared by the volume manager.
    pub volumes: &'a BTreeMap<String, PathBuf>,
}

pub fn container_id(name: &str, attempt: u32) -> String {
    format!("{name}-{attempt}")
}

/// The CRI log directory of a pod: `<root>/<ns>_<name>_<uid>`.
pub fn pod_log_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

pub fn build(i: &Inputs<'_>) -> Result<Spec, String> {
    let c = i.container;
    let pod_spec = i.pod.spec.as_ref().ok_or("pod has no spec")?;
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod_spec.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);

    let env = environment(i)?;
    let args = command(c, &i.image.config, &env)?;
    let layers: Vec<PathBuf> = i
        .image
        .layers
        .iter()
        .map(|l| i.store.layer_dir(l))
        .collect();

    let (uid, gid) = user(i, &sc, &psc, &layers)?;
    if uid == 0 && sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    // The process's groups as containerd gives them: the primary group, the user's groups in
    // the image's /etc/group (unless `supplementalGroupsPolicy: Strict`), then the pod's
    // supplementalGroups and fsGroup (`id` shows them sorted: the kernel sorts the list).
    let mut groups: Vec<u32> = vec![gid];
    if psc.supplemental_groups_policy.as_deref() != Some("Strict") {
        groups.extend(image_groups(&layers, uid));
    }
    groups.extend(
        psc.supplemental_groups
            .iter()
            .flatten()
            .filter_map(|g| u32::try_from(*g).ok()),
    );
    if let Some(fs) = psc.fs_group.and_then(|g| u32::try_from(g).ok()) {
        groups.push(fs);
    }
    groups.sort_unstable();
    groups.dedup();

    let capabilities = capabilities(&sc, privileged)?;
    let seccomp = if privileged {
        None
    } else {
        let profile = sc
            .seccomp_profile
            .as_ref()
            .or(psc.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        match profile {
            None | Some("RuntimeDefault") => Some("runtime/default".to_string()),
            Some("Unconfined") => None,
            Some(other) => {
                return Err(format!(
                    "seccomp profile type {other:?} is not supported on this node"
                ))
            }
        }
    };
    let qos = resources::qos(i.pod);
    let uid_str = i.pod.metadata.uid.as_deref().unwrap_or_default();
    let id = container_id(&c.name, i.attempt);
    let cgroup = format!(
        "{}/{}",
        resources::pod_cgroup(i.cgroup_root, qos, uid_str),
        id
    );
    let mounts = mounts(i, &id, &env)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(ANN_NAME.to_string(), c.name.clone());
    annotations.insert(ANN_ATTEMPT.to_string(), i.attempt.to_string());
    annotations.insert(ANN_INIT.to_string(), i.init.to_string());
    Ok(Spec {
        process: Process {
            args,
            env,
            cwd: c
                .working_dir
                .clone()
                .or_else(|| i.image.config.working_dir.clone())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: User {
                uid,
                gid,
                additional_gids: groups,
            },
            capabilities,
            no_new_privileges: !privileged && sc.allow_privilege_escalation == Some(false),
            oom_score_adj: Some(resources::oom_score_adj(qos, c)),
            terminal: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
        },
        root: Root {
            layers,
            readonly: sc.read_only_root_filesystem.unwrap_or(false),
        },
        mounts,
        linux: spec::Linux {
            seccomp,
            masked_paths: !privileged && sc.proc_mount.as_deref() != Some("Unmasked"),
            cgroups_path: Some(cgroup),
            resources: resources::container_resources(c),
            host_pid: pod_spec.host_pid.unwrap_or(false),
        },
        annotations,
        log_path: Some(
            pod_log_dir(i.log_dir, i.pod)
                .join(&c.name)
                .join(format!("{}.log", i.attempt)),
        ),
        log_max_bytes: None,
        log_max_files: None,
    })
}

fn capabilities(sc: &SecurityContext, privileged: bool) -> Result<Vec<String>, String> {
    if privileged {
        return Ok(crate::kubelet::runtime::container::CAP_NAMES
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect());
    }
    let norm = |c: &str| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    if let Some(cs) = &sc.capabilities {
        for a in cs.add.iter().flatten() {
            let a = norm(a);
            if a == "CAP_ALL" {
                caps = crate::kubelet::runtime::container::CAP_NAMES
                    .iter()
                    .map(|c| format!("CAP_{c}"))
                    .collect();
            } else if !caps.contains(&a) {
                caps.push(a);
            }
        }
        for d in cs.drop.iter().flatten() {
            let d = norm(d);
            if d == "CAP_ALL" {
                caps.clear();
            } else {
                caps.retain(|c| c != &d);
            }
        }
    }
    crate::kubelet::runtime::container::cap_mask(&caps).map_err(|e| e.to_string())?;
    Ok(caps)
}

fn environment(i: &Inputs<'_>) -> Result<Vec<String>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| *ek == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for e in i.image.config.env.iter().flatten() {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(&mut env, k.to_string(), v.to_string());
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(
            &mut env,
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    set(&mut env, "HOSTNAME".into(), hostname(i.pod));
    let meta = &i.pod.metadata;
    for e in i.container.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => meta.name.clone().unwrap_or_default(),
                    "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                    "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                    "spec.nodeName" => i.node_name.to_string(),
                    "spec.serviceAccountName" => i
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                    "status.hostIP" | "status.hostIPs" => i.host_ip.to_string(),
                    p if p.starts_with("metadata.labels['") => {
                        let k = p
                            .trim_start_matches("metadata.labels['")
                            .trim_end_matches("']");
                        meta.labels
                            .as_ref()
                            .and_then(|l| l.get(k).cloned())
                            .unwrap_or_default()
                    }
                    p if p.starts_with("metadata.annotations['") => {
                        let k = p
                            .trim_start_matches("metadata.annotations['")
                            .trim_end_matches("']");
                        meta.annotations
                            .as_ref()
                            .and_then(|l| l.get(k).cloned())
                            .unwrap_or_default()
                    }
                    p => return Err(format!("env {}: fieldRef {p} is not supported yet", e.name)),
                }
            } else {
                return Err(format!(
                    "env {}: only fieldRef sources are supported yet",
                    e.name
                ));
            }
        } else {
            let current: BTreeMap<String, String> = env.iter().cloned().collect();
            expand(e.value.as_deref().unwrap_or_default(), &current)
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Upstream's `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
/// anything else is left as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                        i += end + 3;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

fn command(
    c: &Container,
    img: &crate::kubelet::runtime::image::ImageConfig,
    env: &[String],
) -> Result<Vec<String>, String> {
    let vars: BTreeMap<String, String> = env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cmd = c.command.clone().filter(|v| !v.is_empty());
    let args = c.args.clone().filter(|v| !v.is_empty());
    let mut out: Vec<String> = match (cmd, args) {
        (Some(cmd), args) => cmd.into_iter().chain(args.into_iter().flatten()).collect(),
        (None, Some(args)) => img
            .entrypoint
            .clone()
            .into_iter()
            .flatten()
            .chain(args)
            .collect(),
        (None, None) => img
            .entrypoint
            .clone()
            .into_iter()
            .flatten()
            .chain(img.cmd.clone().into_iter().flatten())
            .collect(),
    };
    for a in out.iter_mut() {
        *a = expand(a, &vars);
    }
    if out.is_empty() {
        return Err("no command specified".into());
    }
    Ok(out)
}

/// (uid, gid): securityContext, else the image's `User` (numeric or a name in /etc/passwd).
fn user(
    i: &Inputs<'_>,
    sc: &SecurityContext,
    psc: &k8s_openapi::api::core::v1::PodSecurityContext,
    layers: &[PathBuf],
) -> Result<(u32, u32), String> {
    let conv = |v: i64| u32::try_from(v).map_err(|_| format!("invalid user/group id {v}"));
    let (mut uid, mut gid) = (0u32, None);
    if let Some(u) = sc.run_as_user.or(psc.run_as_user) {
        uid = conv(u)?;
    } else if let Some(u) = i.image.config.user.as_deref().filter(|u| !u.is_empty()) {
        let (name, group) = u
            .split_once(':')
            .map(|(a, b)| (a, Some(b)))
            .unwrap_or((u, None));
        if let Ok(n) = name.parse::<u32>() {
            uid = n;
        } else {
            let (pu, pg) = lookup_passwd(layers, name).ok_or_else(|| {
                format!("unable to find user {name}: no matching entries in passwd file")
            })?;
            uid = pu;
            gid = Some(pg);
        }
        if let Some(g) = group {
            gid = Some(
                g.parse::<u32>()
                    .map_err(|_| format!("group {g:?} must be numeric"))?,
            );
        }
    }
    let gid = match sc.run_as_group.or(psc.run_as_group) {
        Some(g) => conv(g)?,
        None => gid.unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Find a user in the top-most layer that has `etc/passwd`.
fn lookup_passwd(layers: &[PathBuf], name: &str) -> Option<(u32, u32)> {
    let text = layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join("etc/passwd")).ok())?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The groups whose member list in the image's `/etc/group` names user `uid` (by its name in
/// `/etc/passwd`). Files are read only when they are regular files of the layer: a symlink
/// would be resolved on the host.
fn image_groups(layers: &[PathBuf], uid: u32) -> Vec<u32> {
    let read = |rel: &str| {
        layers.iter().rev().find_map(|l| {
            let p = l.join(rel);
            std::fs::symlink_metadata(&p)
                .ok()
                .filter(|m| m.is_file() && m.len() <= 1 << 20)
                .and_then(|_| std::fs::read_to_string(&p).ok())
        })
    };
    let Some(name) = read("etc/passwd").and_then(|t| {
        t.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
        })
    }) else {
        return Vec::new();
    };
    let Some(text) = read("etc/group") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let member = f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name);
            member.then(|| f[2].parse::<u32>().ok()).flatten()
        })
        .collect()
}

pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

fn mounts(i: &Inputs<'_>, id: &str, env: &[String]) -> Result<Vec<Mount>, String> {
    let c = i.container;
    let bind = |dst: &str, src: PathBuf, ro: bool| Mount {
        destination: dst.to_string(),
        kind: "bind".into(),
        source: Some(src),
        readonly: ro,
        sub_path: None,
    };
    let mut out = vec![
        bind("/etc/hosts", i.pod_dir.join("etc-hosts"), false),
        bind("/etc/hostname", i.pod_dir.join("etc-hostname"), false),
        bind("/etc/resolv.conf", i.pod_dir.join("resolv.conf"), false),
    ];
    // terminationMessagePath: a file per container attempt the container may write.
    let term = i.pod_dir.join("termination").join(id);
    if let Some(p) = term.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::write(&term, b"").map_err(|e| format!("{}: {e}", term.display()))?;
    out.push(bind(
        c.termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log"),
        term,
        false,
    ));
    for vm in c.volume_mounts.iter().flatten() {
        let Some(src) = i.volumes.get(&vm.name) else {
            return Err(format!("volume {:?} is not available", vm.name));
        };
        // upstream's `mustMountRO`: volumes the kubelet writes are read-only in containers.
        let kubelet_written = i
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| v.name == vm.name)
            .is_some_and(|v| {
                v.config_map.is_some()
                    || v.secret.is_some()
                    || v.projected.is_some()
                    || v.downward_api.is_some()
                    // A claim mounted `readOnly` is read-only in every container.
                    || v
                        .persistent_volume_claim
                        .as_ref()
                        .is_some_and(super::pvc::read_only)
            });
        let mut m = bind(
            &vm.mount_path,
            src.clone(),
            vm.read_only.unwrap_or(false) || kubelet_written,
        );
        if let Some(sub) = super::subpath::of(vm, env)? {
            match super::subpath::resolve(src, &sub) {
                Ok(rel) => m.sub_path = Some(rel),
                Err(e) => {
                    // The detail may describe the host: the log only, as upstream.
                    tracing::warn!(container = %c.name, volume = %vm.name, error = %e, "subPath refused");
                    return Err(format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        vm.name, c.name
                    ));
                }
            }
        }
        out.push(m);
    }
    Ok(out)
}

/// The per-pod files bind-mounted into every container.
pub fn write_pod_files(
    pod_dir: &Path,
    pod: &Pod,
    pod_ip: &str,
    dns: &super::dns::NodeDns,
) -> std::io::Result<()> {
    let host = hostname(pod);
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        hosts.push_str(&format!("{pod_ip}\t{host}\n"));
    }
    std::fs::write(pod_dir.join("etc-hosts"), hosts)?;
    std::fs::write(pod_dir.join("etc-hostname"), format!("{host}\n"))?;
    super::dns::write(pod_dir, pod, dns)
}

/// Whether the pod's QoS puts it under a `burstable`/`besteffort` parent.
pub fn qos_of(pod: &Pod) -> Qos {
    resources::qos(pod)
}

#[cfg(test)]
mod tests {
    use super::expand;
    use std::collections::BTreeMap;

    #[test]
    fn expansion() {
        let mut v = BTreeMap::new();
        v.insert("A".to_string(), "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &v), "x-$(B)-$(A)-$");
    }
}
