//! The Job controller end to end: completions with parallelism, an Indexed Job's indexes,
//! backoffLimit, podFailurePolicy, suspend/resume and ttlSecondsAfterFinished.
//!
//! No kubelet runs: the test finishes pods itself by writing their phase (and container exit
//! codes) through the `status` subresource, as a kubelet would.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn pods(s: &Server, job: &str) -> Vec<Value> {
    s.json(&["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn active(s: &Server, job: &str) -> Vec<Value> {
    pods(s, job)
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .collect()
}

fn finish(s: &Server, pod: &Value, phase: &str, exit_code: i32) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let body = json!({"status": {
        "phase": phase,
        "containerStatuses": [{"name": "c", "image": "busybox:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": exit_code, "reason": "Completed"}}}],
    }})
    .to_string();
    let path = format!("/api/v1/namespaces/default/pods/{name}/status");
    let r = s.raw(Raw::send(
        "PATCH",
        &path,
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn condition(s: &Server, job: &str, type_: &str) -> Option<Value> {
    let j = s.json(&["get", "job", job]);
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn job(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: busybox:1}}]\n"
    )
}

#[test]
fn job_completes_with_parallelism() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        &job("work", "  completions: 4\n  parallelism: 2\n"),
    );
    // Never more than `parallelism` at once; finish them as they come.
    let mut finished = 0;
    let done = eventually(WAIT, || {
        let now = active(&s, "work");
        assert!(now.len() <= 2, "more than parallelism pods: {}", now.len());
        for p in now {
            finish(&s, &p, "Succeeded", 0);
            finished += 1;
        }
        condition(&s, "work", "Complete").is_some()
    });
    assert!(
        done,
        "job never completed: {}",
        s.ok(&["get", "job", "work", "-o", "yaml"])
    );
    assert_eq!(finished, 4, "exactly completions pods ran");
    let j = s.json(&["get", "job", "work"]);
    assert_eq!(j["status"]["succeeded"], 4);
    assert!(j["status"]["completionTime"].is_string());
    assert!(condition(&s, "work", "SuccessCriteriaMet").is_some());
    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=10s",
    ]);
    let describe = s.ok(&["describe", "job", "work"]);
    assert!(
        describe.contains("SuccessfulCreate") && describe.contains("Completed"),
        "{describe}"
    );
}

#[test]
fn indexed_job_gets_its_indexes() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        &job(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        ),
    );
    assert!(eventually(WAIT, || active(&s, "idx").len() == 3));
    let mut indexes: Vec<String> = active(&s, "idx")
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let idx = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(name.starts_with(&format!("idx-{idx}-")), "{name} vs {idx}");
            assert_eq!(
                p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
                idx.as_str()
            );
            let env = &p["spec"]["containers"][0]["env"];
            assert!(env.to_string().contains("JOB_COMPLETION_INDEX"), "{env}");
            idx
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    // Index 1 fails once: it is re-created (same index), the others succeed.
    let by_index = |i: &str| {
        active(&s, "idx")
            .into_iter()
            .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == i)
    };
    for i in ["0", "2"] {
        finish(&s, &by_index(i).expect("pod"), "Succeeded", 0);
    }
    assert!(eventually(WAIT, || s.json(&["get", "job", "idx"])
        ["status"]["completedIndexes"]
        == "0,2"));
    finish(&s, &by_index("1").expect("pod"), "Failed", 1);
    // Replaced after the 10 s back-off.
    assert!(
        eventually(Duration::from_secs(25), || by_index("1").is_some()),
        "index 1 not retried"
    );
    finish(&s, &by_index("1").expect("pod"), "Succeeded", 0);
    assert!(eventually(WAIT, || condition(&s, "idx", "Complete").is_some()));
    let j = s.json(&["get", "job", "idx"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    assert_eq!(j["status"]["failed"], 1);
}

#[test]
fn failures_backoff_limit_policy_suspend_and_ttl() {
    let s = Server::start();
    s.settle();
    // backoffLimit 0: the first failure fails the Job.
    s.ok_in(&["apply", "-f", "-"], &job("once", "  backoffLimit: 0\n"));
    assert!(eventually(WAIT, || active(&s, "once").len() == 1));
    finish(&s, &active(&s, "once")[0], "Failed", 1);
    assert!(eventually(WAIT, || condition(&s, "once", "Failed").is_some()));
    assert_eq!(
        condition(&s, "once", "Failed").unwrap_or_default()["reason"],
        "BackoffLimitExceeded"
    );

    // podFailurePolicy: exit code 42 fails the Job at once despite a generous backoffLimit.
    s.ok_in(
        &["apply", "-f", "-"],
        &job("policy", "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {operator: In, values: [42]}\n"),
    );
    assert!(eventually(WAIT, || active(&s, "policy").len() == 1));
    finish(&s, &active(&s, "policy")[0], "Failed", 42);
    assert!(eventually(WAIT, || condition(&s, "policy", "Failed").is_some()));
    let c = condition(&s, "policy", "Failed").unwrap_or_default();
    assert_eq!(c["reason"], "PodFailurePolicy");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 42"),
        "{c}"
    );

    // suspend: no pods until resumed.
    s.ok_in(&["apply", "-f", "-"], &job("later", "  suspend: true\n"));
    assert!(eventually(WAIT, || condition(&s, "later", "Suspended").is_some()));
    assert!(pods(&s, "later").is_empty(), "a suspended Job made pods");
    s.ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    assert!(eventually(WAIT, || active(&s, "later").len() == 1));

    // ttlSecondsAfterFinished: the finished Job (and its pods) are deleted.
    s.ok_in(
        &["apply", "-f", "-"],
        &job("brief", "  ttlSecondsAfterFinished: 1\n"),
    );
    assert!(eventually(WAIT, || active(&s, "brief").len() == 1));
    finish(&s, &active(&s, "brief")[0], "Succeeded", 0);
    assert!(
        eventually(WAIT, || !s
            .kubectl(&["get", "job", "brief"])
            .status
            .success()),
        "finished Job not deleted after its TTL"
    );
    assert!(eventually(WAIT, || pods(&s, "brief").is_empty()));
}
