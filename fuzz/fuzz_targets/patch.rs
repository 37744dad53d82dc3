//! Every patch type against an object: byte 0 picks the type (and apply's `force`), byte 1
//! the kind; the rest is `document \0 patch`, the document falling back to a Deployment when
//! it is not a JSON object. Results must stay within the object limits (checked inside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::apiserver::fuzzing::patch;
use serde_json::Value;

const DEFAULT_DOC: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment",
 "metadata":{"name":"web","labels":{"app":"web"},"finalizers":["a","b"]},
 "spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},
  "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[
   {"name":"web","image":"nginx","ports":[{"containerPort":80,"protocol":"TCP"}],
    "env":[{"name":"A","value":"1"}]}]}}}}"#;

fuzz_target!(|data: &[u8]| {
    let [patch_type, kind, rest @ ..] = data else {
        return;
    };
    let (doc, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let doc: Value = match serde_json::from_slice(doc) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::from_str(DEFAULT_DOC).unwrap_or_default(),
    };
    patch(*patch_type, &doc, body, usize::from(*kind));
});
