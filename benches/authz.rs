//! Authorization benchmark (issue 5): prints figures, never fails a build.
//!
//! 1. Decision latency, in process: the real authorizer (embedded system policies + RBAC
//!    compiled from N RoleBindings, N = 10 / 1,000 / 10,000), p50/p99 of `authorize` for a
//!    user bound by one of them, an unbound user and an admin — next to the same policies
//!    evaluated as one unsliced Cedar set (what a naive integration does), the peer figure.
//! 2. API overhead: two real servers side by side, one normal, one started with
//!    `RAMPART_BENCH_BYPASS=1` (authorization, admission and audit off — honoured only by a
//!    binary built with `--features bench-bypass`), the same client certificate, GET and create
//!    latency p50/p99 and the relative overhead.
//!
//! Run: `cargo bench --profile ci --bench authz --features bench-bypass`
//! (env `BENCH_SCALE=0.2` for a quick pass, `BENCH_PARTS=decision|api` for one part,
//! `BENCH_ENFORCING_ARGS="..."` for extra flags on the enforcing server).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use rampart::auth::cedar::{self, Authorizer, PolicyFiles};
use rampart::auth::{Attributes, UserInfo};
use support::{client, ms, server_binary, Figures, Server};

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// 1. Decision latency.

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
    .with_authenticated_group()
}

/// `n` RoleBindings, binding `user-<i>` in namespace `ns-<i % 50>` to a Role with three rules.
fn rbac_objects(n: usize) -> Vec<serde_json::Value> {
    let mut objs = Vec::new();
    for ns in 0..50.min(n) {
        objs.push(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "app", "namespace": format!("ns-{ns}")},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["app-config"], "verbs": ["get"]},
            ]
        }));
    }
    for i in 0..n {
        objs.push(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("rb-{i}"), "namespace": format!("ns-{}", i % 50)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app"},
            "subjects": [{"kind": "User", "name": format!("user-{i}"), "apiGroup": "rbac.authorization.k8s.io"}]
        }));
    }
    objs
}

fn decision_latency(n: usize, iterations: usize) -> Result<Vec<String>, String> {
    let files = PolicyFiles::embedded();
    let authz = cedar::authorizer(&files, cedar::NodeGraph::new()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut objects = rampart::auth::rbac::Objects::default();
    for v in rbac_objects(n) {
        objects.apply(&v);
    }
    let compiled = rampart::auth::rbac::compile::compile(&objects).policies;
    let policies = compiled.len();
    authz.set_source("rbac", compiled.clone());
    let compile_time = started.elapsed();
    // The peer: the same policies as one set, every policy evaluated for every request.
    let naive = Authorizer::new(
        files.schema().map_err(|e| e.to_string())?,
        cedar::NodeGraph::new(),
    );
    let mut all: Vec<cedar::Compiled> = files
        .policies("system", naive.schema())
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|policy| cedar::Compiled {
            policy,
            subjects: Vec::new(),
        })
        .collect();
    all.extend(compiled.into_iter().map(|c| cedar::Compiled {
        policy: c.policy,
        subjects: Vec::new(),
    }));
    naive.set_source("all", all);

    let bound_name = format!("user-{}", n / 2);
    let bound_ns = format!("ns-{}", (n / 2) % 50);
    let bound = user(&bound_name, &[]);
    let stranger = user("stranger", &["devs"]);
    let admin = user("admin", &["system:masters"]);
    let cases: [(&str, &UserInfo, &str, &str, bool); 3] = [
        (
            "bound user, list pods",
            &bound,
            "list",
            bound_ns.as_str(),
            true,
        ),
        ("unbound user, denied", &stranger, "list", "ns-0", false),
        ("admin (system:masters)", &admin, "list", "ns-0", true),
    ];
    let mut rows = Vec::new();
    for (label, who, verb, ns, want) in cases {
        let attrs = Attributes {
            user: who,
            verb,
            resource_request: true,
            api_group: "",
            resource: "pods",
            subresource: "",
            namespace: ns,
            name: "",
            path: "/api/v1/namespaces/x/pods",
        };
        let mut lat = Vec::with_capacity(iterations);
        for i in 0..iterations + 100 {
            let t = Instant::now();
            let d = authz.evaluate_uncached(&attrs);
            let e = t.elapsed();
            if d.is_allowed() != want {
                return Err(format!("{label}: expected allowed={want}, got {d:?}"));
            }
            if i >= 100 {
                lat.push(e);
            }
        }
        // The unsliced set is slow at scale (tens of ms per request at 10,000 bindings), so
        // it gets 200 samples, measured after the sliced ones (interleaving them would leave
        // the sliced requests with cold caches).
        let mut naive_lat = Vec::with_capacity(200);
        for _ in 0..200 {
            let t = Instant::now();
            let d = naive.evaluate_uncached(&attrs);
            naive_lat.push(t.elapsed());
            if d.is_allowed() != want {
                return Err(format!(
                    "{label} (unsliced): expected allowed={want}, got {d:?}"
                ));
            }
        }
        // A repeated identical request is answered from the decision cache.
        let mut hits = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let t = Instant::now();
            let _ = authz.authorize(&attrs);
            hits.push(t.elapsed());
        }
        let hit99 = pct(&mut hits, 0.99);
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        let (n50, n99) = (pct(&mut naive_lat, 0.5), pct(&mut naive_lat, 0.99));
        rows.push(format!(
            "| {n:>6} | {policies:>6} | {label:<24} | {:>7.1} | {:>7.1} | {:>5.1} | {:>9.1} | {:>9.1} | {:>6.1}x | {} |",
            us(p50),
            us(p99),
            us(hit99),
            us(n50),
            us(n99),
            us(n99) / us(p99).max(0.001),
            if us(p99) < 50.0 { "met" } else { "MISSED" },
        ));
    }
    rows.push(format!(
        "|        |        | compile + index {n} bindings: {:.1} ms |",
        compile_time.as_secs_f64() * 1000.0
    ));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// 2. API overhead.

fn sign_client_cert(dir: &Path, cn: &str) -> Result<(String, String), String> {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let read =
        |f: &str| std::fs::read_to_string(dir.join("pki").join(f)).map_err(|e| format!("{f}: {e}"));
    let ca_pem = read("client-ca.crt")?;
    let ca_key = KeyPair::from_pem(&read("client-ca.key")?).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(2);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok((cert.pem() + &ca_pem, key.serialize_pem()))
}

/// A kubeconfig for `cn` next to the admin one (same server and CA).
fn user_kubeconfig(dir: &Path, cn: &str) -> Result<std::path::PathBuf, String> {
    use base64::Engine;
    let (cert, key) = sign_client_cert(dir, cn)?;
    let admin = std::fs::read_to_string(dir.join("admin.kubeconfig")).map_err(|e| e.to_string())?;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let mut out = String::new();
    for line in admin.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("client-certificate-data:") {
            out.push_str(&format!(
                "{indent}client-certificate-data: {}\n",
                b64(&cert)
            ));
        } else if trimmed.starts_with("client-key-data:") {
            out.push_str(&format!("{indent}client-key-data: {}\n", b64(&key)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = dir.join(format!("{cn}.kubeconfig"));
    std::fs::write(&path, out).map_err(|e| e.to_string())?;
    Ok(path)
}

async fn kubectl_apply(
    admin: &kube::Client,
    yaml_objs: Vec<serde_json::Value>,
) -> Result<(), String> {
    for obj in yaml_objs {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let (group, version) = match obj["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .split_once('/')
        {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), "v1".to_string()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &kind);
        let (ar, _) = kube::discovery::pinned_kind(admin, &gvk)
            .await
            .map_err(|e| format!("discovery {kind}: {e}"))?;
        let api: Api<kube::api::DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
            None => Api::all_with(admin.clone(), &ar),
        };
        let dynobj: kube::api::DynamicObject =
            serde_json::from_value(obj).map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &dynobj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("create {kind}: {e}")),
        }
    }
    Ok(())
}

async fn api_round(
    c: &kube::Client,
    gets: usize,
    creates: usize,
    tag: &str,
) -> Result<(Figures, Figures), String> {
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "ns-0");
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("target-{tag}")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".repeat(512))])),
        ..Default::default()
    };
    let _ = api.create(&PostParams::default(), &cm).await;
    let mut get = Figures::default();
    let t0 = Instant::now();
    for _ in 0..gets {
        let t = Instant::now();
        api.get(&format!("target-{tag}"))
            .await
            .map_err(|e| format!("get: {e}"))?;
        get.lat.push(t.elapsed());
    }
    get.wall = t0.elapsed();
    get.ops = gets;
    let mut create = Figures::default();
    let t0 = Instant::now();
    for i in 0..creates {
        cm.metadata.name = Some(format!("cm-{tag}-{i}"));
        let t = Instant::now();
        api.create(&PostParams::default(), &cm)
            .await
            .map_err(|e| format!("create: {e}"))?;
        create.lat.push(t.elapsed());
    }
    create.wall = t0.elapsed();
    create.ops = creates;
    Ok((get, create))
}

async fn api_overhead(scale: f64) -> Result<Vec<String>, String> {
    let bin = server_binary()?;
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (dir_on, dir_off) = (base.path().join("enforcing"), base.path().join("bypassed"));
    // BENCH_ENFORCING_ARGS: extra server flags for the enforcing server (e.g. an audit policy
    // file with level None, to tell the audit log's share from the authorizer's).
    let extra = std::env::var("BENCH_ENFORCING_ARGS").unwrap_or_default();
    let mut on_args = vec!["--disable-agent"];
    on_args.extend(extra.split_whitespace());
    let on = Server::start_with(&bin, &dir_on, &on_args, &[])?;
    let off = Server::start_with(
        &bin,
        &dir_off,
        &["--disable-agent"],
        &[("RAMPART_BENCH_BYPASS", "1")],
    )?;
    let mut objs = vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-0"}}),
    ];
    // 1,000 bindings in the cluster, the benchmark user bound by one of them.
    objs.extend(
        rbac_objects(1000)
            .into_iter()
            .filter(|o| o["metadata"]["namespace"] == "ns-0"),
    );
    objs.push(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "bench", "namespace": "ns-0"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]}]
    }));
    objs.push(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bench", "namespace": "ns-0"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench"},
        "subjects": [{"kind": "User", "name": "bench-user", "apiGroup": "rbac.authorization.k8s.io"}]
    }));
    let mut rows = Vec::new();
    let gets = (3000.0 * scale) as usize + 10;
    let creates = (1000.0 * scale) as usize + 10;
    // Both servers are set up first, then measured in alternating rounds, so drift in the
    // machine's load (2 shared cores) falls on both sides alike.
    let mut clients = Vec::new();
    for (label, dir) in [("bypassed", &dir_off), ("enforcing", &dir_on)] {
        let admin = client(&dir.join("admin.kubeconfig")).await?;
        kubectl_apply(&admin, objs.clone()).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let c = client(&user_kubeconfig(dir, "bench-user")?).await?;
        // Warm up connections and caches.
        api_round(&c, 50, 10, &format!("warm-{label}")).await?;
        clients.push((label, c, Figures::default(), Figures::default()));
    }
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        for (label, c, g, cr) in clients.iter_mut() {
            let (rg, rc) = api_round(
                c,
                gets / ROUNDS + 1,
                creates / ROUNDS + 1,
                &format!("{label}-{round}"),
            )
            .await?;
            g.lat.extend(rg.lat);
            cr.lat.extend(rc.lat);
        }
    }
    let mut figures = Vec::new();
    for (label, _, g, cr) in clients {
        figures.push((label, g.pct(0.5), g.pct(0.99), cr.pct(0.5), cr.pct(0.99)));
    }
    drop((on, off));
    let (_, g50o, g99o, c50o, c99o) = figures[0];
    for (label, g50, g99, c50, c99) in &figures {
        rows.push(format!(
            "| {label:<9} | {:>7.3} | {:>7.3} | {:>7.3} | {:>7.3} |",
            ms(*g50),
            ms(*g99),
            ms(*c50),
            ms(*c99)
        ));
    }
    let (_, g50, g99, c50, c99) = figures[1];
    let over =
        |a: Duration, b: Duration| (a.as_secs_f64() / b.as_secs_f64().max(1e-9) - 1.0) * 100.0;
    rows.push(format!(
        "| overhead  | {:>+6.1}% | {:>+6.1}% | {:>+6.1}% | {:>+6.1}% |",
        over(g50, g50o),
        over(g99, g99o),
        over(c50, c50o),
        over(c99, c99o)
    ));
    Ok(rows)
}

#[tokio::main]
async fn main() {
    let scale = scale();
    println!("## Authorization decision latency (µs; goal p99 < 50 µs at 10,000 bindings)\n");
    println!("| RoleBindings | policies | request | p50 | p99 | cached p99 | unsliced p50 | unsliced p99 | unsliced/sliced p99 | goal |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let iterations = (20_000.0 * scale) as usize + 100;
    // BENCH_PARTS=decision|api runs one part only.
    let parts = std::env::var("BENCH_PARTS").unwrap_or_default();
    let sizes: &[usize] = if parts == "api" {
        &[]
    } else {
        &[10, 1_000, 10_000]
    };
    for &n in sizes {
        match decision_latency(n, iterations) {
            Ok(rows) => rows.iter().for_each(|r| println!("{r}")),
            Err(e) => println!("| {n} | error: {e} |"),
        }
    }
    println!("\n## API request overhead of authorization + admission + audit (ms, 1 client, sequential)\n");
    if parts == "decision" {
        return;
    }
    if !cfg!(feature = "bench-bypass") {
        println!(
            "(skipped: build with `--features bench-bypass` so one server can run with them off)"
        );
        return;
    }
    println!("| server | GET p50 | GET p99 | create p50 | create p99 |");
    println!("|---|---|---|---|---|");
    match api_overhead(scale).await {
        Ok(rows) => rows.iter().for_each(|r| println!("{r}")),
        Err(e) => println!("error: {e}"),
    }
}
