//! Fuzz target: shell word expansion must never panic, with either escape character, and
//! `process_word` and `process_words` must agree on success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild::dockerfile::Lexer;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env: Vec<(String, String)> = vec![
        ("A".into(), "a.b/c d".into()),
        ("EMPTY".into(), String::new()),
        ("STAR".into(), "*?[x]".into()),
    ];
    for escape in ['\\', '`'] {
        let lex = Lexer::new(escape);
        let one = lex.process_word(&text, &env);
        let many = lex.process_words(&text, &env);
        assert_eq!(one.is_ok(), many.is_ok(), "{text:?}");
        let _ = lex.process_word_with_matches(&text, &env);
    }
});
