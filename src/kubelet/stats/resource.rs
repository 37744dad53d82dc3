//! `GET /metrics/resource`: upstream's resource metrics endpoint in the Prometheus text
//! format (version 0.0.4), with its stable series and labels — `node_cpu_usage_seconds_total`,
//! `node_memory_working_set_bytes`, `pod_*` and `container_*` with `namespace`, `pod` (and
//! `container`) labels, `container_start_time_seconds` and `resource_scrape_error` — each
//! sample stamped with the reading's time in milliseconds, as the kubelet does.

use std::fmt::Write;

use super::Snapshot;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const FAMILIES: [Family; 9] = [
    Family {
        name: "container_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        kind: "counter",
    },
    Family {
        name: "container_memory_working_set_bytes",
        help: "[STABLE] Current working set of the container in bytes",
        kind: "gauge",
    },
    Family {
        name: "container_start_time_seconds",
        help: "[STABLE] Start time of the container since unix epoch in seconds",
        kind: "gauge",
    },
    Family {
        name: "node_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        kind: "counter",
    },
    Family {
        name: "node_memory_working_set_bytes",
        help: "[STABLE] Current working set of the node in bytes",
        kind: "gauge",
    },
    Family {
        name: "pod_cpu_usage_seconds_total",
        help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        kind: "counter",
    },
    Family {
        name: "pod_memory_working_set_bytes",
        help: "[STABLE] Current working set of the pod in bytes",
        kind: "gauge",
    },
    Family {
        name: "resource_scrape_error",
        help: "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        kind: "gauge",
    },
    Family {
        name: "container_memory_rss",
        help: "[ALPHA] Size of RSS of the container in bytes",
        kind: "gauge",
    },
];

/// Prometheus label value escaping: backslash, double quote, newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn render(s: &Snapshot) -> String {
    let ms = s.time.as_millisecond();
    let mut out = String::new();
    for f in &FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        let mut line = |labels: String, value: f64| {
            let _ = writeln!(out, "{}{labels} {value} {ms}", f.name);
        };
        match f.name {
            "node_cpu_usage_seconds_total" => {
                if let Some(c) = s.node.usage.cpu_ns {
                    line(String::new(), seconds(c));
                }
            }
            "node_memory_working_set_bytes" => {
                if let Some(m) = s.node.usage.memory {
                    line(String::new(), m.working_set as f64);
                }
            }
            "resource_scrape_error" => {
                let _ = writeln!(out, "resource_scrape_error 0");
            }
            name => {
                for p in &s.pods {
                    let (ns, pod) = (escape(&p.namespace), escape(&p.name));
                    if name.starts_with("pod_") {
                        let labels = format!("{{namespace=\"{ns}\",pod=\"{pod}\"}}");
                        match name {
                            "pod_cpu_usage_seconds_total" => {
                                if let Some(c) = p.sample.usage.cpu_ns {
                                    line(labels, seconds(c));
                                }
                            }
                            _ => {
                                if let Some(m) = p.sample.usage.memory {
                                    line(labels, m.working_set as f64);
                                }
                            }
                        }
                        continue;
                    }
                    for c in &p.containers {
                        let labels = format!(
                            "{{container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"}}",
                            escape(&c.name)
                        );
                        let mem = c.sample.usage.memory;
                        match name {
                            "container_cpu_usage_seconds_total" => {
                                if let Some(v) = c.sample.usage.cpu_ns {
                                    line(labels, seconds(v));
                                }
                            }
                            "container_memory_working_set_bytes" => {
                                if let Some(m) = mem {
                                    line(labels, m.working_set as f64);
                                }
                            }
                            "container_memory_rss" => {
                                if let Some(m) = mem {
                                    line(labels, m.rss as f64);
                                }
                            }
                            "container_start_time_seconds" => {
                                let start = c
                                    .start_time
                                    .as_deref()
                                    .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                                if let Some(t) = start {
                                    line(labels, t.as_second() as f64);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{cgroup, ContainerStats, PodStats, Sample, Snapshot};

    #[test]
    fn series_and_labels_as_upstream() {
        let usage = cgroup::Usage {
            cpu_ns: Some(1_500_000_000),
            memory: Some(cgroup::Memory {
                usage: 3000,
                working_set: 2048,
                rss: 1024,
                ..Default::default()
            }),
        };
        let s = Snapshot {
            node_name: "n1".into(),
            time: jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            node: Sample {
                usage,
                nano_cores: None,
            },
            pods: vec![PodStats {
                namespace: "ns".into(),
                name: "p\"q".into(),
                uid: "u".into(),
                start_time: None,
                sample: Sample {
                    usage,
                    nano_cores: None,
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: Some("2023-11-14T22:13:20Z".into()),
                    sample: Sample {
                        usage,
                        nano_cores: None,
                    },
                }],
            }],
        };
        let text = super::render(&s);
        assert!(
            text.contains("node_cpu_usage_seconds_total 1.5 1700000000123\n"),
            "{text}"
        );
        assert!(text.contains("node_memory_working_set_bytes 2048 1700000000123\n"));
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\\\"q\"} 1.5 1700000000123\n"
        ), "{text}");
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p\\\"q\"} 2048 ")
        );
        assert!(text.contains("container_start_time_seconds{container=\"c\",namespace=\"ns\",pod=\"p\\\"q\"} 1700000000 "));
        assert!(text.contains("# TYPE node_cpu_usage_seconds_total counter\n"));
        assert!(text.contains("resource_scrape_error 0\n"));
    }
}
