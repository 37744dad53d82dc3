//! kube-rs against a real server: typed CRUD, and `kube::runtime::watcher` carrying on across a
//! server restart whose compaction made its resume revision too old (410 → re-list → carry on).
//! Also proves objects and resourceVersions survive a restart.

mod harness;

use std::time::Duration;

use futures::StreamExt;
use harness::Server;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

async fn client(s: &Server) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_and_conflicts() {
    let s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let created = api
        .create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let got = api.get("one").await.unwrap();
    assert_eq!(got.metadata.resource_version.as_deref(), Some(rv.as_str()));
    let mut newer = got.clone();
    newer.data = Some([("k".to_string(), "two".to_string())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &newer)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    // Replacing with the stale object is a 409 Conflict.
    match api.replace("one", &PostParams::default(), &got).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let list = api.list(&Default::default()).await.unwrap();
    // Every namespace also holds the root CA ConfigMap (root-ca-cert-publisher).
    let mine = list
        .items
        .iter()
        .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
        .count();
    assert_eq!(mine, 1);
    api.delete("one", &Default::default()).await.unwrap();
    match api.get("one").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

type Events =
    tokio::sync::mpsc::UnboundedReceiver<Result<watcher::Event<ConfigMap>, watcher::Error>>;

/// Consume watcher events until `want` is applied; counts re-lists (`Init`) on the way.
async fn wait_for(rx: &mut Events, want: &str, inits: &mut usize) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("watcher never delivered {want}"))
            .expect("watcher ended");
        match ev {
            Ok(watcher::Event::Init) => *inits += 1,
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let name = o.metadata.name.unwrap_or_default();
                seen.push(name.clone());
                if name == want {
                    return seen;
                }
            }
            // Errors (the connection dropping, a 410) are retried by the watcher itself.
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_compaction_and_restart() {
    let mut s = Server::start_with(&[
        "--history-revisions",
        "1",
        "--history-seconds",
        "0",
        "--compaction-interval-seconds",
        "1",
    ]);
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream_api = cms.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(stream_api, watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let mut inits = 0;
    let mut seen: Vec<String> = Vec::new();
    let a = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    seen.extend(wait_for(&mut rx, "a", &mut inits).await);
    assert_eq!(inits, 1);
    // Move the store far past `a` without touching configmaps (no event reaches the watcher).
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    for i in 0..20 {
        let sec = Secret {
            metadata: ObjectMeta {
                name: Some(format!("s{i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &sec).await.unwrap();
    }
    // Restart: the compactor runs at start-up and compacts past `a`'s revision, so the
    // watcher's resume is answered with 410 and it must re-list.
    s.stop();
    s.boot();
    let b = cms.create(&PostParams::default(), &cm("b")).await.unwrap();
    seen.extend(wait_for(&mut rx, "b", &mut inits).await);
    assert!(
        inits >= 2,
        "the watcher did not re-list after compaction (inits={inits}, seen={seen:?})"
    );
    // Objects and resourceVersions survived the restart.
    let a_again = cms.get("a").await.unwrap();
    assert_eq!(
        a_again.metadata.resource_version,
        a.metadata.resource_version
    );
    assert_eq!(a_again.metadata.uid, a.metadata.uid);
    assert_eq!(
        secrets.list(&Default::default()).await.unwrap().items.len(),
        20
    );
    assert!(b.metadata.resource_version.unwrap().parse::<u64>().unwrap() > 21);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_thousands_of_events() {
    let s = Server::start();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let start = cms
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&kube::api::WatchParams::default().timeout(290), &start)
        .await
        .unwrap()
        .boxed();
    const N: usize = 3000;
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            let mut tasks = futures::stream::iter(0..N)
                .map(|i| {
                    let cms = cms.clone();
                    async move {
                        cms.create(&PostParams::default(), &cm(&format!("ev-{i}")))
                            .await
                    }
                })
                .buffer_unordered(16);
            while let Some(r) = tasks.next().await {
                r.expect("create");
            }
        })
    };
    let mut last_rv = 0u64;
    let mut added = 0;
    while added < N {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("watch stalled")
            .expect("watch ended")
            .expect("watch error");
        if let kube::api::WatchEvent::Added(o) = ev {
            let rv: u64 = o.metadata.resource_version.unwrap().parse().unwrap();
            assert!(rv > last_rv, "events out of order: {rv} after {last_rv}");
            last_rv = rv;
            added += 1;
        }
    }
    writer.await.unwrap();
    assert_eq!(added, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watch_ends_initial_events_with_a_bookmark() {
    let s = Server::start();
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    for n in ["x", "y"] {
        cms.create(&PostParams::default(), &cm(n)).await.unwrap();
    }
    // sendInitialEvents=true + allowWatchBookmarks: the initial state arrives as events and ends
    // with the `k8s.io/initial-events-end` bookmark, which is what makes InitDone appear.
    let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("no InitDone: the initial-events-end bookmark is missing")
            .expect("stream ended")
            .expect("watch error");
        match ev {
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    initial.sort();
    // Every namespace also holds the root CA ConfigMap (root-ca-cert-publisher).
    initial.retain(|n| n != "kube-root-ca.crt");
    assert_eq!(initial, vec!["x", "y"]);
}
