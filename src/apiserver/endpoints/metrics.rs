//! `/metrics` in the Prometheus text format: request counts by verb, group, resource,
//! subresource and code; latency histograms; open watches; store revision figures. Names follow
//! upstream's `apiserver_request_total` / `apiserver_request_duration_seconds`.
//!
//! Invariants (no request creates unbounded state here):
//! - Label values come from fixed vocabularies, never from the request: verbs from upstream's
//!   verb list (plus the lowercase HTTP methods of non-resource requests), group and resource
//!   only when the registry serves them, subresources from the served set; anything else is
//!   `other`, as upstream's `CleanVerb`/`cleanGroup` collapse unknown values. Unauthenticated
//!   requests (401) are not broken out at all: they count under one series per code.
//! - The number of series is capped ([`MAX_SERIES`]); past it new combinations fold into the
//!   `other` series, so even a registry with thousands of CRDs bounds the scrape.
//! - Every label value is escaped as the text exposition format requires (`\\`, `\"`, `\n`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;

use crate::apiserver::edge::body::{full, Body};
use crate::apiserver::edge::request::RequestInfo;
use crate::apiserver::State;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Most distinct label combinations kept per metric; beyond it, everything is `other`.
pub const MAX_SERIES: usize = 4096;

/// What an unrecognised verb, group, resource or subresource becomes.
pub const OTHER: &str = "other";

/// Upstream's resource verbs, then the lowercase HTTP methods non-resource requests carry.
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "post",
    "put",
    "head",
    "options",
    "connect",
];

/// Subresources the server serves (upstream's built-in ones).
const SUBRESOURCES: &[&str] = &[
    "status",
    "scale",
    "binding",
    "eviction",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "token",
    "approval",
    "finalize",
    "ephemeralcontainers",
    "resize",
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// (verb, group, resource, subresource, code)
type RequestKey = (String, String, String, String, u16);

/// One request's labels, every value from a bounded vocabulary (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl Labels {
    /// The labels of a request classified as `info`; `authenticated` is false for requests
    /// answered before anyone was authenticated (401), which are not broken out.
    pub fn of(state: &State, info: &RequestInfo, authenticated: bool) -> Labels {
        let verb = VERBS
            .iter()
            .find(|v| **v == info.verb)
            .copied()
            .unwrap_or(OTHER);
        if !authenticated || !info.resource_request {
            return Labels {
                verb: verb.into(),
                group: String::new(),
                resource: String::new(),
                subresource: String::new(),
            };
        }
        let served = state
            .registry
            .lookup(&info.group, &info.version, &info.resource);
        let (group, resource) = match served {
            Some(r) => (r.group.to_string(), r.plural.to_string()),
            None => (OTHER.to_string(), OTHER.to_string()),
        };
        let subresource = if info.subresource.is_empty() {
            ""
        } else {
            SUBRESOURCES
                .iter()
                .find(|s| **s == info.subresource)
                .copied()
                .unwrap_or(OTHER)
        };
        Labels {
            verb: verb.into(),
            group,
            resource,
            subresource: subresource.into(),
        }
    }

    fn other() -> Labels {
        Labels {
            verb: OTHER.into(),
            group: OTHER.into(),
            resource: OTHER.into(),
            subresource: String::new(),
        }
    }
}

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

/// A label value escaped for the text exposition format: backslash, double quote and line feed
/// are the three characters it gives a meaning to inside quotes.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Metrics {
    pub fn observe(&self, labels: Labels, code: u16, took: Duration) {
        let Labels {
            verb,
            group,
            resource,
            subresource,
        } = labels;
        let watch = verb == "watch";
        let mut requests = lock(&self.requests);
        let mut key = (verb, group, resource, subresource, code);
        if requests.len() >= MAX_SERIES && !requests.contains_key(&key) {
            let o = Labels::other();
            key = (o.verb, o.group, o.resource, o.subresource, code);
        }
        let (verb, group, resource) = (key.0.clone(), key.1.clone(), key.2.clone());
        *requests.entry(key).or_default() += 1;
        drop(requests);
        // Watches last as long as the client wants; their duration says nothing about latency.
        if watch {
            return;
        }
        let secs = took.as_secs_f64();
        let mut lat = lock(&self.latency);
        let mut key = (verb, group, resource);
        if lat.len() >= MAX_SERIES && !lat.contains_key(&key) {
            let o = Labels::other();
            key = (o.verb, o.group, o.resource);
        }
        let h = lat.entry(key).or_default();
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
                let _ = writeln!(out, "{name}{{resource=\"{}\"}} {}", escape(resource), c[i]);
            }
        }
    }

    /// How many request-count series exist (for tests and the cardinality bound).
    #[cfg(test)]
    pub fn series(&self) -> usize {
        lock(&self.requests).len()
    }

    pub fn render(&self, state: &Arc<State>) -> Response<Body> {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource, subresource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, group, resource, sub, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{}\",group=\"{}\",resource=\"{}\",subresource=\"{}\",code=\"{code}\"}} {n}",
                escape(verb),
                escape(group),
                escape(resource),
                escape(sub)
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, group, resource), h) in lock(&self.latency).iter() {
            let labels = format!(
                "verb=\"{}\",group=\"{}\",resource=\"{}\"",
                escape(verb),
                escape(group),
                escape(resource)
            );
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
                "rampart_certificate_expiration_seconds{{name=\"{}\",serial=\"{}\"}} {}",
                escape(&name),
                escape(&info.serial),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("pods"), "pods");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 100) {
            let labels = Labels {
                verb: "get".into(),
                group: String::new(),
                resource: format!("r{i}"),
                subresource: String::new(),
            };
            m.observe(labels, 200, Duration::from_millis(1));
        }
        assert_eq!(
            m.series(),
            MAX_SERIES + 1,
            "the cap plus the `other` series"
        );
        assert!(lock(&m.latency).len() <= MAX_SERIES + 1);
    }
}
