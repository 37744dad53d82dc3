//! API server benchmark: a real `rampart server` process (the binary cargo built for this
//! profile) on a temporary data directory next to the build output, driven over HTTPS with
//! client certificates by kube-rs clients — each client its own HTTP/1.1 keep-alive connection.
//!
//! Measures: ConfigMap creates (~1 KiB data) with 1 and 32 clients (closed loop) and at a paced
//! 500 creates/s (open loop, latency from the scheduled send time); GETs with 1 and 32 clients;
//! creating 10,000 pods, then LISTing them whole (typed and as raw text) and paginated
//! (`limit=500`); and watch delivery (issuing a create → its ADDED event at a watcher). Prints a
//! table with the goals; never fails a build.
//!
//! Run: `cargo bench --profile ci --bench api` (env `BENCH_SCALE=0.2` for a quick pass,
//! `BENCH_DIR` for the data directory's parent, `RAMPART_BIN` for another server binary,
//! `RAMPART_BENCH_LOGS=1` to echo the server's log, `BENCH_PARTS=pods` for the pod-create row
//! alone and `BENCH_PERF_OUT=<file>` to `perf record -g` the server during that row).
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

use support::{client, ms, server_binary, Figures, Server};

const VALUE_SIZE: usize = 1024;
const MANY: usize = 32;
const CM_NS: &str = "bench";
const POD_NS: &str = "bench-pods";
const WATCH_NS: &str = "bench-watch";
/// A scheduler name nobody runs, so the benchmark's pods stay as created.
const UNSCHEDULED: &str = "nobody";

// ---------------------------------------------------------------------------------------------
// Figures and the table.

/// A goal on p99 latency, in milliseconds.
#[derive(Clone, Copy)]
struct Goal(f64);

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // After the command name: index 0 is field 3 (state); utime and stime are fields 14, 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf(3) only reads a configuration value; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// Prints the rows; each row also shows the CPU time the server and this benchmark process
/// spent per operation since the last `mark` (both share the machine's cores).
struct Table {
    server_pid: u32,
    mark: (Duration, Duration),
}

impl Table {
    fn new(server_pid: u32) -> Table {
        println!(
            "{:<40} {:>7} {:>9} {:>9} {:>9} {:>12} {:>4} {:>6} {:>10} {:>10}",
            "operation",
            "clients",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "goal",
            "met",
            "errors",
            "srv cpu/op",
            "bench cpu/op"
        );
        let mut t = Table {
            server_pid,
            mark: (Duration::ZERO, Duration::ZERO),
        };
        t.mark();
        t
    }

    fn cpu(&self) -> (Duration, Duration) {
        (cpu_time(self.server_pid), cpu_time(std::process::id()))
    }

    /// Start a phase: CPU figures of the following rows count from here.
    fn mark(&mut self) {
        self.mark = self.cpu();
    }

    fn row(&mut self, op: &str, clients: usize, f: &Figures, goal: Option<Goal>) {
        let (goal_s, met) = match goal {
            Some(Goal(g)) => (
                format!("p99 < {g} ms"),
                if ms(f.pct(0.99)) < g && f.errors == 0 {
                    "yes"
                } else {
                    "no"
                },
            ),
            None => ("-".to_string(), "-"),
        };
        let (srv, me) = self.cpu();
        let per = |d: Duration| ms(d) / f.ops.max(1) as f64;
        println!(
            "{op:<40} {clients:>7} {:>9.0} {:>9.2} {:>9.2} {goal_s:>12} {met:>4} {:>6} {:>10.3} {:>10.3}",
            f.throughput(),
            ms(f.pct(0.5)),
            ms(f.pct(0.99)),
            f.errors,
            per(srv.saturating_sub(self.mark.0)),
            per(me.saturating_sub(self.mark.1)),
        );
    }
}

/// The first error message seen, for the notes under the table.
#[derive(Clone, Default)]
struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    fn record(&self, what: &str, e: impl std::fmt::Display) {
        let mut slot = self.0.lock().expect("error slot");
        if slot.is_none() {
            *slot = Some(format!("{what}: {e}"));
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().expect("error slot").take()
    }
}

// ---------------------------------------------------------------------------------------------
// The server process.

// ---------------------------------------------------------------------------------------------
// Clients and objects.

fn configmap(name: String, payload: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        data: Some([("payload".to_string(), payload.to_string())].into()),
        ..Default::default()
    }
}

fn pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Default::default()
            }],
            // No scheduler picks these up: the row measures the API server's create path,
            // not scheduling (`benches/scheduler.rs` measures that).
            scheduler_name: Some(UNSCHEDULED.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

/// Closed loop: every client creates `per` ConfigMaps one after another.
async fn creates(clients: &[kube::Client], per: usize, tag: &str, errs: &FirstError) -> Figures {
    let payload: Arc<str> = "x".repeat(VALUE_SIZE).into();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, c) in clients.iter().enumerate() {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), CM_NS);
        let (payload, tag, errs) = (payload.clone(), tag.to_string(), errs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(per), 0);
            for i in 0..per {
                let obj = configmap(format!("{tag}-{w}-{i}"), &payload);
                let t = Instant::now();
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        errs.record("create configmap", e);
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.expect("create task"));
    }
    Figures::merge(parts, start.elapsed())
}

/// Open loop: request `i` is due at `t0 + i / rate`. A pacer thread (precise `nanosleep`, not
/// tokio's millisecond timer) hands each request to the `clients` workers when it is due; a
/// worker sends it when free. Latency counts from the due time, so a request that waited for a
/// free worker (the server falling behind) is charged for the wait. Returns the figures from the
/// due time and the service times (from the actual send).
async fn paced_creates(
    clients: &[kube::Client],
    rate: f64,
    total: usize,
    errs: &FirstError,
) -> (Figures, Figures) {
    let payload: Arc<str> = "x".repeat(VALUE_SIZE).into();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for c in clients {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), CM_NS);
        let (payload, rx, errs) = (payload.clone(), rx.clone(), errs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sched_lat, mut service, mut errors) = (Vec::new(), Vec::new(), 0);
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                let sent = Instant::now();
                let obj = configmap(format!("paced-{i}"), &payload);
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {
                        sched_lat.push(due.elapsed());
                        service.push(sent.elapsed());
                    }
                    Err(e) => {
                        errors += 1;
                        errs.record("paced create", e);
                    }
                }
            }
            (sched_lat, service, errors)
        }));
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    std::thread::spawn(move || {
        for i in 0..total {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((i, due)).is_err() {
                break;
            }
        }
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for t in tasks {
        let (s, v, e) = t.await.expect("paced task");
        a.push((s, e));
        b.push((v, 0));
    }
    // Wall time from the first due time, so ops/s shows whether the schedule was kept.
    let wall = t0.elapsed();
    (Figures::merge(a, wall), Figures::merge(b, wall))
}

async fn gets(clients: &[kube::Client], per: usize, names: usize, errs: &FirstError) -> Figures {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, c) in clients.iter().enumerate() {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), CM_NS);
        let errs = errs.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(per), 0);
            for i in 0..per {
                let name = format!("get-{}", (w * 7 + i) % names);
                let t = Instant::now();
                match api.get(&name).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        errs.record("get configmap", e);
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.expect("get task"));
    }
    Figures::merge(parts, start.elapsed())
}

/// `total` pods, taken from a shared counter by every client.
async fn create_pods(clients: &[kube::Client], total: usize, errs: &FirstError) -> Figures {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let api: Api<Pod> = Api::namespaced(c.clone(), POD_NS);
        let (next, errs) = (next.clone(), errs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match api
                    .create(&PostParams::default(), &pod(format!("pod-{i:05}")))
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        errs.record("create pod", e);
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.expect("pod task"));
    }
    Figures::merge(parts, start.elapsed())
}

/// Full LISTs, typed (what a kube-rs caller pays, including decoding into `Pod`s).
async fn list_typed(c: &kube::Client, runs: usize, want: usize, errs: &FirstError) -> Figures {
    let api: Api<Pod> = Api::namespaced(c.clone(), POD_NS);
    let start = Instant::now();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for _ in 0..runs {
        let t = Instant::now();
        match api.list(&ListParams::default()).await {
            Ok(l) if l.items.len() == want => lat.push(t.elapsed()),
            Ok(l) => {
                errors += 1;
                errs.record("list pods", format!("{} items, want {want}", l.items.len()));
            }
            Err(e) => {
                errors += 1;
                errs.record("list pods", e);
            }
        }
    }
    Figures::merge(vec![(lat, errors)], start.elapsed())
}

/// Full LISTs as text: the server's share without client-side decoding. Returns the body size.
async fn list_raw(c: &kube::Client, runs: usize, errs: &FirstError) -> (Figures, usize) {
    let start = Instant::now();
    let (mut lat, mut errors, mut size) = (Vec::new(), 0, 0);
    for _ in 0..runs {
        let req = kube::core::Request::new(format!("/api/v1/namespaces/{POD_NS}/pods"))
            .list(&ListParams::default())
            .expect("list request");
        let t = Instant::now();
        match c.request_text(req).await {
            Ok(body) => {
                lat.push(t.elapsed());
                size = body.len();
            }
            Err(e) => {
                errors += 1;
                errs.record("raw list pods", e);
            }
        }
    }
    (Figures::merge(vec![(lat, errors)], start.elapsed()), size)
}

/// GETs from `getter` while every lister runs `runs` full (raw) LISTs: does a big LIST hold up
/// small requests?
async fn gets_during_lists(
    getter: &kube::Client,
    listers: &[kube::Client],
    runs: usize,
    names: usize,
    errs: &FirstError,
) -> Figures {
    let mut tasks = Vec::new();
    for c in listers {
        let (c, errs) = (c.clone(), errs.clone());
        tasks.push(tokio::spawn(async move { list_raw(&c, runs, &errs).await }));
    }
    let api: Api<ConfigMap> = Api::namespaced(getter.clone(), CM_NS);
    let start = Instant::now();
    let (mut lat, mut errors, mut i) = (Vec::new(), 0, 0);
    while !tasks.iter().all(|t| t.is_finished()) {
        let t = Instant::now();
        match api.get(&format!("get-{}", i % names)).await {
            Ok(_) => lat.push(t.elapsed()),
            Err(e) => {
                errors += 1;
                errs.record("get during lists", e);
            }
        }
        i += 1;
    }
    for t in tasks {
        t.await.expect("lister task");
    }
    Figures::merge(vec![(lat, errors)], start.elapsed())
}

/// Paginated LISTs with `limit`: per-page latencies and whole-traversal latencies.
async fn list_paged(
    c: &kube::Client,
    runs: usize,
    limit: u32,
    want: usize,
    errs: &FirstError,
) -> (Figures, Figures) {
    let api: Api<Pod> = Api::namespaced(c.clone(), POD_NS);
    let start = Instant::now();
    let (mut pages, mut whole, mut errors) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let t_all = Instant::now();
        let mut token: Option<String> = None;
        let mut seen = 0;
        let ok = loop {
            let mut lp = ListParams::default().limit(limit);
            if let Some(t) = token.take() {
                lp = lp.continue_token(&t);
            }
            let t = Instant::now();
            match api.list(&lp).await {
                Ok(l) => {
                    pages.push(t.elapsed());
                    seen += l.items.len();
                    match l.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(c) => token = Some(c),
                        None => break seen == want,
                    }
                }
                Err(e) => {
                    errs.record("paginated list", e);
                    break false;
                }
            }
        };
        if ok {
            whole.push(t_all.elapsed());
        } else {
            errors += 1;
            errs.record("paginated list", format!("saw {seen} pods, want {want}"));
        }
    }
    let wall = start.elapsed();
    let page_count = pages.len();
    let mut p = Figures::merge(vec![(pages, 0)], wall);
    p.ops = page_count;
    (p, Figures::merge(vec![(whole, errors)], wall))
}

/// Issue a create (from `writer`) and time until the watcher (its own connection) sees ADDED.
async fn watch_latency(
    writer: &kube::Client,
    watcher: &kube::Client,
    n: usize,
    errs: &FirstError,
) -> Figures {
    let wapi: Api<ConfigMap> = Api::namespaced(watcher.clone(), WATCH_NS);
    let rv = match wapi.list(&ListParams::default().limit(1)).await {
        Ok(l) => l.metadata.resource_version.unwrap_or_else(|| "0".into()),
        Err(e) => {
            errs.record("watch: initial list", e);
            return Figures::default();
        }
    };
    let mut stream = match wapi.watch(&WatchParams::default().timeout(280), &rv).await {
        Ok(s) => s.boxed(),
        Err(e) => {
            errs.record("watch", e);
            return Figures::default();
        }
    };
    let api: Api<ConfigMap> = Api::namespaced(writer.clone(), WATCH_NS);
    let payload = "w".repeat(VALUE_SIZE);
    let start = Instant::now();
    let (mut lat, mut errors) = (Vec::with_capacity(n), 0);
    'events: for i in 0..n {
        let name = format!("watched-{i}");
        let obj = configmap(name.clone(), &payload);
        let api = api.clone();
        let t = Instant::now();
        let create = tokio::spawn(async move { api.create(&PostParams::default(), &obj).await });
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await;
            match ev {
                Ok(Ok(Some(WatchEvent::Added(cm))))
                    if cm.metadata.name.as_deref() == Some(&name) =>
                {
                    lat.push(t.elapsed());
                    break;
                }
                Ok(Ok(Some(WatchEvent::Error(e)))) => {
                    errors += 1;
                    errs.record("watch event", e);
                    break 'events;
                }
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => {
                    errors += 1;
                    errs.record("watch", "stream ended");
                    break 'events;
                }
                Ok(Err(e)) => {
                    errors += 1;
                    errs.record("watch", e);
                    break 'events;
                }
                Err(_) => {
                    errors += 1;
                    errs.record("watch", format!("no ADDED for {name} within 10 s"));
                    break 'events;
                }
            }
        }
        match create.await.expect("create task") {
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                errs.record("watched create", e);
            }
        }
    }
    Figures::merge(vec![(lat, errors)], start.elapsed())
}

// ---------------------------------------------------------------------------------------------

async fn run(kubeconfig: &Path, scale: f64, server: &mut Server) -> Result<(), String> {
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);
    let errs = FirstError::default();
    let mut notes: Vec<String> = Vec::new();

    // One client per simulated caller; a warm-up request each opens its connection (TLS
    // handshake) before anything is timed.
    let mut clients = Vec::with_capacity(MANY);
    for _ in 0..MANY {
        clients.push(client(kubeconfig).await?);
    }
    let watcher = client(kubeconfig).await?;
    for c in clients.iter().chain([&watcher]) {
        Api::<Namespace>::all(c.clone())
            .get("default")
            .await
            .map_err(|e| format!("warm-up GET namespace/default: {e}"))?;
    }
    let ns_api: Api<Namespace> = Api::all(clients[0].clone());
    for ns in [CM_NS, POD_NS, WATCH_NS] {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ns_api
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("create namespace {ns}: {e}"))?;
    }
    let get_names = 100;
    let setup = Api::<ConfigMap>::namespaced(clients[0].clone(), CM_NS);
    for i in 0..get_names {
        setup
            .create(
                &PostParams::default(),
                &configmap(format!("get-{i}"), &"g".repeat(VALUE_SIZE)),
            )
            .await
            .map_err(|e| format!("create get-{i}: {e}"))?;
    }
    // Warm the server (allocators, RocksDB memtables, code paths) on every connection.
    creates(&clients, n(20), "warm", &errs).await;
    let _ = errs.take();

    let mut table = Table::new(server.child.id());
    let note_err = |notes: &mut Vec<String>, what: &str| {
        if let Some(e) = errs.take() {
            notes.push(format!("{what}: first error: {e}"));
        }
    };

    // `BENCH_PARTS=pods`: only the pod-create row (what issue 13 item 8 measures), optionally
    // under `perf record` (`BENCH_PERF_OUT=<file>`), attached to the server for that phase only.
    if std::env::var("BENCH_PARTS").is_ok_and(|p| p == "pods") {
        let pods = n(10_000);
        let perf = std::env::var_os("BENCH_PERF_OUT").and_then(|out| {
            let child = std::process::Command::new("perf")
                .args(["record", "-F", "1999", "-g", "-o"])
                .arg(&out)
                .args(["-p", &server.child.id().to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(c) => Some(c),
                Err(e) => {
                    notes.push(format!("perf record not started: {e}"));
                    None
                }
            }
        });
        if perf.is_some() {
            // perf needs a moment to attach to every thread before the timed phase.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        table.mark();
        let f = create_pods(&clients, pods, &errs).await;
        table.row(&format!("create pod ({pods})"), MANY, &f, None);
        note_err(&mut notes, "create pods");
        if let Some(mut child) = perf {
            // SAFETY: kill(2) with SIGINT on the pid of our own, not yet reaped, child; perf
            // writes its data file on SIGINT.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
        for n in notes {
            println!("note: {n}");
        }
        return Ok(());
    }

    table.mark();
    let f = creates(&clients[..1], n(1500), "c1", &errs).await;
    table.row("create configmap (1 KiB)", 1, &f, None);
    note_err(&mut notes, "create, 1 client");

    table.mark();
    let f = creates(&clients, n(150), "c32", &errs).await;
    table.row("create configmap (1 KiB)", MANY, &f, None);
    note_err(&mut notes, "create, 32 clients");

    let rate = 500.0;
    table.mark();
    let (f, service) = paced_creates(&clients, rate, n(2500), &errs).await;
    table.row("create configmap, paced 500/s", MANY, &f, Some(Goal(10.0)));
    notes.push(format!(
        "paced creates: {} sent over {:.1} s; from the scheduled time p50 {:.2} / p99 {:.2} / max {:.2} ms; \
         from the actual send (service time) p50 {:.2} / p99 {:.2} ms",
        f.ops,
        f.wall.as_secs_f64(),
        ms(f.pct(0.5)),
        ms(f.pct(0.99)),
        ms(f.pct(1.0)),
        ms(service.pct(0.5)),
        ms(service.pct(0.99)),
    ));
    note_err(&mut notes, "paced creates");

    table.mark();
    let f = gets(&clients[..1], n(2000), get_names, &errs).await;
    table.row("get configmap", 1, &f, Some(Goal(5.0)));
    note_err(&mut notes, "get, 1 client");

    table.mark();
    let f = gets(&clients, n(200), get_names, &errs).await;
    table.row("get configmap", MANY, &f, Some(Goal(5.0)));
    note_err(&mut notes, "get, 32 clients");

    let pods = n(10_000);
    table.mark();
    let f = create_pods(&clients, pods, &errs).await;
    table.row(&format!("create pod ({pods} for LIST)"), MANY, &f, None);
    note_err(&mut notes, "create pods");
    if f.errors > 0 {
        notes.push(format!(
            "{} pod creates failed: LIST figures below cover fewer pods",
            f.errors
        ));
    }
    let stored = f.ops;

    let runs = n(10).max(3);
    table.mark();
    let f = list_typed(&clients[0], runs, stored, &errs).await;
    table.row(&format!("list {stored} pods (typed)"), 1, &f, None);
    note_err(&mut notes, "list typed");

    table.mark();
    let (f, size) = list_raw(&clients[0], runs, &errs).await;
    table.row(&format!("list {stored} pods (raw body)"), 1, &f, None);
    notes.push(format!(
        "full LIST body: {:.1} MiB for {stored} pods",
        size as f64 / (1024.0 * 1024.0)
    ));
    note_err(&mut notes, "list raw");

    table.mark();
    let f = gets_during_lists(&clients[0], &clients[1..3], n(5).max(2), get_names, &errs).await;
    table.row("get configmap, 2 clients LISTing pods", 1, &f, None);
    notes.push(format!(
        "get while 2 clients LIST pods: {} GETs, p99.9 {:.2} ms, max {:.2} ms",
        f.ops,
        ms(f.pct(0.999)),
        ms(f.pct(1.0))
    ));
    note_err(&mut notes, "get during lists");

    table.mark();
    let (pages, whole) = list_paged(&clients[0], runs, 500, stored, &errs).await;
    table.row("list pods, limit=500 (per page)", 1, &pages, None);
    table.row(
        &format!("list {stored} pods, limit=500 (all pages)"),
        1,
        &whole,
        None,
    );
    note_err(&mut notes, "paginated list");

    table.mark();
    let f = watch_latency(&clients[0], &watcher, n(500), &errs).await;
    table.row("create -> watch ADDED", 1, &f, None);
    note_err(&mut notes, "watch");

    if let Some(status) = server.exited() {
        notes.push(format!(
            "the server exited during the run ({status}); last log lines:\n{}",
            server.tail()
        ));
    }
    println!(
        "(ops/s: completed operations per wall-clock second of that row; for the paced row, \
         latency counts from each request's scheduled send time; cpu/op: ms of CPU (user+sys) \
         per operation, server process and benchmark process)"
    );
    for n in notes {
        println!("note: {n}");
    }
    Ok(())
}

/// The 1/5/15-minute load averages, to show whether something else was using the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let bin = match server_binary() {
        Ok(b) => b,
        Err(e) => {
            println!("api benchmark skipped: {e}");
            return;
        }
    };
    // Same disk as the build output (not /tmp, which may be tmpfs): next to the binary.
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            bin.parent()
                .map(|p| p.join("bench-tmp"))
                .unwrap_or_else(|| PathBuf::from("target/bench-tmp"))
        });
    if let Err(e) = std::fs::create_dir_all(&base) {
        println!(
            "api benchmark skipped: cannot create {}: {e}",
            base.display()
        );
        return;
    }
    let dir = match tempfile::tempdir_in(&base) {
        Ok(d) => d,
        Err(e) => {
            println!("api benchmark skipped: temp dir in {}: {e}", base.display());
            return;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No agent: the node's kubelet would start shims for the benchmark's pods and share the
    // two cores with the API server being measured.
    let mut server = match Server::start_with(&bin, dir.path(), &["--disable-agent"], &[]) {
        Ok(s) => s,
        Err(e) => {
            println!("api benchmark skipped: {e}");
            return;
        }
    };
    println!(
        "api benchmark: server {}, data dir {}, scale {scale}, {} cores, load average {}",
        bin.display(),
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let started = Instant::now();
    if let Err(e) = run(&dir.path().join("admin.kubeconfig"), scale, &mut server).await {
        println!("api benchmark aborted: {e}");
        if let Some(status) = server.exited() {
            println!(
                "the server exited ({status}); last log lines:\n{}",
                server.tail()
            );
        }
    }
    println!(
        "total {:.1} s; load average now {} (other work on the machine skews every figure)",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    drop(server);
}
