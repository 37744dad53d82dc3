//! batch/v1 printers: `Job` and `CronJob`.
//!
//! Copies upstream `printJob` (STATUS from conditions, COMPLETIONS,
//! DURATION) and `printCronJob`.
//!
//! Invariants: Job STATUS precedence is Complete > Failed > Terminating >
//! Suspended > FailureTarget > Running, where a condition counts only if
//! the *first* condition of its type has status `True`. COMPLETIONS uses
//! the API defaults (completions and parallelism both 1 when neither is
//! set). DURATION is empty before the job starts and keeps growing until
//! `completionTime` is set.

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, boolean, integer, string, ColumnDefinition};
use super::object::{
    at, container_cells, format_label_selector, int_at, is_deleting, items, name, opt_bool,
    opt_int, opt_str, str_at,
};
use super::{age, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    match kind {
        "Job" => Some(Printer {
            columns: job_columns,
            cells: job_cells,
        }),
        "CronJob" => Some(Printer {
            columns: cron_job_columns,
            cells: cron_job_cells,
        }),
        _ => None,
    }
}

const SELECTOR_DESCRIPTION: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

fn job_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        string("Status", "Status of the job."),
        string("Completions", "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs."),
        string("Duration", "Time required to complete the job."),
        column::age(),
        containers,
        images,
        string("Selector", SELECTOR_DESCRIPTION).wide(),
    ]
}

/// `hasJobCondition`: the first condition of `type_` decides.
fn has_condition(job: &Value, type_: &str) -> bool {
    items(job, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == type_)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn job_status(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn completions(job: &Value) -> String {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = opt_int(job, &["spec", "completions"]);
    let parallelism = opt_int(job, &["spec", "parallelism"]);
    match (completions, parallelism) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        // Defaulting sets completions=1 when neither field is set.
        (None, None) => format!("{succeeded}/1"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        (None, Some(_)) => format!("{succeeded}/1"),
    }
}

fn duration(job: &Value, now: Timestamp) -> String {
    let start = age::parse(at(job, &["status", "startTime"]));
    let end = age::parse(at(job, &["status", "completionTime"]));
    match (start, end) {
        (None, _) => String::new(),
        (Some(start), None) => age::human_duration(now.duration_since(start)),
        (Some(start), Some(end)) => age::human_duration(end.duration_since(start)),
    }
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(job, &["spec", "template", "spec"]));
    vec![
        name(job).into(),
        job_status(job).into(),
        completions(job).into(),
        duration(job, now).into(),
        age::of_object(job, now).into(),
        names.into(),
        images.into(),
        format_label_selector(at(job, &["spec", "selector"])).into(),
    ]
}

fn cron_job_columns() -> Vec<ColumnDefinition> {
    let [containers, images] = column::containers_images();
    vec![
        column::name(),
        string("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        string("Timezone", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones"),
        boolean("Suspend", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
        integer("Active", "A list of pointers to currently running jobs."),
        string("Last Schedule", "Information when was the last time the job was successfully scheduled."),
        column::age(),
        containers,
        images,
        string("Selector", SELECTOR_DESCRIPTION).wide(),
    ]
}

fn cron_job_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match at(cj, &["status", "lastScheduleTime"]).filter(|v| !v.is_null()) {
        Some(t) => age::since(age::parse(Some(t)), now),
        None => "<none>".to_string(),
    };
    // printBoolPtr; Suspend defaults to false.
    let suspend = if opt_bool(cj, &["spec", "suspend"]).unwrap_or(false) {
        "True"
    } else {
        "False"
    };
    let job_spec = at(cj, &["spec", "jobTemplate", "spec"]);
    let (names, images) = container_cells(job_spec.and_then(|s| at(s, &["template", "spec"])));
    vec![
        name(cj).into(),
        str_at(cj, &["spec", "schedule"]).into(),
        opt_str(cj, &["spec", "timeZone"])
            .unwrap_or("<none>")
            .into(),
        suspend.into(),
        (items(cj, &["status", "active"]).len() as i64).into(),
        last_schedule.into(),
        age::of_object(cj, now).into(),
        names.into(),
        images.into(),
        format_label_selector(job_spec.and_then(|s| at(s, &["selector"]))).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn completed_job_row() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"completions": 1, "parallelism": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}]}}},
            "status": {"succeeded": 1, "startTime": "2024-05-01T11:00:02Z",
                "completionTime": "2024-05-01T11:00:40Z",
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                               {"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            job_cells(&job, now()),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("38s"),
                json!("60m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("batch.kubernetes.io/controller-uid=abc"),
            ]
        );
    }

    #[test]
    fn running_failed_suspended_and_terminating_jobs() {
        let running = json!({"spec": {"parallelism": 3},
            "status": {"startTime": "2024-05-01T11:57:00Z", "succeeded": 1}});
        let c = job_cells(&running, now());
        assert_eq!(c[1..4], [json!("Running"), json!("1/1 of 3"), json!("3m")]);
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(job_cells(&failed, now())[1], json!("Failed"));
        let first_wins = json!({"status": {"conditions": [
            {"type": "Complete", "status": "False"}, {"type": "Complete", "status": "True"}]}});
        assert_eq!(job_cells(&first_wins, now())[1], json!("Running"));
        let suspended = json!({"spec": {"completions": 5},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(
            job_cells(&suspended, now())[1..4],
            [json!("Suspended"), json!("0/5"), json!("")]
        );
        let deleting = json!({"metadata": {"deletionTimestamp": "2024-05-01T11:59:00Z"},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(job_cells(&deleting, now())[1], json!("Terminating"));
        assert_eq!(job_cells(&json!({}), now())[2], json!("0/1"));
    }

    #[test]
    fn cron_job_row() {
        let cj = json!({"metadata": {"name": "backup", "creationTimestamp": "2024-04-01T00:00:00Z"},
            "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin",
                "jobTemplate": {"spec": {"template": {"spec": {
                    "containers": [{"name": "backup", "image": "restic:0.16"}]}}}}},
            "status": {"active": [{"name": "backup-28580"}],
                "lastScheduleTime": "2024-05-01T03:00:00Z"}});
        assert_eq!(
            cron_job_cells(&cj, now()),
            vec![
                json!("backup"),
                json!("0 3 * * *"),
                json!("Europe/Berlin"),
                json!("False"),
                json!(1),
                json!("9h"),
                json!("30d"),
                json!("backup"),
                json!("restic:0.16"),
                json!("<none>"),
            ]
        );
        let bare = cron_job_cells(&json!({"spec": {"suspend": true}}), now());
        assert_eq!(
            bare[2..6],
            [json!("<none>"), json!("True"), json!(0), json!("<none>")]
        );
    }
}
