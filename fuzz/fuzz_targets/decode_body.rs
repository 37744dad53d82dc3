//! Request bodies: the first byte picks the media type and the kind, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart::apiserver::fuzzing::{decode_body, MEDIA_TYPES};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let media = MEDIA_TYPES[usize::from(selector) % MEDIA_TYPES.len()];
    decode_body(media, body, usize::from(selector >> 4));
});
