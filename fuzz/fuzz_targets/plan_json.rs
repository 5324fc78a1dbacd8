//! Plan JSON, what `apply --plan FILE` reads (and `plan --out` writes). No input may panic; a plan
//! that parses must survive what apply does with it before anything runs: redaction (which must
//! be idempotent, as a reviewed plan is compared redacted with a fresh plan redacted), the
//! description of each action, and a write and re-read that gives the same plan back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_medic::engine::plan::Plan;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return;
    };
    for step in &plan.actions {
        let _ = nginx_medic::pipeline::describe_action(&step.action);
    }

    let mut shown = plan.clone();
    nginx_medic::redact::plan(&mut shown);
    let mut twice = shown.clone();
    nginx_medic::redact::plan(&mut twice);
    assert_eq!(shown, twice, "redacting a redacted plan changes it");

    let written = match serde_json::to_string(&shown) {
        Ok(written) => written,
        Err(e) => panic!("a plan that was read cannot be written: {e}"),
    };
    match serde_json::from_str::<Plan>(&written) {
        Ok(read) => assert_eq!(read, shown, "a written plan reads back different"),
        Err(e) => panic!("a written plan does not read back: {e}\n{written}"),
    }
});
