//! Word expansion rules, checked against behaviour BuildKit documents in its shell tests.

use super::*;

fn env() -> HashMap<String, String> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn word(s: &str) -> Result<String, ShellError> {
    Lexer::new('\\').process_word(s, &env())
}

#[test]
fn quotes_and_escapes() {
    assert_eq!(word("he'll'o").unwrap(), "hello");
    assert_eq!(word("he\"ll\"o").unwrap(), "hello");
    assert_eq!(word("he\\'llo").unwrap(), "he'llo");
    assert_eq!(word("'$PWD'").unwrap(), "$PWD");
    assert_eq!(word("\"a\\\"b\\c\"").unwrap(), "a\"b\\c");
    assert_eq!(word("\"\\$PWD\"").unwrap(), "$PWD");
    assert!(word("he'llo").is_err());
    assert!(word("\"x").is_err());
    assert_eq!(word("abc\\").unwrap(), "abc");
}

#[test]
fn plain_variables() {
    assert_eq!(word("$PWD/x").unwrap(), "/home/x");
    assert_eq!(word("${PWD}x").unwrap(), "/homex");
    assert_eq!(word("$KOREAN").unwrap(), "한국어");
    assert_eq!(word("$").unwrap(), "$");
    assert_eq!(word("$ x").unwrap(), "$ x");
    assert_eq!(word("$UNSET.").unwrap(), ".");
    assert_eq!(word("$1x").unwrap(), "x");
    assert_eq!(
        word("${}").unwrap_err().message,
        "syntax error: bad substitution"
    );
    assert_eq!(
        word("${PWD").unwrap_err().message,
        "unsupported modifier (\u{FFFD}) in substitution"
    );
    assert_eq!(word("${").unwrap_err().message, "syntax error: missing '}'");
}

#[test]
fn default_and_alternate() {
    assert_eq!(word("${NULL:-d}").unwrap(), "d");
    assert_eq!(word("${NULL-d}").unwrap(), "");
    assert_eq!(word("${UNSET-d}").unwrap(), "d");
    assert_eq!(word("${PWD:+alt}").unwrap(), "alt");
    assert_eq!(word("${NULL:+alt}").unwrap(), "");
    assert_eq!(word("${NULL+alt}").unwrap(), "alt");
    assert_eq!(word("${UNSET:-$PWD}").unwrap(), "/home");
    assert_eq!(word("${UNSET:-'a b'}").unwrap(), "a b");
    assert_eq!(
        word("${PWD:x}").unwrap_err().message,
        "unsupported modifier (:x) in substitution"
    );
    assert_eq!(
        word("${PWD:-x").unwrap_err().message,
        "syntax error: missing '}'"
    );
}

#[test]
fn required() {
    assert_eq!(
        word("${UNSET?}").unwrap_err().message,
        "UNSET: is not allowed to be unset"
    );
    assert_eq!(
        word("${NULL:?}").unwrap_err().message,
        "NULL: is not allowed to be empty"
    );
    assert_eq!(word("${UNSET:?oops}").unwrap_err().message, "UNSET: oops");
    assert_eq!(word("${NULL?}").unwrap(), "");
    assert_eq!(
        word("${UNSET?}").unwrap_err().to_string(),
        "failed to process \"${UNSET?}\": UNSET: is not allowed to be unset"
    );
}

#[test]
fn trimming_and_replacing() {
    let mut e = env();
    e.insert("V".into(), "a.b.c".into());
    let lex = Lexer::new('\\');
    assert_eq!(lex.process_word("${V#*.}", &e).unwrap(), "b.c");
    assert_eq!(lex.process_word("${V##*.}", &e).unwrap(), "c");
    assert_eq!(lex.process_word("${V%.*}", &e).unwrap(), "a.b");
    assert_eq!(lex.process_word("${V%%.*}", &e).unwrap(), "a");
    assert_eq!(lex.process_word("${V/./-}", &e).unwrap(), "a-b.c");
    assert_eq!(lex.process_word("${V//./-}", &e).unwrap(), "a-b-c");
    assert_eq!(
        lex.process_word("${V//\\./-}", &e).unwrap_err().message,
        "invalid pattern (\\.) in substitution: invalid escape '\\.'"
    );
    assert_eq!(
        lex.process_word("${V:#x}", &e).unwrap_err().message,
        "unsupported modifier (:#) in substitution"
    );
    assert_eq!(lex.process_word("${UNSET//a/b}", &e).unwrap(), "");
}

#[test]
fn word_splitting() {
    let mut e = env();
    e.insert("W".into(), " x  y ".into());
    let lex = Lexer::new('\\');
    assert_eq!(
        lex.process_words("a $W b", &e).unwrap(),
        ["a", "x", "y", "b"]
    );
    assert_eq!(
        lex.process_words("a \"$W\" b", &e).unwrap(),
        ["a", " x  y ", "b"]
    );
    assert_eq!(lex.process_words("a\\ b c", &e).unwrap(), ["a b", "c"]);
    assert_eq!(lex.process_words("''", &e).unwrap(), Vec::<String>::new());
    assert!(lex.process_words("", &e).unwrap().is_empty());
}

#[test]
fn backtick_escape() {
    let lex = Lexer::new('`');
    assert_eq!(lex.process_word("a`$PWD\\b", &env()).unwrap(), "a$PWD\\b");
    assert_eq!(lex.process_word("\"`\"\"", &env()).unwrap(), "\"");
}

#[test]
fn matches_are_reported() {
    let x = Lexer::new('\\')
        .process_word_with_matches("$PWD ${NOPE:-x} ${SHELL}", &env())
        .unwrap();
    assert_eq!(x.value, "/home x bash");
    assert_eq!(x.matched.into_iter().collect::<Vec<_>>(), ["PWD", "SHELL"]);
    assert_eq!(x.unmatched.into_iter().collect::<Vec<_>>(), ["NOPE"]);
}

#[test]
fn ordered_env_list_lookup() {
    let list = vec![
        ("A".to_string(), "1".to_string()),
        ("A".to_string(), "2".to_string()),
    ];
    assert_eq!(Lexer::default().process_word("$A", &list).unwrap(), "2");
}

#[test]
fn skip_unset_and_raw_modes() {
    let mode = LexMode {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        untracked: false,
    };
    let x = Lexer::new('\\')
        .process_mode(
            "<<'E\\OF' $X ${Y:-z} \"q\"",
            &HashMap::<String, String>::new(),
            mode,
        )
        .unwrap();
    assert_eq!(x.words, ["<<'E\\OF'", "$X", "${Y:-z}", "\"q\""]);
}

/// Cases in the spirit of BuildKit's `envVarTest` table (env: PWD, SHELL, KOREAN, NULL).
#[test]
fn env_var_table() {
    let ok = [
        ("he\\'llo", "he'llo"),
        ("abc\\tdef", "abctdef"),
        ("\"abc\\tdef\"", "abc\\tdef"),
        ("hello\\\\", "hello\\"),
        ("\"hel'lo\"", "hel'lo"),
        ("'hello\\'", "hello\\"),
        ("\"''\"", "''"),
        ("$.", "$."),
        ("he$.x", "he$.x"),
        ("he$pwd.", "he."),
        ("he\\\\$PWD", "he\\/home"),
        ("\"he\\\\$PWD\"", "he\\/home"),
        ("\\${}", "${}"),
        ("he${hi}xx", "hexx"),
        ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
        ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
        ("he${PWD?}", "he/home"),
        ("he${NULL?}", "he"),
        ("he${PWD:+${SHELL}}xx", "hebashxx"),
        ("\"he'$PWD'\"", "he'/home'"),
        ("'\\$PWD'", "\\$PWD"),
        ("he${PWD:+${PWD}:}xx", "he/home:xx"),
        ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
        ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
        ("안녕\\'하세요", "안녕'하세요"),
        ("안녕$KOREAN", "안녕한국어"),
        ("${aaa}}", "}"),
        ("${aaa}:${bbb}", ":"),
    ];
    for (input, want) in ok {
        assert_eq!(word(input).as_deref(), Ok(want), "{input}");
    }
    let errors = [
        "he\\\\'llo",
        "\"hello\\\"",
        "'hello",
        "he${}xx",
        "he${.}",
        "he${XXX:YYY}",
        "he${XXX?}",
        "he${NULL:?}",
        "he${PWD",
        "he${PWD:=000}xx",
        "${{aaa}",
        "${{aaa}}",
    ];
    for input in errors {
        assert!(
            word(input).is_err(),
            "{input} should fail: {:?}",
            word(input)
        );
    }
}

#[test]
fn quoted_runs_and_unclosed_quotes_in_substitutions() {
    // Quoted text is taken as a run; an unclosed quote inside `${...}` runs to the end of
    // the word, so the substitution reports its missing `}`.
    assert_eq!(word("a'b c'd\"e f\"g").unwrap(), "ab cde fg");
    assert_eq!(word("\"x $PWD y\"").unwrap(), "x /home y");
    assert_eq!(word("\"\\x\\$PWD\"").unwrap(), "\\x$PWD");
    assert_eq!(word("''\"\"").unwrap(), "");
    for w in ["${UNSET:-'x}", "${UNSET:-\"x}", "${UNSET:-\"x\\\"}"] {
        assert_eq!(
            word(w).unwrap_err().message,
            "syntax error: missing '}'",
            "{w}"
        );
    }
    let lex = Lexer::new('\\');
    assert_eq!(
        lex.process_words("a\u{2003}b ''  \"\" c'd e'", &env())
            .unwrap(),
        ["a", "b", "cd e"]
    );
    let raw = LexMode {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        untracked: false,
    };
    let out = lex
        .process_mode("'a b'\"c\\d $X\" \\e", &env(), raw)
        .unwrap();
    assert_eq!(out.value, "'a b'\"c\\\\d $X\" \\e");
    assert_eq!(out.words, ["'a b'\"c\\\\d $X\"", "\\e"]);
    // A non-ASCII escape (only reachable through the API) takes the char-by-char scan.
    let lex = Lexer::new('§');
    assert_eq!(
        lex.process_word("a§ b\"§\"\"$PWD", &env()).unwrap(),
        "a b\"/home"
    );
}

#[test]
fn byte_search_matches_a_plain_scan() {
    let needles = [b'$', b'\'', b'"', b'\\'];
    let mut text = Vec::new();
    for len in 0..30 {
        for at in 0..=len {
            for fill in [b'a', 0x24 ^ 0x80, 0x23, 0x25, 0xFF] {
                text.clear();
                text.resize(len, fill);
                if at < len {
                    text[at] = needles[at % 4];
                }
                let expected = text.iter().any(|c| needles.contains(c));
                assert_eq!(has_any_byte(&text, needles), expected, "{text:?}");
            }
        }
    }
}

#[test]
fn unused_words_are_still_walked() {
    // `PWD` is set, so the default is not built, but its errors and the variables it
    // names still count, as when it was built.
    assert_eq!(word("${PWD:-x y}z").unwrap(), "/homez");
    assert_eq!(word("${UNSET:+x}z").unwrap(), "z");
    assert_eq!(
        word("${PWD:-${UNSET?boom}}").unwrap_err().message,
        "UNSET: boom"
    );
    assert_eq!(
        word("${PWD:-'x}").unwrap_err().message,
        "syntax error: missing '}'"
    );
    let lex = Lexer::new('\\');
    let out = lex
        .process_word_with_matches("${PWD:-$SHELL$NOPE}", &env())
        .unwrap();
    assert_eq!(out.value, "/home");
    assert_eq!(
        out.matched.into_iter().collect::<Vec<_>>(),
        ["PWD", "SHELL"]
    );
    assert_eq!(out.unmatched.into_iter().collect::<Vec<_>>(), ["NOPE"]);
}
