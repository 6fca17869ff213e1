//! Mapping validation and resolution, `@liquid` included: input is JSON `[mapping, event]`
//! (or any bytes); every mapping is validated, and the valid ones applied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: &[u8]| {
    let Ok(Value::Array(parts)) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let (Some(mapping), Some(event)) = (parts.first(), parts.get(1)) else {
        return;
    };
    if let Ok(mapping) = hookline::pipeline::mapping::Mapping::compile(Some(mapping)) {
        let _ = mapping.apply(event);
    }
});
