//! The dependency rules of docs/ARCHITECTURE.md, checked by scanning `crate::` paths:
//! only the apiserver (and the composition roots in `roles`) touch the store; the node and
//! control-loop components never use each other; the container runtime knows nothing of
//! Kubernetes.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module of a file under src/ (`store` for src/store/rocks/mod.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Modules `module` may name with `crate::`; `None` means no restriction.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    // `netfilter` (nftables over netlink) knows nothing of Kubernetes: any leaf may use it.
    const LEAVES: &[&str] = &["api", "client", "netfilter"];
    match module {
        "scheduler" | "controllers" | "kubelet" | "proxy" | "dns" => Some(LEAVES),
        "store" => Some(&["store"]),
        "netfilter" => Some(&[]),
        "api" | "client" | "pki" => Some(&["api", "client", "pki"]),
        _ => None,
    }
}

#[test]
fn modules_respect_the_dependency_rules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found no sources under {}", src.display());
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let used: String = rest[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + 7..];
                if used.is_empty() || used == module {
                    continue;
                }
                let ok = match (used.as_str(), allowed(&module)) {
                    ("store", _) => matches!(module.as_str(), "apiserver" | "roles"),
                    (_, None) => true,
                    (u, Some(list)) => list.contains(&u),
                };
                if !ok {
                    violations.push(format!(
                        "{}:{}: module `{module}` uses `crate::{used}`",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
        if file.starts_with(src.join("kubelet/runtime")) && text.contains("k8s_openapi") {
            violations.push(format!(
                "{}: the runtime must not know Kubernetes types",
                file.display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn unsafe_blocks_carry_a_safety_comment() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("unsafe {") || line.trim_start().starts_with("unsafe fn") {
                let window = &lines[i.saturating_sub(3)..i];
                if !window.iter().any(|l| l.contains("SAFETY:")) {
                    missing.push(format!("{}:{}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "unsafe without // SAFETY: at\n{}",
        missing.join("\n")
    );
}
