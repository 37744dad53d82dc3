//! Printers for request-path configuration of the apiserver itself:
//! admissionregistration.k8s.io (webhook configurations, validating and
//! mutating admission policies and their bindings) and
//! flowcontrol.apiserver.k8s.io (`FlowSchema`, `PriorityLevelConfiguration`).
//!
//! Copies upstream `printMutatingWebhook`, `printValidatingWebhook`,
//! `print{Validating,Mutating}AdmissionPolicy[Binding]`, `printFlowSchema`
//! and `printPriorityLevelConfiguration`.
//!
//! Invariants: counts are `int64` cells; flow-control defaults (nominal
//! concurrency shares 30, 64 queues, hand size 8, queue length limit 50)
//! print when unset, as after upstream's decode-time defaulting. Upstream
//! additionally sorts FlowSchema *lists* by matching precedence; ordering
//! rows is the caller's job.

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, integer, string, ColumnDefinition};
use super::object::{at, format_label_selector, items, name, opt_int, str_at};
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match kind {
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            (webhook_columns, webhook_cells)
        }
        "ValidatingAdmissionPolicy" => (validating_policy_columns, validating_policy_cells),
        "MutatingAdmissionPolicy" => (mutating_policy_columns, mutating_policy_cells),
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => {
            (binding_columns, binding_cells)
        }
        "FlowSchema" => (flow_schema_columns, flow_schema_cells),
        "PriorityLevelConfiguration" => (priority_level_columns, priority_level_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

fn webhook_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        integer(
            "Webhooks",
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        column::age(),
    ]
}

fn webhook_cells(cfg: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(cfg).into(),
        (items(cfg, &["webhooks"]).len() as i64).into(),
        age::of_object(cfg, now).into(),
    ]
}

const PARAM_KIND_DESCRIPTION: &str =
    "ParamKind specifies the kind of resources used to parameterize this policy";

fn validating_policy_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        integer(
            "Validations",
            "Validations indicates the number of validation rules defined in this configuration",
        ),
        string("ParamKind", PARAM_KIND_DESCRIPTION),
        column::age(),
    ]
}

fn mutating_policy_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        integer(
            "Mutations",
            "Mutation indicates the number of mutations rules defined in this configuration",
        ),
        string("ParamKind", PARAM_KIND_DESCRIPTION),
        column::age(),
    ]
}

fn policy_cells(policy: &Value, rules: &str, now: Timestamp) -> Vec<Value> {
    let param_kind = match at(policy, &["spec", "paramKind"]).filter(|p| p.is_object()) {
        Some(p) => format!("{}/{}", str_at(p, &["apiVersion"]), str_at(p, &["kind"])),
        None => "<unset>".to_string(),
    };
    vec![
        name(policy).into(),
        (items(policy, &["spec", rules]).len() as i64).into(),
        param_kind.into(),
        age::of_object(policy, now).into(),
    ]
}

fn validating_policy_cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    policy_cells(policy, "validations", now)
}

fn mutating_policy_cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    policy_cells(policy, "mutations", now)
}

fn binding_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "PolicyName",
            "PolicyName indicates the policy definition which the policy binding binded to",
        ),
        string(
            "ParamRef",
            "ParamRef indicates the param resource which sets the configration param",
        ),
        column::age(),
    ]
}

/// `namespace/name`, `*/name` when the namespace is unknown, or the
/// selector when the binding selects its params.
fn binding_cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let param = match at(binding, &["spec", "paramRef"]).filter(|p| p.is_object()) {
        None => "<unset>".to_string(),
        Some(p) => {
            let param_name = str_at(p, &["name"]);
            let namespace = str_at(p, &["namespace"]);
            match (
                param_name,
                namespace,
                p.get("selector").filter(|s| !s.is_null()),
            ) {
                ("", _, Some(selector)) => format_label_selector(Some(selector)),
                ("", _, None) => "<unset>".to_string(),
                (n, "", _) => format!("*/{n}"),
                (n, ns, _) => format!("{ns}/{n}"),
            }
        }
    };
    vec![
        name(binding).into(),
        str_at(binding, &["spec", "policyName"]).into(),
        param.into(),
        age::of_object(binding, now).into(),
    ]
}

fn flow_schema_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("PriorityLevel", "`name` is the name of the priority level configuration being referenced Required."),
        string("MatchingPrecedence", "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request. The chosen FlowSchema is among those with the numerically lowest (which we take to be logically highest) MatchingPrecedence.  Each MatchingPrecedence value must be ranged in [1,10000]. Note that if the precedence is not specified, it will be set to 1000 as default."),
        string("DistinguisherMethod", "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema. `nil` specifies that the distinguisher is disabled and thus will always be the empty string."),
        column::age(),
        string("MissingPL", "references a broken or non-existent PriorityLevelConfiguration"),
    ]
}

fn flow_schema_cells(fs: &Value, now: Timestamp) -> Vec<Value> {
    let distinguisher = match at(fs, &["spec", "distinguisherMethod"]).filter(|d| d.is_object()) {
        Some(d) => str_at(d, &["type"]).to_string(),
        None => "<none>".to_string(),
    };
    let missing = items(fs, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Dangling")
        .map_or("?", |c| str_at(c, &["status"]));
    vec![
        name(fs).into(),
        str_at(fs, &["spec", "priorityLevelConfiguration", "name"]).into(),
        opt_int(fs, &["spec", "matchingPrecedence"])
            .unwrap_or(1000)
            .into(),
        distinguisher.into(),
        age::of_object(fs, now).into(),
        missing.into(),
    ]
}

fn priority_level_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Type", "`type` indicates whether this priority level is subject to limitation on request execution.  A value of `\"Exempt\"` means that requests of this priority level are not subject to a limit (and thus are never queued) and do not detract from the capacity made available to other priority levels.  A value of `\"Limited\"` means that (a) requests of this priority level _are_ subject to limits and (b) some of the server's limited capacity is made available exclusively to this priority level. Required."),
        string("NominalConcurrencyShares", "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level."),
        string("Queues", "`queues` is the number of queues for this priority level. The queues exist independently at each apiserver. The value must be positive.  Setting it to 1 effectively precludes shufflesharding and thus makes the distinguisher method of associated flow schemas irrelevant.  This field has a default value of 64."),
        string("HandSize", "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.  When enqueuing a request at this priority level the request's flow identifier (a string pair) is hashed and the hash value is used to shuffle the list of queues and deal a hand of the size specified here.  The request is put into one of the shortest queues in that hand. `handSize` must be no larger than `queues`, and should be significantly smaller (so that a few heavy flows do not saturate most of the queues).  See the user-facing documentation for more extensive guidance on setting this field.  This field has a default value of 8."),
        string("QueueLengthLimit", "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time; excess requests are rejected.  This value must be positive.  If not specified, it will be defaulted to 50."),
        column::age(),
    ]
}

fn priority_level_cells(pl: &Value, now: Timestamp) -> Vec<Value> {
    let none = || Value::from("<none>");
    let (ncs, queues, hand_size, queue_length) =
        match at(pl, &["spec", "limited"]).filter(|l| l.is_object()) {
            None => (none(), none(), none(), none()),
            Some(limited) => {
                let ncs = opt_int(limited, &["nominalConcurrencyShares"]).unwrap_or(30);
                match at(limited, &["limitResponse", "queuing"]).filter(|q| q.is_object()) {
                    None => (ncs.into(), none(), none(), none()),
                    Some(q) => (
                        ncs.into(),
                        opt_int(q, &["queues"]).unwrap_or(64).into(),
                        opt_int(q, &["handSize"]).unwrap_or(8).into(),
                        opt_int(q, &["queueLengthLimit"]).unwrap_or(50).into(),
                    ),
                }
            }
        };
    vec![
        name(pl).into(),
        str_at(pl, &["spec", "type"]).into(),
        ncs,
        queues,
        hand_size,
        queue_length,
        age::of_object(pl, now).into(),
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
    fn webhooks_and_policies() {
        let cfg = json!({"metadata": {"name": "cert-manager-webhook"},
            "webhooks": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(webhook_cells(&cfg, now())[1], json!(2));
        let vap = json!({"spec": {"validations": [{"expression": "true"}],
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}});
        assert_eq!(
            validating_policy_cells(&vap, now())[1..3],
            [json!(1), json!("v1/ConfigMap")]
        );
        assert_eq!(
            mutating_policy_cells(&json!({}), now())[1..3],
            [json!(0), json!("<unset>")]
        );
        let binding = json!({"spec": {"policyName": "p", "paramRef": {"name": "limits"}}});
        assert_eq!(
            binding_cells(&binding, now())[1..3],
            [json!("p"), json!("*/limits")]
        );
        let binding = json!({"spec": {"paramRef": {"selector": {"matchLabels": {"env": "prod"}}}}});
        assert_eq!(binding_cells(&binding, now())[2], json!("env=prod"));
    }

    #[test]
    fn flow_control() {
        let fs = json!({"metadata": {"name": "system-leader-election"},
            "spec": {"priorityLevelConfiguration": {"name": "leader-election"},
                "matchingPrecedence": 100, "distinguisherMethod": {"type": "ByUser"}},
            "status": {"conditions": [{"type": "Dangling", "status": "False"}]}});
        let c = flow_schema_cells(&fs, now());
        assert_eq!(
            c[1..4],
            [json!("leader-election"), json!(100), json!("ByUser")]
        );
        assert_eq!(c[5], json!("False"));
        assert_eq!(flow_schema_cells(&json!({}), now())[5], json!("?"));
        let exempt = json!({"spec": {"type": "Exempt"}});
        assert_eq!(
            priority_level_cells(&exempt, now())[1..6],
            [
                json!("Exempt"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let limited = json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 100,
            "limitResponse": {"type": "Queue", "queuing": {"queues": 128, "handSize": 6}}}}});
        assert_eq!(
            priority_level_cells(&limited, now())[2..6],
            [json!(100), json!(128), json!(6), json!(50)]
        );
    }
}
