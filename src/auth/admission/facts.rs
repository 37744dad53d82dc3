//! The Pod Security facts of a pod, precomputed for Cedar (which cannot quantify over
//! containers), and upstream's per-check details for the 403 message.
//!
//! Faithful to upstream's `pod-security-admission` checks: every container list counts
//! (containers, initContainers, ephemeralContainers); "effective" settings are a container's
//! own, else the pod's `securityContext`. The *decision* is the Cedar policies'; the lists
//! here (baseline capabilities, safe sysctls, ...) only word the details of a denial.

use std::collections::BTreeSet;

use serde_json::Value;

/// Capabilities baseline allows adding (upstream's `capabilities_baseline`).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls baseline allows (upstream's `sysctls` check, latest version).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume sources restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// One container's security-relevant settings.
#[derive(Debug, Default, Clone)]
struct Container {
    name: String,
    privileged: bool,
    added: Vec<String>,
    drops_all: bool,
    host_ports: Vec<i64>,
    proc_mount: Option<String>,
    run_as_non_root: Option<bool>,
    run_as_root: bool,
    no_escalation: bool,
    seccomp: Option<String>,
}

/// The facts of one pod (see `policies/schema/admission.cedarschema` for each one's meaning).
#[derive(Debug, Default, Clone)]
pub struct PodFacts {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub host_process: bool,
    pub any_privileged: bool,
    pub added_capabilities: BTreeSet<String>,
    pub all_drop_all: bool,
    pub volume_types: BTreeSet<String>,
    pub host_ports: BTreeSet<i64>,
    pub seccomp_types: BTreeSet<String>,
    pub all_seccomp_restricted: bool,
    pub apparmor_profiles: BTreeSet<String>,
    pub selinux_types: BTreeSet<String>,
    pub selinux_user_or_role: bool,
    pub proc_mounts: BTreeSet<String>,
    pub sysctls: BTreeSet<String>,
    pub all_run_as_non_root: bool,
    pub any_run_as_root: bool,
    pub all_no_privilege_escalation: bool,
    containers: Vec<Container>,
    /// (volume name, source type).
    volumes: Vec<(String, String)>,
    pod_run_as_root: bool,
    pod_seccomp: Option<String>,
}

/// The facts the shipped Pod Security policies read, as a hashable key: two pods with equal
/// keys get the same verdict from those policies at the same level (see
/// `engine::Slices::facts_only`). The per-container details behind messages are left out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FactsKey {
    flags: [bool; 11],
    sets: [BTreeSet<String>; 7],
    host_ports: BTreeSet<i64>,
}

impl PodFacts {
    pub fn key(&self) -> FactsKey {
        FactsKey {
            flags: [
                self.host_network,
                self.host_pid,
                self.host_ipc,
                self.host_process,
                self.any_privileged,
                self.all_drop_all,
                self.all_seccomp_restricted,
                self.selinux_user_or_role,
                self.all_run_as_non_root,
                self.any_run_as_root,
                self.all_no_privilege_escalation,
            ],
            sets: [
                self.added_capabilities.clone(),
                self.volume_types.clone(),
                self.seccomp_types.clone(),
                self.apparmor_profiles.clone(),
                self.selinux_types.clone(),
                self.proc_mounts.clone(),
                self.sysctls.clone(),
            ],
            host_ports: self.host_ports.clone(),
        }
    }
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn selinux(opts: &Value, f: &mut PodFacts) {
    if !opts.is_object() {
        return;
    }
    if let Some(t) = opts["type"].as_str() {
        f.selinux_types.insert(t.to_string());
    }
    let set = |k: &str| opts[k].as_str().is_some_and(|s| !s.is_empty());
    if set("user") || set("role") {
        f.selinux_user_or_role = true;
    }
}

impl PodFacts {
    /// The facts of `pod` (a full Pod object).
    pub fn of(pod: &Value) -> PodFacts {
        let spec = &pod["spec"];
        let psc = &spec["securityContext"];
        let mut f = PodFacts {
            host_network: spec["hostNetwork"] == true,
            host_pid: spec["hostPID"] == true,
            host_ipc: spec["hostIPC"] == true,
            host_process: psc["windowsOptions"]["hostProcess"] == true,
            pod_run_as_root: psc["runAsUser"] == 0,
            pod_seccomp: string(&psc["seccompProfile"]["type"]),
            ..Default::default()
        };
        if let Some(t) = &f.pod_seccomp {
            f.seccomp_types.insert(t.clone());
        }
        if let Some(t) = psc["appArmorProfile"]["type"].as_str() {
            f.apparmor_profiles.insert(t.to_string());
        }
        selinux(&psc["seLinuxOptions"], &mut f);
        for s in psc["sysctls"].as_array().into_iter().flatten() {
            if let Some(n) = s["name"].as_str() {
                f.sysctls.insert(n.to_string());
            }
        }
        if let Some(anns) = pod["metadata"]["annotations"].as_object() {
            for (k, v) in anns {
                if k.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                    if let Some(v) = v.as_str() {
                        f.apparmor_profiles.insert(v.to_string());
                    }
                }
            }
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            for key in v.as_object().into_iter().flat_map(|o| o.keys()) {
                if key != "name" {
                    f.volume_types.insert(key.clone());
                    f.volumes.push((name.clone(), key.clone()));
                }
            }
        }
        let pod_non_root = psc["runAsNonRoot"].as_bool();
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let sc = &c["securityContext"];
                let caps = &sc["capabilities"];
                let added: Vec<String> = caps["add"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(string)
                    .collect();
                let container = Container {
                    name: c["name"].as_str().unwrap_or_default().to_string(),
                    privileged: sc["privileged"] == true,
                    drops_all: caps["drop"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x == "ALL")),
                    added,
                    host_ports: c["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["hostPort"].as_i64())
                        .filter(|p| *p != 0)
                        .collect(),
                    proc_mount: string(&sc["procMount"]),
                    run_as_non_root: sc["runAsNonRoot"].as_bool().or(pod_non_root),
                    run_as_root: sc["runAsUser"] == 0,
                    no_escalation: sc["allowPrivilegeEscalation"] == false,
                    seccomp: string(&sc["seccompProfile"]["type"]),
                };
                if sc["windowsOptions"]["hostProcess"] == true {
                    f.host_process = true;
                }
                if let Some(t) = sc["appArmorProfile"]["type"].as_str() {
                    f.apparmor_profiles.insert(t.to_string());
                }
                selinux(&sc["seLinuxOptions"], &mut f);
                if let Some(t) = &container.seccomp {
                    f.seccomp_types.insert(t.clone());
                }
                if let Some(p) = &container.proc_mount {
                    f.proc_mounts.insert(p.clone());
                }
                f.added_capabilities.extend(container.added.iter().cloned());
                f.host_ports.extend(container.host_ports.iter().copied());
                f.containers.push(container);
            }
        }
        let cs = &f.containers;
        f.any_privileged = cs.iter().any(|c| c.privileged);
        f.all_drop_all = cs.iter().all(|c| c.drops_all);
        f.all_run_as_non_root = cs.iter().all(|c| c.run_as_non_root == Some(true));
        f.any_run_as_root = f.pod_run_as_root || cs.iter().any(|c| c.run_as_root);
        f.all_no_privilege_escalation = cs.iter().all(|c| c.no_escalation);
        f.all_seccomp_restricted = cs.iter().all(|c| {
            matches!(
                c.seccomp.as_deref().or(f.pod_seccomp.as_deref()),
                Some("RuntimeDefault" | "Localhost")
            )
        });
        f
    }

    /// Upstream's detail text for a failed check (the part in parentheses), by policy id.
    pub fn detail(&self, id: &str) -> Option<String> {
        let names = |pred: &dyn Fn(&Container) -> bool| -> Vec<String> {
            self.containers
                .iter()
                .filter(|c| pred(c))
                .map(|c| c.name.clone())
                .collect()
        };
        let d = match id {
            "pss/baseline/host-namespaces" => {
                let mut parts = Vec::new();
                for (set, name) in [
                    (self.host_network, "hostNetwork"),
                    (self.host_pid, "hostPID"),
                    (self.host_ipc, "hostIPC"),
                ] {
                    if set {
                        parts.push(format!("{name}=true"));
                    }
                }
                parts.join(", ")
            }
            "pss/baseline/privileged" => format!(
                "{} must not set securityContext.privileged=true",
                containers(&names(&|c| c.privileged))
            ),
            "pss/baseline/capabilities" => self.caps_detail(BASELINE_CAPABILITIES),
            "pss/baseline/host-path-volumes" => {
                let v: Vec<String> = self
                    .volumes
                    .iter()
                    .filter(|(_, t)| t == "hostPath")
                    .map(|(n, _)| n.clone())
                    .collect();
                plural("volume", &v)
            }
            "pss/baseline/host-ports" => self
                .containers
                .iter()
                .filter(|c| !c.host_ports.is_empty())
                .map(|c| {
                    let ports: Vec<String> = c.host_ports.iter().map(|p| p.to_string()).collect();
                    let word = if ports.len() == 1 {
                        "hostPort"
                    } else {
                        "hostPorts"
                    };
                    format!("container {:?} uses {word} {}", c.name, ports.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; "),
            "pss/baseline/proc-mount" => {
                let bad = names(&|c| c.proc_mount.as_deref().is_some_and(|p| p != "Default"));
                format!(
                    "{} must not set securityContext.procMount to \"Unmasked\"",
                    containers(&bad)
                )
            }
            "pss/baseline/sysctls" => self
                .sysctls
                .iter()
                .filter(|s| !SAFE_SYSCTLS.contains(&s.as_str()))
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            "pss/baseline/seccomp" => {
                let mut who = Vec::new();
                if self.pod_seccomp.as_deref() == Some("Unconfined") {
                    who.push("pod".to_string());
                }
                let bad = names(&|c| c.seccomp.as_deref() == Some("Unconfined"));
                if !bad.is_empty() {
                    who.push(containers(&bad));
                }
                format!(
                    "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                    who.join(" and ")
                )
            }
            "pss/baseline/selinux" => {
                let bad: Vec<String> = self
                    .selinux_types
                    .iter()
                    .filter(|t| !SELINUX_TYPES.contains(&t.as_str()))
                    .map(|t| format!("{t:?}"))
                    .collect();
                if bad.is_empty() {
                    "forbidden securityContext.seLinuxOptions.user or .role".into()
                } else {
                    format!(
                        "forbidden securityContext.seLinuxOptions.type {}",
                        bad.join(", ")
                    )
                }
            }
            "pss/baseline/apparmor" => "profile \"unconfined\"".to_string(),
            "pss/baseline/host-process" => {
                "pod or containers must not set securityContext.windowsOptions.hostProcess=true"
                    .into()
            }
            "pss/restricted/volume-types" => self
                .volumes
                .iter()
                .filter(|(_, t)| !RESTRICTED_VOLUMES.contains(&t.as_str()))
                .map(|(n, t)| format!("volume {n:?} uses restricted volume type {t:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            "pss/restricted/privilege-escalation" => format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers(&names(&|c| !c.no_escalation))
            ),
            "pss/restricted/run-as-non-root" => format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers(&names(&|c| c.run_as_non_root != Some(true)))
            ),
            "pss/restricted/run-as-user" => {
                let bad = names(&|c| c.run_as_root);
                if self.pod_run_as_root && bad.is_empty() {
                    "pod must not set runAsUser=0".into()
                } else {
                    format!("{} must not set runAsUser=0", containers(&bad))
                }
            }
            "pss/restricted/seccomp" => {
                let bad = names(&|c| {
                    !matches!(
                        c.seccomp.as_deref().or(self.pod_seccomp.as_deref()),
                        Some("RuntimeDefault" | "Localhost")
                    )
                });
                format!(
                    "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                    containers(&bad)
                )
            }
            "pss/restricted/capabilities" => {
                let mut parts = Vec::new();
                let no_drop = names(&|c| !c.drops_all);
                if !no_drop.is_empty() {
                    parts.push(format!(
                        "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                        containers(&no_drop)
                    ));
                }
                let added = self.caps_detail(&["NET_BIND_SERVICE"]);
                if !added.is_empty() {
                    parts.push(added);
                }
                parts.join("; ")
            }
            _ => return None,
        };
        (!d.is_empty()).then_some(d)
    }

    /// `container "a" must not include "X" in securityContext.capabilities.add`, per container
    /// adding anything outside `allowed`.
    fn caps_detail(&self, allowed: &[&str]) -> String {
        self.containers
            .iter()
            .filter_map(|c| {
                let bad: Vec<String> = c
                    .added
                    .iter()
                    .filter(|a| !allowed.contains(&a.as_str()))
                    .map(|a| format!("{a:?}"))
                    .collect();
                (!bad.is_empty()).then(|| {
                    format!(
                        "container {:?} must not include {} in securityContext.capabilities.add",
                        c.name,
                        bad.join(", ")
                    )
                })
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `container "a"` or `containers "a", "b"`, as upstream words it.
fn containers(names: &[String]) -> String {
    plural("container", names)
}

fn plural(word: &str, names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("{word} {}", quoted.join(", "))
    } else {
        format!("{word}s {}", quoted.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_pod_has_no_baseline_facts() {
        let f = PodFacts::of(&json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
        assert!(!f.host_network && !f.any_privileged && !f.host_process);
        assert!(f.added_capabilities.is_empty() && f.host_ports.is_empty());
        assert!(!f.all_run_as_non_root && !f.all_no_privilege_escalation && !f.all_drop_all);
        assert!(!f.all_seccomp_restricted);
    }

    #[test]
    fn privileged_and_host_namespaces_are_found_with_details() {
        let f = PodFacts::of(&json!({"spec": {
            "hostNetwork": true, "hostPID": true,
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}],
                            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}],
        }}));
        assert!(f.host_network && f.host_pid && !f.host_ipc && f.any_privileged);
        assert_eq!(
            f.detail("pss/baseline/host-namespaces").unwrap(),
            "hostNetwork=true, hostPID=true"
        );
        assert_eq!(
            f.detail("pss/baseline/privileged").unwrap(),
            "container \"init\" must not set securityContext.privileged=true"
        );
        assert_eq!(
            f.detail("pss/baseline/capabilities").unwrap(),
            "container \"c\" must not include \"NET_ADMIN\" in securityContext.capabilities.add"
        );
        assert_eq!(f.host_ports, BTreeSet::from([8080]));
        assert_eq!(
            f.detail("pss/baseline/host-ports").unwrap(),
            "container \"c\" uses hostPort 8080"
        );
        assert!(f.volume_types.contains("hostPath") && f.volume_types.contains("emptyDir"));
        assert_eq!(
            f.detail("pss/baseline/host-path-volumes").unwrap(),
            "volume \"root\""
        );
        assert_eq!(
            f.detail("pss/restricted/volume-types").unwrap(),
            "volume \"root\" uses restricted volume type \"hostPath\""
        );
    }

    #[test]
    fn restricted_facts_use_effective_settings() {
        let compliant = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        }});
        let f = PodFacts::of(&compliant);
        assert!(f.all_run_as_non_root && f.all_seccomp_restricted && f.all_drop_all);
        assert!(f.all_no_privilege_escalation && !f.any_run_as_root);
        let root = json!({"spec": {
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "a", "securityContext": {"runAsNonRoot": false, "runAsUser": 0,
                            "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked"}},
                           {"name": "b"}],
        }});
        let f = PodFacts::of(&root);
        assert!(!f.all_run_as_non_root && f.any_run_as_root && !f.all_seccomp_restricted);
        assert!(f.seccomp_types.contains("Unconfined") && f.proc_mounts.contains("Unmasked"));
        assert_eq!(
            f.detail("pss/restricted/run-as-non-root").unwrap(),
            "pod or container \"a\" must set securityContext.runAsNonRoot=true"
        );
        assert_eq!(
            f.detail("pss/restricted/seccomp").unwrap(),
            "pod or containers \"a\", \"b\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\""
        );
        assert_eq!(
            f.detail("pss/restricted/run-as-user").unwrap(),
            "container \"a\" must not set runAsUser=0"
        );
    }

    #[test]
    fn sysctls_apparmor_and_selinux() {
        let f = PodFacts::of(&json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": {"securityContext": {
                "sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}],
                "seLinuxOptions": {"type": "spc_t", "user": "root"}},
              "containers": [{"name": "c"}]}}));
        assert!(f.apparmor_profiles.contains("unconfined"));
        assert!(f.selinux_types.contains("spc_t") && f.selinux_user_or_role);
        assert_eq!(f.detail("pss/baseline/sysctls").unwrap(), "kernel.msgmax");
    }
}
