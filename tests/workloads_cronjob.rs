//! The CronJob controller end to end: a one-minute schedule fires a Job named after the
//! scheduled minute, owned by the CronJob, recorded in `status.active` and
//! `lastScheduleTime`; an unparseable schedule is reported as an Event. The schedule logic
//! itself (fields, names, day semantics, time zones) is unit-tested in
//! `src/controllers/cron_schedule.rs`.

mod harness;

use std::time::Duration;

use harness::{eventually, Server};

#[test]
fn cronjob_fires_on_a_one_minute_schedule() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: \"*/1 * * * *\"\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox:1}]\n",
    );
    // The next minute boundary is at most 60 s away.
    let fired = eventually(Duration::from_secs(70), || {
        s.json(&["get", "jobs"])["items"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    assert!(
        fired,
        "no Job within 70 s: {}",
        s.ok(&["get", "cronjob", "tick", "-o", "yaml"])
    );
    let jobs = s.json(&["get", "jobs"]);
    let job = &jobs["items"][0];
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("job name {name} is not tick-<minutes>"));
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "tick");
    let scheduled = job["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(scheduled.ends_with(":00Z"), "{scheduled}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let cj = s.json(&["get", "cronjob", "tick"]);
            cj["status"]["lastScheduleTime"] == scheduled.as_str()
                && cj["status"]["active"][0]["name"] == name
        }),
        "status not updated: {}",
        s.ok(&["get", "cronjob", "tick", "-o", "yaml"])
    );
    let at: jiff::Timestamp = scheduled
        .parse()
        .unwrap_or_else(|e| panic!("{scheduled}: {e}"));
    assert_eq!(
        at.as_second(),
        minutes * 60,
        "name and scheduled time disagree"
    );
    let describe = s.ok(&["describe", "cronjob", "tick"]);
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
    // The Job runs like any other: it made its pod.
    assert!(eventually(Duration::from_secs(10), || {
        s.json(&["get", "pods", "-l", &format!("job-name={name}")])["items"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    }));
}
