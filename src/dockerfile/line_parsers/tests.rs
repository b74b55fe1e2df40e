//! Argument shapes of each line parser.

use super::*;

#[test]
fn flags_are_extracted() {
    let (cmd, flags, rest) = split_command("COPY --from=b --chown=\"a b\" --link src dst");
    assert_eq!(cmd, "COPY");
    assert_eq!(flags, ["--from=b", "--chown=a b", "--link"]);
    assert_eq!(rest, "src dst");
    let (_, flags, rest) = split_command("RUN -- --x");
    assert!(flags.is_empty());
    assert_eq!(rest, "--x");
    let (_, flags, rest) = split_command("RUN --a=é x");
    assert_eq!(flags, ["--a=Ã©"]);
    assert_eq!(rest, "x");
    let (_, flags, rest) = split_command("RUN --");
    assert!(flags.is_empty() && rest.is_empty());
}

#[test]
fn words_keep_quotes() {
    assert_eq!(
        parse_words("foo bar 'abc xyz'", '\\'),
        ["foo", "bar", "'abc xyz'"]
    );
    assert_eq!(parse_words("foo\\ bar", '\\'), ["foo\\ bar"]);
    assert_eq!(
        parse_words("föo bàr \"âbc xÿz\"", '\\'),
        ["föo", "bàr", "\"âbc xÿz\""]
    );
    assert_eq!(parse_words("a=\"\" b", '\\'), ["a=\"\"", "b"]);
}

#[test]
fn words_are_slices_without_a_dangling_escape() {
    // A final escape that escapes nothing is dropped, inside or outside quotes.
    assert_eq!(parse_words("a b\\", '\\'), ["a", "b"]);
    assert_eq!(parse_words("a \"b\\", '\\'), ["a", "\"b"]);
    assert_eq!(parse_words("a \\", '\\'), ["a"]);
    // An escaped escape at the end stays; in single quotes the escape is plain text.
    assert_eq!(parse_words("a\\\\", '\\'), ["a\\\\"]);
    assert_eq!(parse_words("'a\\", '\\'), ["'a\\"]);
    assert_eq!(parse_words("k=`` v`", '`'), ["k=``", "v"]);
    assert_eq!(parse_words("x\\\ty  é\u{85}", '\\'), ["x\\\ty", "é"]);
    assert!(parse_words(" \t ", '\\').is_empty());
}

#[test]
fn plain_flags_are_taken_whole() {
    let (cmd, flags, rest) =
        split_command("run  --mount=type=cache,target=/x --network=none  echo");
    assert_eq!(cmd, "run");
    assert_eq!(flags, ["--mount=type=cache,target=/x", "--network=none"]);
    assert_eq!(rest, "echo");
    // A flag running to the end of the line, `--` and quoted flags take the byte walk.
    let (_, flags, rest) = split_command("COPY --link");
    assert_eq!(flags, ["--link"]);
    assert_eq!(rest, "");
    let (_, flags, rest) = split_command("RUN --a=b -- --c");
    assert_eq!(flags, ["--a=b"]);
    assert_eq!(rest, "--c");
    let (_, flags, _) = split_command("RUN --a=\"x y\" --b=c\\d z");
    assert_eq!(flags, ["--a=x y", "--b=cd"]);
}

#[test]
fn json_or_shell() {
    assert_eq!(
        maybe_json("[\"a\", \"b\"]").unwrap(),
        Parsed {
            args: vec!["a".into(), "b".into()],
            json: true
        }
    );
    assert_eq!(
        maybe_json("[\"a\"] x").unwrap(),
        Parsed {
            args: vec!["[\"a\"] x".into()],
            json: false
        }
    );
    assert!(!maybe_json("[not json]").unwrap().json);
    assert_eq!(maybe_json("[\"a\", 1]").unwrap_err(), NOT_STRING_ARRAY);
    assert_eq!(
        maybe_json("[]").unwrap(),
        Parsed {
            args: vec![],
            json: true
        }
    );
    assert_eq!(maybe_json_to_list("a  b\tc").unwrap().args, ["a", "b", "c"]);
}

#[test]
fn env_shapes() {
    assert_eq!(
        name_val("a=b c=\"d e\"", "ENV", '\\').unwrap().args,
        ["a", "b", "c", "\"d e\""]
    );
    assert_eq!(name_val("x y  z", "ENV", '\\').unwrap().args, ["x", "y  z"]);
    assert_eq!(
        name_val("x", "ENV", '\\').unwrap_err(),
        "ENV must have two arguments"
    );
    assert_eq!(
        name_val("a=b c", "LABEL", '\\').unwrap_err(),
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
}

#[test]
fn healthcheck_shape() {
    assert_eq!(health_config("CMD   a b").unwrap().args, ["CMD", "a b"]);
    assert_eq!(health_config("NONE").unwrap().args, ["NONE"]);
    let p = health_config("CMD [\"x\"]").unwrap();
    assert_eq!(
        (p.args, p.json),
        (vec!["CMD".to_string(), "x".to_string()], true)
    );
}

#[test]
fn plain_json_arrays_match_serde_json() {
    for text in [
        "[]",
        "[ ]",
        "[\"a\"]",
        "[ \"a\" , \"b c\" ]\t\r\n",
        "[\"é\", \"\u{7f}\"]",
        "[\"a\\\"b\"]",
        "[\"a\\u00e9\"]",
        "[\"a\",]",
        "[\"a\" \"b\"]",
        "[\"a\"] x",
        "[\"a\", 1]",
        "[\"a\", null]",
        "[\"a\",[\"b\"]]",
        "[\"a\tb\"]",
        "[\"a",
        "[",
        "[,]",
    ] {
        let serde = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(items)) => items
                .into_iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let plain = plain_string_array(text);
        if let Some(items) = &plain {
            assert_eq!(Some(items), serde.as_ref(), "{text:?}");
        }
        // What the fast path leaves alone still gets serde_json's answer.
        let expected = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(_)) if serde.is_none() => Err(NOT_STRING_ARRAY.into()),
            Ok(serde_json::Value::Array(_)) => Ok(serde),
            _ => Ok(None),
        };
        assert_eq!(parse_json(text), expected, "{text:?}");
    }
}

#[test]
fn words_iterate_like_the_list() {
    let text = "a=\"b c\" d\\ e 'f\\' g' h\u{a0}i \u{2003}j`k` \"l\\";
    // Outside quotes, non-ASCII whitespace splits too; a dangling escape is dropped.
    assert_eq!(
        parse_words("h\u{a0}i \u{2003}j`k` \"l\\", '\\'),
        ["h", "i", "j`k`", "\"l"]
    );
    for escape in ['\\', '`'] {
        let listed = parse_words(text, escape);
        let iterated: Vec<&str> = words(text, escape).collect();
        assert_eq!(listed, iterated);
    }
    assert_eq!(
        parse_words(text, '\\'),
        [
            "a=\"b c\"",
            "d\\ e",
            "'f\\'",
            "g' h\u{a0}i \u{2003}j`k` \"l\\"
        ]
    );
    let (_, flags, rest) = split_command("RUN --a=b\u{a0}--c=d\u{85}x");
    assert_eq!(flags, ["--a=b\u{c2}", "--c=d\u{c2}"]);
    assert_eq!(rest, "x");
}

/// BuildKit's `parseWords` walked char by char, the plain way: the reference the
/// byte-level [`Words`] must agree with.
fn reference_words(rest: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let mut chars = rest.char_indices();
    let (mut in_word, mut quote, mut start, mut dropped) = (false, None, 0, 0);
    while let Some((i, c)) = chars.next() {
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            (in_word, start) = (true, i);
        }
        match quote {
            None if c.is_whitespace() => {
                words.push(&rest[start..i]);
                in_word = false;
                continue;
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        if c == escape && quote != Some('\'') && chars.next().is_none() {
            dropped = c.len_utf8();
        }
    }
    if in_word && rest.len() - dropped > start {
        words.push(&rest[start..rest.len() - dropped]);
    }
    words
}

#[test]
fn words_and_trims_agree_with_the_char_walk() {
    let pieces = [
        "a", "=", " ", "\t", "'", "\"", "\\", "`", "é", "\u{a0}", "\u{2003}", "x y", "\u{85}",
    ];
    // Every string of up to four pieces.
    let mut texts = vec![String::new()];
    for _ in 0..4 {
        let mut longer = Vec::new();
        for t in &texts {
            for p in pieces {
                longer.push(format!("{t}{p}"));
            }
        }
        texts.extend(longer);
        texts.dedup();
    }
    for t in &texts {
        for escape in ['\\', '`'] {
            assert_eq!(parse_words(t, escape), reference_words(t, escape), "{t:?}");
        }
        assert_eq!(trim_ws(t), t.trim(), "{t:?}");
    }
}
