//! The Job controller's Indexed-Job rules end to end: `backoffLimitPerIndex` (an index retried
//! on its own budget, then listed in `status.failedIndexes` and the Job `FailedIndexes`),
//! `maxFailedIndexes` (`MaxFailedIndexesExceeded`) and `successPolicy` (`SuccessCriteriaMet`
//! with reason `SuccessPolicy`, the remaining pods removed).
//!
//! No kubelet runs: the test finishes pods itself by writing their phase and container exit
//! codes through the `status` subresource, as a kubelet would.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn active(s: &Server, job: &str) -> Vec<Value> {
    s.json(&["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .cloned()
        .collect()
}

fn index(p: &Value) -> i64 {
    p["metadata"]["annotations"][INDEX]
        .as_str()
        .and_then(|i| i.parse().ok())
        .unwrap_or(-1)
}

fn pod_of(s: &Server, job: &str, i: i64) -> Option<Value> {
    active(s, job).into_iter().find(|p| index(p) == i)
}

fn finish(s: &Server, pod: &Value, phase: &str, exit_code: i32) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let now = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let body = json!({"status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "c", "image": "busybox:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": exit_code, "reason": "Completed"}}}],
    }})
    .to_string();
    let r = s.raw(Raw::send(
        "PATCH",
        &format!("/api/v1/namespaces/default/pods/{name}/status"),
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn finish_index(s: &Server, job: &str, i: i64, phase: &str, code: i32) -> Value {
    let mut found = None;
    assert!(
        eventually(WAIT, || {
            found = pod_of(s, job, i);
            found.is_some()
        }),
        "no active pod for index {i} of {job}: {}",
        s.ok(&["get", "pods", "-o", "wide"])
    );
    let pod = found.unwrap_or_default();
    finish(s, &pod, phase, code);
    pod
}

fn condition(s: &Server, job: &str, type_: &str) -> Option<Value> {
    s.json(&["get", "job", job])["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn job(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  completionMode: Indexed\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: busybox:1}}]\n"
    )
}

#[test]
fn backoff_limit_per_index_retries_and_fails_an_index() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        &job(
            "per",
            "  completions: 3\n  parallelism: 3\n  backoffLimitPerIndex: 1\n  maxFailedIndexes: 2\n",
        ),
    );
    assert!(eventually(WAIT, || active(&s, "per").len() == 3));
    let first = pod_of(&s, "per", 1).unwrap_or_default();
    assert_eq!(
        first["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"], "0",
        "{first}"
    );
    // Index 1 fails once: it is retried (after its own back-off) and says how often it failed.
    finish_index(&s, "per", 1, "Failed", 3);
    let failed_at = std::time::Instant::now();
    let mut retry = None;
    assert!(
        eventually(Duration::from_secs(40), || {
            retry = pod_of(&s, "per", 1);
            retry.is_some()
        }),
        "index 1 was not retried: {}",
        s.ok(&["get", "job", "per", "-o", "yaml"])
    );
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(8),
        "the index was retried after {waited:?}, before its 10 s back-off"
    );
    let retry = retry.unwrap_or_default();
    assert_ne!(retry["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(
        retry["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"], "1",
        "{retry}"
    );
    // A second failure exceeds its limit: the index fails for good and is not recreated,
    // while the Job carries on with the others.
    finish(&s, &retry, "Failed", 3);
    assert!(eventually(WAIT, || {
        s.json(&["get", "job", "per"])["status"]["failedIndexes"] == "1"
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pod_of(&s, "per", 1).is_none(),
        "a failed index was recreated"
    );
    assert!(condition(&s, "per", "Failed").is_none());
    finish_index(&s, "per", 0, "Succeeded", 0);
    finish_index(&s, "per", 2, "Succeeded", 0);
    assert!(
        eventually(WAIT, || condition(&s, "per", "Failed").is_some()),
        "{}",
        s.ok(&["get", "job", "per", "-o", "yaml"])
    );
    let j = s.json(&["get", "job", "per"]);
    let failed = condition(&s, "per", "Failed").unwrap_or_default();
    assert_eq!(failed["reason"], "FailedIndexes", "{j}");
    assert_eq!(j["status"]["completedIndexes"], "0,2", "{j}");
    assert_eq!(j["status"]["failedIndexes"], "1", "{j}");
    assert_eq!(j["status"]["failed"], 2, "{j}");
}

#[test]
fn max_failed_indexes_fails_the_job() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        &job(
            "cap",
            "  completions: 4\n  parallelism: 4\n  backoffLimitPerIndex: 0\n  maxFailedIndexes: 1\n",
        ),
    );
    assert!(eventually(WAIT, || active(&s, "cap").len() == 4));
    finish_index(&s, "cap", 0, "Failed", 1);
    assert!(eventually(WAIT, || {
        s.json(&["get", "job", "cap"])["status"]["failedIndexes"] == "0"
    }));
    assert!(
        condition(&s, "cap", "Failed").is_none(),
        "one failed index is allowed"
    );
    finish_index(&s, "cap", 3, "Failed", 1);
    assert!(
        eventually(WAIT, || condition(&s, "cap", "Failed").is_some()),
        "{}",
        s.ok(&["get", "job", "cap", "-o", "yaml"])
    );
    let c = condition(&s, "cap", "Failed").unwrap_or_default();
    assert_eq!(c["reason"], "MaxFailedIndexesExceeded", "{c}");
    assert_eq!(
        c["message"],
        "Job has exceeded the specified maximal number of failed indexes"
    );
    assert!(condition(&s, "cap", "FailureTarget").is_some());
    assert!(
        eventually(WAIT, || active(&s, "cap").is_empty()),
        "the failed Job's pods were not removed"
    );
}

#[test]
fn success_policy_completes_early() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        &job(
            "leader",
            "  completions: 5\n  parallelism: 5\n  successPolicy:\n    rules:\n    - {succeededIndexes: \"0,2-3\", succeededCount: 2}\n",
        ),
    );
    assert!(eventually(WAIT, || active(&s, "leader").len() == 5));
    finish_index(&s, "leader", 1, "Succeeded", 0);
    finish_index(&s, "leader", 2, "Succeeded", 0);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        condition(&s, "leader", "SuccessCriteriaMet").is_none(),
        "index 1 is outside the rule: one of its indexes is not enough"
    );
    finish_index(&s, "leader", 0, "Succeeded", 0);
    assert!(
        eventually(WAIT, || condition(&s, "leader", "Complete").is_some()),
        "{}",
        s.ok(&["get", "job", "leader", "-o", "yaml"])
    );
    let met = condition(&s, "leader", "SuccessCriteriaMet").unwrap_or_default();
    assert_eq!(met["reason"], "SuccessPolicy", "{met}");
    assert_eq!(met["message"], "Matched rules at index 0", "{met}");
    let done = condition(&s, "leader", "Complete").unwrap_or_default();
    assert_eq!(done["reason"], "SuccessPolicy", "{done}");
    let j = s.json(&["get", "job", "leader"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    assert!(
        eventually(WAIT, || active(&s, "leader").is_empty()),
        "the remaining indexes' pods were not removed"
    );
}
