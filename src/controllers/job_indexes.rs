//! The Indexed Job rules the Job controller (`job.rs`) applies per index, as upstream's job
//! controller since 1.33 (both GA): `backoffLimitPerIndex` with `maxFailedIndexes`
//! (`indexed_job_utils.go`) and `successPolicy` (`success_policy.go`).
//!
//! - Per-index back-off: each index has its own failure count (its failed pods that the pod
//!   failure policy counts); an index whose count exceeds `backoffLimitPerIndex`, or whose pod
//!   matched a `FailIndex` rule, is *failed*: listed in `status.failedIndexes` and never
//!   recreated. More failed indexes than `maxFailedIndexes` fail the Job
//!   (`MaxFailedIndexesExceeded`); once every index has either succeeded or failed, failed
//!   indexes fail the Job (`FailedIndexes`). The Job-wide `backoffLimit` does not apply.
//!   Replacement pods carry the index's failure count in the
//!   `batch.kubernetes.io/job-index-failure-count` annotation, as upstream's.
//! - Success policy: the rules are tried in order; a rule with `succeededIndexes` is met when
//!   `succeededCount` of those indexes (all of them without a count) succeeded, a rule with
//!   only `succeededCount` when that many indexes succeeded. The first rule met makes the Job
//!   `SuccessCriteriaMet` (reason `SuccessPolicy`, "Matched rules at index N"), its remaining
//!   pods are deleted and it completes with the same reason.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::SuccessPolicy;

pub const FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-failure-count";
pub const REASON_SUCCESS_POLICY: &str = "SuccessPolicy";
pub const REASON_MAX_FAILED_INDEXES: &str = "MaxFailedIndexesExceeded";
pub const REASON_FAILED_INDEXES: &str = "FailedIndexes";
pub const MESSAGE_MAX_FAILED_INDEXES: &str =
    "Job has exceeded the specified maximal number of failed indexes";
pub const MESSAGE_FAILED_INDEXES: &str = "Job has failed indexes";

/// Upstream's interval strings ("1,3-5") as a set of indexes below `completions`; `None` if
/// malformed (validation keeps those out of stored Jobs).
pub fn parse_intervals(s: &str, completions: i32) -> Option<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>().ok()?, b.parse::<i32>().ok()?),
            None => {
                let v = part.parse::<i32>().ok()?;
                (v, v)
            }
        };
        if a < 0 || b < a {
            return None;
        }
        out.extend((a..=b.min(completions.saturating_sub(1))).take(1_000_000));
    }
    Some(out)
}

/// The index of the first success-policy rule the succeeded indexes meet.
pub fn success_rule_met(
    policy: &SuccessPolicy,
    succeeded: &BTreeSet<i32>,
    completions: i32,
) -> Option<usize> {
    policy.rules.iter().position(
        |rule| match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(idx), count) => {
                let Some(set) = parse_intervals(idx, completions) else {
                    return false;
                };
                let hit = set.intersection(succeeded).count();
                match count {
                    Some(c) => hit >= c.max(0) as usize,
                    None => !set.is_empty() && hit == set.len(),
                }
            }
            (None, Some(c)) => succeeded.len() >= c.max(0) as usize,
            (None, None) => false,
        },
    )
}

/// Per-index failure bookkeeping of an Indexed Job with `backoffLimitPerIndex`.
#[derive(Debug, Default, PartialEq)]
pub struct PerIndex {
    /// Counted failures per index.
    pub failures: BTreeMap<i32, i32>,
    /// Indexes that failed for good.
    pub failed: BTreeSet<i32>,
}

impl PerIndex {
    /// One failed pod of `index`: `fail_now` when a `FailIndex` rule matched it, `counted`
    /// when the failure counts (not `Ignore`d).
    pub fn failure(&mut self, index: i32, counted: bool, fail_now: bool, limit: i32) {
        if fail_now {
            self.failed.insert(index);
            return;
        }
        if counted {
            let n = self.failures.entry(index).or_default();
            *n += 1;
            if *n > limit {
                self.failed.insert(index);
            }
        }
    }

    /// The failure count of an index so far (for the replacement pod's annotation).
    pub fn count(&self, index: i32) -> i32 {
        self.failures.get(&index).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intervals_parse_and_bound() {
        let s = parse_intervals("0,2-4,9", 5).unwrap_or_default();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), [0, 2, 3, 4]);
        assert!(parse_intervals("3-1", 5).is_none());
        assert!(parse_intervals("x", 5).is_none());
        assert_eq!(parse_intervals("", 5), Some(BTreeSet::new()));
    }

    #[test]
    fn success_rules_in_order() {
        let p: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "0,2", "succeededCount": 2},
            {"succeededCount": 3},
        ]}))
        .unwrap_or_default();
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(success_rule_met(&p, &set(&[0]), 5), None);
        assert_eq!(success_rule_met(&p, &set(&[0, 2]), 5), Some(0));
        assert_eq!(success_rule_met(&p, &set(&[1, 3, 4]), 5), Some(1));
        let all: SuccessPolicy =
            serde_json::from_value(json!({"rules": [{"succeededIndexes": "1-2"}]}))
                .unwrap_or_default();
        assert_eq!(success_rule_met(&all, &set(&[1]), 5), None);
        assert_eq!(success_rule_met(&all, &set(&[1, 2]), 5), Some(0));
    }

    #[test]
    fn an_index_fails_past_its_own_limit() {
        let mut p = PerIndex::default();
        p.failure(1, true, false, 1);
        assert!(p.failed.is_empty());
        p.failure(1, true, false, 1);
        assert!(p.failed.contains(&1));
        p.failure(2, false, false, 0);
        assert!(!p.failed.contains(&2), "ignored failures do not count");
        p.failure(3, false, true, 5);
        assert!(p.failed.contains(&3), "FailIndex fails at once");
        assert_eq!(p.count(1), 2);
    }
}
