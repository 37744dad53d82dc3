//! The dependency rules of docs/ARCHITECTURE.md, checked by scanning `crate::` paths (also
//! `use crate::{a, b}` groups and `super::` chains that climb to the crate root): only the
//! apiserver (and the composition roots in `roles`) touch the store; `auth` decides without
//! the store or the API server; the API server never uses the node, the control loops or the
//! CLI; the node and control-loop components never use each other; the container runtime
//! knows nothing of Kubernetes. And the API server's one storage-access layer: storage keys
//! (`"/registry/..."`) are spelled only in `src/apiserver/storage.rs` and the store, and
//! stored values are decoded only there.

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

/// The module path of a file under src/ (`[store, rocks]` for src/store/rocks/mod.rs,
/// `[apiserver, edge, serve]` for src/apiserver/edge/serve.rs, `[]` for src/lib.rs).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn ident_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first segment of each path in the `{...}` group at the start of `text`
/// (`{a, b::c, d::{e}}` gives a, b, d), across lines.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in text.char_indices() {
        match c {
            '{' => {
                depth += 1;
                start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => start = true,
            c if start && depth == 1 && !c.is_whitespace() => {
                start = false;
                heads.push(ident_at(&text[i..]));
            }
            _ => {}
        }
    }
    heads
}

/// Top-level modules a file under `path` names, with their line: `crate::x`, each head of
/// `crate::{x, y::z}`, and `super::` chains that climb to the crate root (`super::super::x`
/// from src/a/b.rs). Comments are left out: a doc link is not a dependency. An inline
/// `mod tests { ... }` adds a level the file path does not show: chains after it climb one
/// level more.
fn named_modules(path: &[String], text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut heads_at = |at: usize, rest: &str| {
        if rest.starts_with('{') {
            for h in group_heads(rest) {
                out.push((line_of(at), h));
            }
        } else {
            out.push((line_of(at), ident_at(rest)));
        }
    };
    let mut i = 0;
    while let Some(k) = code[i..].find("crate::") {
        let at = i + k;
        let before = code[..at].chars().next_back();
        i = at + 7;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue; // `$crate::`, `other_crate::`
        }
        heads_at(at, &code[i..]);
    }
    let tests_at = code.find("mod tests {");
    let mut i = 0;
    while let Some(k) = code[i..].find("super::") {
        let at = i + k;
        let before = code[..at].chars().next_back();
        let mut end = at;
        let mut ups = 0;
        while code[end..].starts_with("super::") {
            end += 7;
            ups += 1;
        }
        i = end;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // From a file module, `super` is its parent; the root is reached after `len` steps
        // (one more from inside an inline `mod tests { ... }`, which sits at a file's end).
        let depth = path.len() + usize::from(tests_at.is_some_and(|t| at > t));
        if ups >= depth {
            heads_at(at, &code[end..]);
        }
    }
    out.retain(|(_, m)| !m.is_empty() && m != "self" && m != "super");
    out
}

/// Modules `module` may name with `crate::`; `None` means no restriction.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    // `netfilter` (nftables over netlink) and `tls` (the one rustls client-config builder)
    // know nothing of Kubernetes or the cluster: any module may use them.
    const LEAVES: &[&str] = &["api", "client", "netfilter", "tls"];
    match module {
        "scheduler" | "controllers" | "proxy" | "dns" => Some(LEAVES),
        // The kubelet also reads the test feature's hooks (token refresh timing).
        "kubelet" => Some(&["api", "client", "netfilter", "tls", "test_hooks"]),
        "store" => Some(&["store"]),
        "netfilter" | "tls" => Some(&[]),
        "api" | "client" | "pki" => Some(&["api", "client", "pki", "tls"]),
        // Authentication, authorization, admission decisions and audit: no store, no HTTP.
        "auth" => Some(&["auth", "api", "pki", "tls", "test_hooks"]),
        // The API server: the store's only user besides the composition roots; never the
        // node, the control loops or the CLI.
        "apiserver" => Some(&[
            "apiserver",
            "api",
            "auth",
            "pki",
            "store",
            "tls",
            "test_hooks",
        ]),
        "test_hooks" => Some(&["test_hooks"]),
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
        let path = module_path(&src, file);
        let Some(module) = path.first().cloned() else {
            continue; // lib.rs/main.rs: the root declares every module
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in named_modules(&path, &text) {
            if used == module {
                continue;
            }
            let ok = match (used.as_str(), allowed(&module)) {
                ("store", _) => matches!(module.as_str(), "apiserver" | "roles"),
                (_, None) => true,
                (u, Some(list)) => list.contains(&u),
            };
            if !ok {
                violations.push(format!(
                    "{}:{line}: module `{module}` uses `crate::{used}`",
                    file.display(),
                ));
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

/// The scanner sees the paths the first version missed: `use` groups and `super::` chains.
#[test]
fn the_scanner_sees_groups_and_super_chains() {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let names = |path: &[String], text: &str| -> Vec<String> {
        named_modules(path, text)
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    let kubelet_file = p(&["kubelet", "pods", "x"]);
    assert_eq!(
        names(
            &kubelet_file,
            "use crate::{api, store::Backend,\n  auth::{x, y}};"
        ),
        ["api", "store", "auth"]
    );
    assert_eq!(
        names(&kubelet_file, "use super::super::super::store::Backend;"),
        ["store"]
    );
    // Not far enough up to leave `kubelet`: no top-level module named.
    assert!(names(&kubelet_file, "use super::super::runtime;").is_empty());
    assert_eq!(
        names(
            &p(&["auth", "x"]),
            "let b = super::super::{apiserver::State, api};"
        ),
        ["apiserver", "api"]
    );
    // Inside `mod tests`, `super::super` from src/proxy/x.rs is `proxy`, not the root.
    assert!(names(
        &p(&["proxy", "x"]),
        "fn a() {}\n#[cfg(test)]\nmod tests {\n    use super::super::ruleset;\n}"
    )
    .is_empty());
    assert_eq!(
        names(
            &p(&["proxy", "x"]),
            "mod tests {\n    use super::super::super::store;\n}"
        ),
        ["store"]
    );
    // Comments, `$crate::` and other crates' `crate::` suffixes are not dependencies.
    assert!(names(
        &kubelet_file,
        "// crate::store\n$crate::store; my_crate::store"
    )
    .is_empty());
}

/// The code of a file without its comments (a doc line may mention a key).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| {
        let code = match l.find("//") {
            // `"//"` inside a string is not a comment; good enough for the literals sought.
            Some(c) if !l[..c].ends_with('"') => &l[..c],
            _ => l,
        };
        (i + 1, code)
    })
}

/// Files allowed to spell storage keys and decode stored values: the storage layer and the
/// store itself.
fn is_storage_layer(src: &Path, file: &Path) -> bool {
    file == src.join("apiserver/storage.rs") || file.starts_with(src.join("store"))
}

/// Every `"/registry/..."` key is built by `apiserver::storage` (typed constructors), so the
/// key layout lives in one file.
#[test]
fn storage_keys_are_built_only_by_the_storage_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !is_storage_layer(&src, f)) {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            if code.contains("\"/registry/") || code.contains("\"/registry\"") {
                found.push(format!("{}:{line}: {}", file.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "storage keys spelled outside src/apiserver/storage.rs (use its constructors):\n{}",
        found.join("\n")
    );
}

/// Every outgoing TLS connection is configured by `crate::tls::client`: no other file builds
/// a rustls `ClientConfig` or implements a certificate verifier (a second "skip verify" is
/// how trust decisions drift apart).
#[test]
fn rustls_client_configs_are_built_only_by_the_tls_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(src.join("tls"))) {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            if code.contains("ClientConfig::builder") || code.contains("ServerCertVerifier for") {
                found.push(format!("{}:{line}: {}", file.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "rustls client configuration outside src/tls/ (use crate::tls::client):\n{}",
        found.join("\n")
    );
}

/// Stored values are decoded through `storage::decode_stored` (which stamps
/// `metadata.resourceVersion`): no `serde_json::from_slice` of a `KeyValue`'s or an
/// `Event`'s value (`kv.value`, `ev.value`, `prev_value`) anywhere else in the API server
/// or `auth`. (The stored-bytes splice in `stored_json.rs` copies bytes, it does not decode.)
#[test]
fn stored_values_are_decoded_only_by_the_storage_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("apiserver"), &mut files);
    rust_files(&src.join("auth"), &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !is_storage_layer(&src, f)) {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            let decodes = code.contains("from_slice") && !code.contains("extend_from_slice");
            let stored = ["kv.value", "ev.value", "prev_value", ".value)"]
                .iter()
                .any(|v| code.contains(v));
            if decodes && stored {
                found.push(format!("{}:{line}: {}", file.display(), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "stored values decoded outside src/apiserver/storage.rs (use storage::decode_object):\n{}",
        found.join("\n")
    );
}

/// The literal checks see code, not comments, and a key built anywhere is caught.
#[test]
fn the_key_scanner_sees_code_not_comments() {
    let hits = |text: &str| {
        code_lines(text)
            .filter(|(_, c)| c.contains("\"/registry/"))
            .count()
    };
    assert_eq!(hits("let k = format!(\"/registry/core/pods/{ns}\");"), 1);
    assert_eq!(
        hits("//! keys are `\"/registry/...\"`\nlet x = 1; // \"/registry/x\""),
        0
    );
    assert_eq!(hits("const P: &str = \"/registry/core/\"; // prefix"), 1);
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

// ---- Import cycles among the API server's modules ----
//
// A node is one file module of `src/apiserver/` (`edge::serve`, `handlers`, ...); an edge is
// a path naming another module (`crate::apiserver::x::y`, `super::x`, `self::x`, or a child
// declared with `mod x;`), resolved to the longest module it names. A module using its own
// ancestors (`super::Ctx` from `handlers/create.rs`) is a parent's internals, not an edge.
// The protobuf visitor recursion (a message's fields are messages) is the one cycle allowed.

/// `text` without comments and with string and char literals emptied, so a doc line or a
/// message naming `super::x` is not an import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                i = end;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string: r"..." or r#"..."#.
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let from = i + 2 + hashes;
                i = text[from..]
                    .find(&close)
                    .map_or(b.len(), |e| from + e + close.len());
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                // A char literal ('x', '\n', '\''), not a lifetime.
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Every path that starts at `text` (just after `head::`): `a::b::C` gives `[a, b, C]`,
/// `{a, b::{c, d}}` gives `[a]`, `[b, c]`, `[b, d]`.
fn paths_at(text: &str) -> Vec<Vec<String>> {
    fn parse(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let mut path = prefix;
        let mut i = 0;
        loop {
            let rest = &text[i..];
            let trimmed = rest.trim_start();
            i += rest.len() - trimmed.len();
            if trimmed.starts_with('{') {
                // A group: each item continues `path`.
                i += 1;
                loop {
                    let rest = &text[i..];
                    let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
                    i += rest.len() - trimmed.len();
                    if trimmed.is_empty() || trimmed.starts_with('}') {
                        return i + 1;
                    }
                    let used = parse(&text[i..], path.clone(), out);
                    if used == 0 {
                        return i;
                    }
                    i += used;
                }
            }
            let seg = ident_at(trimmed);
            if seg.is_empty() {
                out.push(path);
                return i;
            }
            path.push(seg.clone());
            i += seg.len();
            if text[i..].starts_with("::") {
                i += 2;
            } else {
                out.push(path);
                return i;
            }
        }
    }
    let mut out = Vec::new();
    parse(text, Vec::new(), &mut out);
    out
}

/// The modules of `src/apiserver/` each module names (see above).
fn apiserver_imports(
    files: &[(Vec<String>, bool, String)],
) -> std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> {
    use std::collections::{BTreeMap, BTreeSet};
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let resolve = |segs: &[String]| -> Option<Vec<String>> {
        (0..=segs.len())
            .rev()
            .map(|n| segs[..n].to_vec())
            .find(|p| known.contains(p))
    };
    let mut graph = BTreeMap::new();
    for (module, _is_dir, text) in files {
        let mut code = code_only(text);
        if let Some(t) = code.find("mod tests {") {
            code.truncate(t); // tests sit at a file's end and may use anything
        }
        let mut named: Vec<Vec<String>> = Vec::new();
        let children: Vec<String> = code
            .match_indices("mod ")
            .filter_map(|(at, _)| {
                let name = ident_at(&code[at + 4..]);
                code[at + 4 + name.len()..].starts_with(';').then_some(name)
            })
            .collect();
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let before = i.checked_sub(1).map(|p| bytes[p]);
            let starts = before.is_none_or(|c| {
                !(c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'$')
            });
            let word = ident_at(&code[i..]);
            if word.is_empty() {
                i += code[i..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            let after = i + word.len();
            if starts && code[after..].starts_with("::") {
                let rest = &code[after + 2..];
                let base: Option<Vec<String>> = match word.as_str() {
                    "crate" => Some(Vec::new()),
                    "super" | "self" => Some(module.clone()),
                    w if children.iter().any(|c| c == w) => Some(module.clone()),
                    _ => None,
                };
                if let Some(base) = base {
                    for p in paths_at(rest) {
                        let mut segs: Vec<String> =
                            std::iter::once(word.clone()).chain(p).collect();
                        let mut abs = if word == "crate" {
                            if segs.get(1).map(String::as_str) != Some("apiserver") {
                                continue;
                            }
                            segs.drain(..2);
                            Vec::new()
                        } else {
                            base.clone()
                        };
                        for s in segs {
                            match s.as_str() {
                                "super" => {
                                    abs.pop();
                                }
                                "self" => {}
                                _ => abs.push(s),
                            }
                        }
                        named.push(abs);
                    }
                }
            }
            i = after;
        }
        let edges: BTreeSet<Vec<String>> = named
            .iter()
            .filter_map(|p| resolve(p))
            .filter(|r| r != module && !module.starts_with(r))
            .collect();
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(
    graph: &std::collections::BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    use std::collections::BTreeMap;
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, (usize, usize)>,
        stack: Vec<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        t.index.insert(v, (t.next, t.next));
        t.next += 1;
        t.stack.push(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else {
                continue;
            };
            match t.index.get(w).copied() {
                None => {
                    visit(t, w);
                    let low = t.index[w].1.min(t.index[v].1);
                    t.index.get_mut(v).unwrap().1 = low;
                }
                Some((wi, _)) if t.stack.contains(&w) => {
                    let low = wi.min(t.index[v].1);
                    t.index.get_mut(v).unwrap().1 = low;
                }
                Some(_) => {}
            }
        }
        let (vi, vl) = t.index[v];
        if vi == vl {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn apiserver_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apiserver");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(Vec<String>, bool, String)> = paths
        .iter()
        .map(|p| {
            let is_dir = p.file_name().is_some_and(|n| n == "mod.rs");
            (
                module_path(&src, p),
                is_dir,
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    assert!(
        files.len() > 40,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let graph = apiserver_imports(&files);
    // The scanner must see the edges it checks: the handlers reach the strategies.
    assert!(
        graph[&vec!["handlers".to_string(), "create".to_string()]]
            .contains(&vec!["strategy".to_string()]),
        "the scanner lost handlers::create -> strategy"
    );
    let found: Vec<String> = cycles(&graph)
        .into_iter()
        // The protobuf visitor recursion: a message's fields are messages.
        .filter(|c| {
            !c.iter()
                .all(|m| m.first().map(String::as_str) == Some("protobuf"))
        })
        .map(|c| {
            let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|w| c.contains(w))
                        .map(move |w| format!("  {} -> {}", m.join("::"), w.join("::")))
                })
                .collect();
            format!("[{}]\n{}", names.join(", "), edges.join("\n"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles in src/apiserver/ (modules that import each other in a loop):\n{}",
        found.join("\n")
    );
}

/// The cycle scanner sees `use` groups, `super::` and child paths, ignores comments, strings
/// and a child's use of its parent, and finds a loop.
#[test]
fn the_cycle_scanner_sees_loops() {
    let m = |s: &str| -> Vec<String> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(str::to_string).collect()
        }
    };
    let files = vec![
        (m(""), true, "mod a;\nmod b;\nmod c;\n".to_string()),
        (
            m("a"),
            true,
            "mod x;\nuse crate::apiserver::{c, b::{Thing, y::Z}};\nfn f() { x::g(); }".to_string(),
        ),
        (
            m("a::x"),
            false,
            "use super::super::Ctx; // crate::apiserver::c\n".to_string(),
        ),
        (
            m("b"),
            true,
            "mod y;\nconst S: &str = \"crate::apiserver::c::D\";".to_string(),
        ),
        (m("b::y"), false, "use crate::apiserver::c::D;".to_string()),
        (m("c"), false, "fn g() { super::a::x::h(); }".to_string()),
    ];
    let graph = apiserver_imports(&files);
    let set = |v: &[&str]| -> std::collections::BTreeSet<Vec<String>> {
        v.iter().map(|s| m(s)).collect()
    };
    assert_eq!(graph[&m("a")], set(&["a::x", "c", "b", "b::y"]));
    assert!(graph[&m("a::x")].is_empty(), "{:?}", graph[&m("a::x")]);
    assert!(graph[&m("b")].is_empty(), "{:?}", graph[&m("b")]);
    assert_eq!(graph[&m("b::y")], set(&["c"]));
    assert_eq!(graph[&m("c")], set(&["a::x"]));
    // a -> c -> a::x is no loop (a::x uses its parent, which is not an edge) ...
    assert!(cycles(&graph).is_empty(), "{:?}", cycles(&graph));
    // ... but a -> b::y -> c -> a is.
    let mut looped = files.clone();
    looped[5].2 = "fn g() { crate::apiserver::a::f(); }".to_string();
    let found = cycles(&apiserver_imports(&looped));
    assert_eq!(found, vec![vec![m("a"), m("b::y"), m("c")]]);
}
