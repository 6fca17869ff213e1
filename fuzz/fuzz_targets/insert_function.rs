//! Insert-function results crossing back from JavaScript: the input is a JavaScript expression
//! an `onTrack` returns (objects, arrays, numbers such as NaN or -0, cycles, functions,
//! symbols, BigInts, getters that throw…); whatever comes back is converted or refused, never
//! a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|expression: &str| {
    if expression.len() > 4096 {
        return;
    }
    let source = format!("async function onTrack(event, settings) {{ return ({expression}); }}");
    if let Ok(function) = hookline::pipeline::transform::InsertFunction::compile(&source, "fuzz") {
        let event = serde_json::json!({"type": "track", "event": "E", "userId": "u", "properties": {"n": 1}});
        let _ = function.run(&event, &serde_json::json!({}));
    }
});
