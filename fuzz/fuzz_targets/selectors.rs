//! Label and field selectors as they arrive in `?labelSelector=` and `?fieldSelector=`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rampart::api::selectors::{FieldSelector, LabelSelector};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = LabelSelector::parse(text) {
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "web".to_string()), ("tier".to_string(), String::new())]
                .into_iter()
                .collect();
        let _ = selector.matches(&labels);
    }
    if let Ok(selector) = FieldSelector::parse(text) {
        let _ = selector.matches(|field| (field == "metadata.name").then(|| "web".to_string()));
    }
});
