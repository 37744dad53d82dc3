//! The HorizontalPodAutoscaler's normalization of a proposal, as upstream's
//! `normalizeDesiredReplicasWithBehaviors`: first stabilization (the lowest recommendation of
//! the scale-up window, the highest of the scale-down window — 300 s by default — so a
//! flapping metric does not flap the replicas), then the rate limits of `behavior` policies
//! (`Pods`/`Percent` per `periodSeconds`, `selectPolicy` `Max`/`Min`/`Disabled`) against the
//! scale events of each period, then `minReplicas`/`maxReplicas`. Each step reports upstream's
//! reason for the `AbleToScale` and `ScalingLimited` conditions.
//!
//! An HPA without `behavior` gets upstream's default behavior (scale up by 4 pods or 100 %
//! every 15 s, down by 100 % every 15 s after the 300 s window).
//!
//! State (recommendations and scale events) is per HPA and in memory, as upstream's; a
//! restarted controller starts with empty windows, as upstream's does.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

const DEFAULT_DOWN_WINDOW: i32 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Pods(i32),
    Percent(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    window: Duration,
    select: String,
    policies: Vec<(Policy, Duration)>,
}

fn rules(r: Option<&HPAScalingRules>, up: bool) -> Rules {
    let default_window = if up { 0 } else { DEFAULT_DOWN_WINDOW };
    let policies = r
        .and_then(|r| r.policies.as_ref())
        .filter(|p| !p.is_empty());
    let policies = match policies {
        Some(ps) => ps
            .iter()
            .filter_map(|p| {
                let period = Duration::from_secs(u64::try_from(p.period_seconds).ok()?);
                match p.type_.as_str() {
                    "Pods" => Some((Policy::Pods(p.value), period)),
                    "Percent" => Some((Policy::Percent(p.value), period)),
                    _ => None,
                }
            })
            .collect(),
        None if up => vec![
            (Policy::Pods(4), Duration::from_secs(15)),
            (Policy::Percent(100), Duration::from_secs(15)),
        ],
        None => vec![(Policy::Percent(100), Duration::from_secs(15))],
    };
    let window = r
        .and_then(|r| r.stabilization_window_seconds)
        .unwrap_or(default_window);
    Rules {
        window: Duration::from_secs(u64::try_from(window).unwrap_or(0)),
        select: r
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".into()),
        policies,
    }
}

/// One HPA's memory: recommendations and scale events, each with its time.
#[derive(Debug, Default, Clone)]
pub struct History {
    recommendations: Vec<(i32, jiff::Timestamp)>,
    /// (replicas added (+) or removed (−), when).
    events: Vec<(i32, jiff::Timestamp)>,
}

/// The outcome of normalization: replicas and the two conditions' (status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    pub able: (&'static str, &'static str),
    pub limited: (bool, &'static str, &'static str),
}

impl History {
    /// Remember a rescale (for the rate limits).
    pub fn scaled(&mut self, from: i32, to: i32, now: jiff::Timestamp) {
        self.events.push((to - from, now));
        // Nothing older than an hour can fall in a period (periodSeconds ≤ 1800).
        self.events
            .retain(|(_, t)| now.duration_since(*t).as_secs() < 3600);
    }

    fn changed_within(&self, period: Duration, up: bool, now: jiff::Timestamp) -> i32 {
        self.events
            .iter()
            .filter(|(d, t)| {
                (if up { *d > 0 } else { *d < 0 })
                    && now.duration_since(*t).as_secs_f64() < period.as_secs_f64()
            })
            .map(|(d, _)| d.abs())
            .sum()
    }

    /// Stabilize `desired` and apply the rate limits and bounds.
    pub fn normalize(
        &mut self,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: jiff::Timestamp,
    ) -> Normalized {
        let up = rules(behavior.and_then(|b| b.scale_up.as_ref()), true);
        let down = rules(behavior.and_then(|b| b.scale_down.as_ref()), false);
        let age = |t: &jiff::Timestamp| now.duration_since(*t).as_secs_f64();
        // Stabilization.
        let (mut up_rec, mut down_rec) = (desired, desired);
        let mut old = None;
        for (i, (rec, t)) in self.recommendations.iter().enumerate() {
            if age(t) < up.window.as_secs_f64() {
                up_rec = up_rec.min(*rec);
            }
            if age(t) < down.window.as_secs_f64() {
                down_rec = down_rec.max(*rec);
            }
            if age(t) >= up.window.as_secs_f64() && age(t) >= down.window.as_secs_f64() {
                old = Some(i);
            }
        }
        // From the current count, up to the lowest recent recommendation and down to the
        // highest (upstream's fix for HPAs with both windows set).
        let stabilized = current.max(up_rec).min(down_rec);
        match old {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
        let able = if stabilized != desired {
            if desired >= current {
                ("ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation")
            } else {
                ("ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation")
            }
        } else {
            ("ReadyForNewScale", "recommended size matches current size")
        };
        // Rate limits and bounds.
        let (replicas, reason, message) =
            self.rate_limit(&up, &down, current, stabilized, min, max, now);
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, reason, message),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rate_limit(
        &self,
        up: &Rules,
        down: &Rules,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: jiff::Timestamp,
    ) -> (i32, &'static str, &'static str) {
        if desired > current {
            let mut limit = if up.select == "Disabled" {
                current
            } else {
                let min_change = up.select == "Min";
                let mut result = if min_change { i32::MAX } else { i32::MIN };
                for (p, period) in &up.policies {
                    let start = current - self.changed_within(*period, true, now);
                    let proposed = match p {
                        Policy::Pods(n) => start.saturating_add(*n),
                        Policy::Percent(n) => {
                            (f64::from(start) * (1.0 + f64::from(*n) / 100.0)).ceil() as i32
                        }
                    };
                    result = if min_change {
                        result.min(proposed)
                    } else {
                        result.max(proposed)
                    };
                }
                result
            };
            limit = limit.max(current);
            let (allowed, reason, message) = if max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return (allowed, reason, message);
            }
        } else if desired < current {
            let mut limit = if down.select == "Disabled" {
                current
            } else {
                let min_change = down.select == "Min";
                let mut result = if min_change { i32::MIN } else { i32::MAX };
                for (p, period) in &down.policies {
                    let start = current - self.changed_within(*period, true, now)
                        + self.changed_within(*period, false, now);
                    let proposed = match p {
                        Policy::Pods(n) => start.saturating_sub(*n),
                        Policy::Percent(n) => {
                            (f64::from(start) * (1.0 - f64::from(*n) / 100.0)) as i32
                        }
                    };
                    result = if min_change {
                        result.max(proposed)
                    } else {
                        result.min(proposed)
                    };
                }
                result
            };
            limit = limit.min(current);
            let (allowed, reason, message) = if min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return (allowed, reason, message);
            }
        }
        (
            desired,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn behavior(v: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn default_behavior_stabilizes_downscale_and_limits_upscale() {
        let mut h = History::default();
        // Up from 1 to 10: at most max(1 + 4, 2 × 1) = 5 in 15 s.
        let n = h.normalize(None, 1, 10, 1, 20, t(0));
        assert_eq!(n.replicas, 5);
        assert_eq!(
            n.limited,
            (
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate"
            )
        );
        h.scaled(1, 5, t(0));
        // Within the same period: 5 - 4 added = start 1 → still 5.
        assert_eq!(h.normalize(None, 5, 10, 1, 20, t(5)).replicas, 5);
        // A later period: 5 + 4 = 9, or 10 by 100 % → 10.
        assert_eq!(h.normalize(None, 5, 10, 1, 20, t(20)).replicas, 10);
        // Down to 2 within 300 s of a recommendation of 10: held at the highest recent.
        let n = h.normalize(None, 10, 2, 1, 20, t(30));
        assert_eq!(n.replicas, 10);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        // Beyond the window the low recommendation wins.
        assert_eq!(h.normalize(None, 10, 2, 1, 20, t(400)).replicas, 2);
        // maxReplicas.
        let mut h = History::default();
        let n = h.normalize(None, 3, 9, 1, 4, t(0));
        assert_eq!((n.replicas, n.limited.1), (4, "TooManyReplicas"));
    }

    #[test]
    fn behavior_policies_and_windows() {
        let b = behavior(json!({
            "scaleDown": {"stabilizationWindowSeconds": 0,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
            "scaleUp": {"selectPolicy": "Disabled"}
        }));
        let mut h = History::default();
        // Up is disabled.
        assert_eq!(h.normalize(Some(&b), 2, 5, 1, 10, t(0)).replicas, 2);
        // Down: one pod per minute, no window.
        let n = h.normalize(Some(&b), 5, 1, 1, 10, t(1));
        assert_eq!((n.replicas, n.limited.1), (4, "ScaleDownLimit"));
        h.scaled(5, 4, t(1));
        assert_eq!(h.normalize(Some(&b), 4, 1, 1, 10, t(30)).replicas, 4);
        assert_eq!(h.normalize(Some(&b), 4, 1, 1, 10, t(70)).replicas, 3);
        // Within range.
        let n = h.normalize(Some(&b), 4, 4, 1, 10, t(80));
        assert!(!n.limited.0);
        assert_eq!(n.able.0, "ReadyForNewScale");
    }
}
