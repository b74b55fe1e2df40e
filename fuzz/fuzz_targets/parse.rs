//! Fuzz target: the Dockerfile parser and its dump must never panic, and a successful parse
//! must keep its line numbers inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match rbuild::dockerfile::parse(&text) {
        Ok(df) => {
            let lines = text.split_inclusive('\n').count().max(1);
            for node in &df.nodes {
                assert!(node.start_line >= 1 && node.start_line <= node.end_line);
                assert!(
                    node.end_line <= lines,
                    "end_line {} > {lines}",
                    node.end_line
                );
            }
            let _ = rbuild::dockerfile::dump(&df);
        }
        Err(e) => {
            let _ = e.render("Dockerfile", &text);
        }
    }
});
