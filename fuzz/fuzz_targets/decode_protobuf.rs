//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`, what kubectl's typed
//! clients send), with and without the envelope's kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::apiserver::protobuf;

fuzz_target!(|data: &[u8]| {
    let _ = protobuf::decode(data);
    let _ = protobuf::decode_with_defaults(data, "v1", "Pod");
    let _ = protobuf::decode_with_defaults(data, "apps/v1", "Deployment");
});
