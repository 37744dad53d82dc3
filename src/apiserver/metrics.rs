//! `/metrics` in the Prometheus text format: request counts by verb, group, resource,
//! subresource and code; latency histograms; open watches; store revision figures. Names follow
//! upstream's `apiserver_request_total` / `apiserver_request_duration_seconds`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;

use super::body::{full, Body};
use super::State;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// (verb, group, resource, subresource, code)
type RequestKey = (String, String, String, String, u16);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    latency: Mutex<BTreeMap<(String, String, String), Histogram>>,
    pub watches: AtomicI64,
    /// Per served resource (`plural[.group]`, so bounded by the registry): lists, objects
    /// fetched from the store, decoded and tested, returned.
    lists: Mutex<BTreeMap<String, [u64; 4]>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn observe(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        code: u16,
        took: Duration,
    ) {
        *lock(&self.requests)
            .entry((verb.into(), group.into(), resource.into(), sub.into(), code))
            .or_default() += 1;
        // Watches last as long as the client wants; their duration says nothing about latency.
        if verb == "watch" {
            return;
        }
        let secs = took.as_secs_f64();
        let mut lat = lock(&self.latency);
        let h = lat
            .entry((verb.into(), group.into(), resource.into()))
            .or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// One LIST served from the store (upstream's `apiserver_storage_list_*` metrics).
    pub fn observe_list(&self, resource: &str, fetched: usize, evaluated: usize, returned: usize) {
        let mut lists = lock(&self.lists);
        let c = lists.entry(resource.to_string()).or_default();
        c[0] += 1;
        c[1] += fetched as u64;
        c[2] += evaluated as u64;
        c[3] += returned as u64;
    }

    fn render_lists(&self, out: &mut String) {
        const NAMES: [(&str, &str); 4] = [
            (
                "apiserver_storage_list_total",
                "Number of LIST requests served from storage",
            ),
            (
                "apiserver_storage_list_fetched_objects_total",
                "Number of objects read from storage in the course of serving a LIST request",
            ),
            (
                "apiserver_storage_list_evaluated_objects_total",
                "Number of objects tested in the course of serving a LIST request from storage",
            ),
            (
                "apiserver_storage_list_returned_objects_total",
                "Number of objects returned for a LIST request from storage",
            ),
        ];
        let lists = lock(&self.lists);
        for (i, (name, help)) in NAMES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (resource, c) in lists.iter() {
                let _ = writeln!(out, "{name}{{resource=\"{resource}\"}} {}", c[i]);
            }
        }
    }

    pub fn render(&self, state: &Arc<State>) -> Response<Body> {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource, subresource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, group, resource, sub, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",group=\"{group}\",resource=\"{resource}\",subresource=\"{sub}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, group, resource), h) in lock(&self.latency).iter() {
            let labels = format!("verb=\"{verb}\",group=\"{group}\",resource=\"{resource}\"");
            for (b, c) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        self.render_lists(&mut out);
        let _ = writeln!(out, "# HELP apiserver_registered_watchers Number of currently open watches.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}", self.watches.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP rampart_store_revision Current store revision.\n# TYPE rampart_store_revision gauge\nrampart_store_revision {}", state.store.current_revision());
        let _ = writeln!(out, "# HELP rampart_store_compacted_revision Revision history is compacted to.\n# TYPE rampart_store_compacted_revision gauge\nrampart_store_compacted_revision {}", state.store.compacted_revision());
        // Every certificate the server holds: seconds until it expires (alert on a low value;
        // renewal normally keeps leaves above a third of their lifetime).
        out.push_str("# HELP rampart_certificate_expiration_seconds Seconds until each certificate of the server's PKI expires.\n# TYPE rampart_certificate_expiration_seconds gauge\n");
        let now = jiff::Timestamp::now().as_second();
        for (name, info) in state.tls.authority().inventory() {
            let _ = writeln!(
                out,
                "rampart_certificate_expiration_seconds{{name=\"{name}\",serial=\"{}\"}} {}",
                info.serial,
                info.not_after - now
            );
        }
        let mut resp = Response::new(full(out));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}
