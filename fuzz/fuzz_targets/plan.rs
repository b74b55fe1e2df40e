//! Fuzz target: planning (stages, ARG scoping, `--from` resolution, dispatch of every needed
//! stage, the dry-run rendering) must never panic on any Dockerfile the parser accepts. Base
//! images resolve to an empty config, as `--dry-run` does for images not stored; no I/O.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild::dockerfile::parse;
use rbuild::plan::{BuildOptions, EmptyImages, Plan, parse_trigger};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(df) = parse(&text) else { return };
    let mut options = BuildOptions::host();
    options.build_args.insert("A".into(), "1".into());
    options
        .build_args
        .insert("HTTP_PROXY".into(), "http://proxy".into());
    let plan = match Plan::new(&df, options) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(plan.target < plan.stages.len());
    assert!(plan.order.contains(&plan.target));
    let _ = plan.unused_build_args();
    match plan.dispatch(&EmptyImages, &parse_trigger) {
        Ok(dispatched) => {
            for (i, d) in &dispatched {
                assert!(
                    plan.order.contains(i),
                    "stage {i} dispatched but not needed"
                );
                assert_eq!(d.config.history.len(), d.first_new_history + d.steps.len());
            }
            let _ = plan.render(Some(&dispatched));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = plan.render(None);
});
