//! Parser rules, one test per BuildKit behaviour.

use crate::dockerfile::{ParseError, parse};

fn args(text: &str) -> Vec<Vec<String>> {
    parse(text)
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| n.args)
        .collect()
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().message()
}

#[test]
fn directives_before_first_instruction() {
    let df =
        parse("# Syntax = docker/dockerfile:1\n#ESCAPE=`\n# check=skip=all\nFROM a\n").unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.directives.escape, '`');
    assert_eq!(df.directives.check.as_deref(), Some("skip=all"));
    // After a comment, a blank line or an instruction, directives are plain comments.
    let df = parse("# hello\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    let df = parse("\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    let df = parse("FROM a\n# escape=`\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
}

#[test]
fn directive_errors() {
    assert_eq!(
        err("# escape=`\n# Escape=\\\nFROM a\n"),
        "only one escape parser directive can be used"
    );
    assert_eq!(
        err("# escape=x\nFROM a\n"),
        "invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(
        parse("# syntax=a\n# syntax=b\nFROM a").unwrap_err().line(),
        2
    );
}

#[test]
fn continuations_comments_and_blank_lines() {
    let df = parse("RUN a \\\n# comment\n  b \\\n\n  c\nRUN d").unwrap();
    assert_eq!(df.nodes[0].args, ["a   b   c"]);
    assert_eq!((df.nodes[0].start_line, df.nodes[0].end_line), (1, 5));
    assert_eq!(df.nodes[0].original, "RUN a   b   c");
    assert_eq!(df.warnings.len(), 1);
    assert!(df.warnings[0].contains("Empty continuation line found in: RUN a   b   c"));
    assert_eq!(df.nodes[1].start_line, 6);
}

#[test]
fn continuation_edge_cases() {
    assert_eq!(args("RUN a \\  \t\n b"), [["a  b"]]);
    // An escaped escape does not continue the line.
    assert_eq!(args("RUN a \\\\\nRUN b"), [["a \\\\"], ["b"]]);
    // Continuation at end of file.
    assert_eq!(args("RUN a \\"), [["a"]]);
    assert_eq!(args("RUN a \\\n"), [["a"]]);
    // A lone escape on the first line starts an instruction on the next.
    assert_eq!(args("\\\nRUN x"), [["x"]]);
    assert_eq!(
        args("# escape=`\nRUN a `\n b \\\nRUN c"),
        [["a  b \\"], ["c"]]
    );
}

#[test]
fn crlf_bom_case_and_indentation() {
    let df = parse("\u{feff}from a\r\n  rUn b \\\r\n c\r\n").unwrap();
    assert_eq!(df.nodes[0].instruction, "FROM");
    assert_eq!(df.nodes[1].instruction, "RUN");
    assert_eq!(df.nodes[1].args, ["b  c"]);
}

#[test]
fn json_and_shell_forms() {
    let df = parse("CMD [\"a\", \"b c\"]\nCMD [a]\nCMD [\"x\"] y\nCOPY [\"s\", \"d\"]\nCOPY s  d")
        .unwrap();
    let forms: Vec<_> = df
        .nodes
        .iter()
        .map(|n| (n.args.clone(), n.json_form))
        .collect();
    assert_eq!(forms[0], (vec!["a".into(), "b c".into()], true));
    assert_eq!(forms[1], (vec!["[a]".into()], false));
    assert_eq!(forms[2], (vec!["[\"x\"] y".into()], false));
    assert_eq!(forms[3], (vec!["s".into(), "d".into()], true));
    assert_eq!(forms[4], (vec!["s".into(), "d".into()], false));
    assert_eq!(
        err("RUN [\"a\", null]"),
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
}

#[test]
fn flags_are_split_off() {
    let df =
        parse("COPY --from=x --chmod=755 a b\nRUN --mount=type=cache,target=/c -- --x").unwrap();
    assert_eq!(df.nodes[0].flags, ["--from=x", "--chmod=755"]);
    assert_eq!(df.nodes[0].args, ["a", "b"]);
    assert_eq!(df.nodes[1].flags, ["--mount=type=cache,target=/c"]);
    assert_eq!(df.nodes[1].args, ["--x"]);
}

#[test]
fn key_value_instructions() {
    assert_eq!(args("ENV a=b c=\"d e\""), [["a", "b", "c", "\"d e\""]]);
    assert_eq!(args("ENV a b c"), [["a", "b c"]]);
    assert_eq!(args("LABEL \"k k\"='v'"), [["\"k k\"", "'v'"]]);
    assert_eq!(args("ARG a b=1 c=\"x y\""), [["a", "b=1", "c=\"x y\""]]);
    assert_eq!(err("ENV a"), "ENV must have two arguments");
    assert_eq!(
        err("LABEL a=b c"),
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
}

#[test]
fn healthcheck_and_simple_instructions() {
    assert_eq!(
        args("HEALTHCHECK --retries=3 CMD  curl -f x"),
        [["CMD", "curl -f x"]]
    );
    assert_eq!(args("HEALTHCHECK NONE"), [["NONE"]]);
    assert_eq!(args("FROM a  AS b"), [["a", "AS", "b"]]);
    assert_eq!(args("USER  a  b "), [["a  b"]]);
    assert_eq!(args("RUN"), [Vec::<String>::new()]);
}

#[test]
fn onbuild_nesting() {
    let df = parse("ONBUILD RUN --mount=x echo hi\nONBUILD").unwrap();
    let inner = df.nodes[0].onbuild.as_deref().unwrap();
    assert_eq!(inner.instruction, "RUN");
    assert_eq!(inner.flags, ["--mount=x"]);
    assert_eq!(inner.args, ["echo hi"]);
    assert_eq!(df.nodes[0].args, ["RUN --mount=x echo hi"]);
    assert!(df.nodes[1].onbuild.is_none());
    assert_eq!(
        err("ONBUILD ONBUILD RUN x"),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("ONBUILD FROM x"),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("ONBUILD maintainer x"),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
}

#[test]
fn unknown_instruction_suggests() {
    let e = parse("FROM a\n\n  COPPY x y\n").unwrap_err();
    assert_eq!(
        e.message(),
        "unknown instruction: COPPY (did you mean COPY?)"
    );
    assert_eq!((e.line(), e.column()), (3, Some(3)));
    assert_eq!(
        err("FROB x"),
        "unknown instruction: FROB (did you mean FROM?)"
    );
    assert_eq!(err("XYZZYQUUX x"), "unknown instruction: XYZZYQUUX");
}

#[test]
fn heredocs() {
    let text = "RUN <<EOF cat\nhi $X\nEOF\nCOPY <<-'A' 3<<\"B\" /d\n\t\tx\n\tA\ny\nB\nRUN x";
    let df = parse(text).unwrap();
    let run = &df.nodes[0];
    assert_eq!(run.args, ["<<EOF cat"]);
    assert_eq!((run.start_line, run.end_line), (1, 3));
    assert_eq!(run.heredocs[0].content, "hi $X\n");
    assert!(run.heredocs[0].expand);
    assert_eq!(run.original, "RUN <<EOF cat\nhi $X\nEOF\n");
    let copy = &df.nodes[1];
    assert_eq!(copy.args, ["<<-'A'", "3<<\"B\"", "/d"]);
    assert_eq!((copy.start_line, copy.end_line), (4, 8));
    let h: Vec<_> = copy
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str(), h.expand, h.chomp, h.fd))
        .collect();
    assert_eq!(
        h,
        [("A", "x\n", false, true, 0), ("B", "y\n", false, false, 3)]
    );
    assert_eq!(df.nodes[2].start_line, 9);
}

#[test]
fn heredoc_edge_cases() {
    // JSON form and other instructions never read heredocs.
    assert_eq!(args("RUN [\"<<EOF\"]\nCMD x"), [vec!["<<EOF"], vec!["x"]]);
    assert_eq!(args("ENV a=<<EOF\nRUN x"), [vec!["a", "<<EOF"], vec!["x"]]);
    // ONBUILD triggers do.
    let df = parse("ONBUILD RUN <<EOF\nhi\nEOF\n").unwrap();
    assert_eq!(df.nodes[0].heredocs[0].content, "hi\n");
    assert_eq!(df.nodes[0].end_line, 3);
    // CRLF bodies keep their line endings; the delimiter line may end in CRLF.
    let df = parse("RUN <<EOF\r\na\r\nEOF\r\n").unwrap();
    assert_eq!(df.nodes[0].heredocs[0].content, "a\r\n");
    assert!(matches!(
        parse("RUN <<EOF\nnever\n"),
        Err(ParseError::UnterminatedHeredoc {
            line: 1,
            end_line: 2
        })
    ));
}

#[test]
fn empty_files_fail() {
    assert_eq!(err(""), "file with no instructions");
    assert_eq!(err("# only\n\n   \n"), "file with no instructions");
}

#[test]
fn parse_errors_win_over_instruction_errors() {
    // BuildKit parses the whole file before it looks at instruction names.
    assert_eq!(err("COPPY a\nRUN <<EOF\n"), "unterminated heredoc");
    assert_eq!(
        err("FROB a\nCOPPY b\n"),
        "unknown instruction: FROB (did you mean FROM?)"
    );
    assert_eq!(
        err("ONBUILD FROM a\nENV x\n"),
        "ENV must have two arguments"
    );
}

#[test]
fn long_lines_are_refused() {
    let long = format!("FROM a\nRUN {}\n", "x".repeat(70_000));
    assert!(matches!(
        parse(&long),
        Err(ParseError::LineTooLong { line: 2 })
    ));
    let body = format!("RUN <<EOF\n{}\nEOF\n", "y".repeat(70_000));
    assert!(matches!(
        parse(&body),
        Err(ParseError::LineTooLong { line: 2 })
    ));
}

#[test]
fn hostile_nesting_does_not_exhaust_the_stack() {
    let onbuilds = format!("{}RUN x\n", "ONBUILD ".repeat(7000));
    let dollars = format!("RUN {}x\n", "${A:-".repeat(9000));
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            assert_eq!(
                parse(&onbuilds).unwrap_err().message(),
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
            );
            let df = parse(&dollars).unwrap();
            let lex = crate::dockerfile::Lexer::new('\\');
            let env: Vec<(String, String)> = Vec::new();
            assert!(lex.process_word(&df.nodes[0].args[0], &env).is_err());
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn instruction_names_are_static_unless_unknown() {
    use std::borrow::Cow;
    let df = parse("from a\nRuN b\nonbuild copy x y\n").unwrap();
    assert!(matches!(df.nodes[0].instruction, Cow::Borrowed("FROM")));
    assert!(matches!(df.nodes[1].instruction, Cow::Borrowed("RUN")));
    let inner = df.nodes[2].onbuild.as_deref().unwrap();
    assert!(matches!(inner.instruction, Cow::Borrowed("COPY")));
    assert_eq!(super::instruction_name("frob").0, "FROB");
    assert!(super::instruction_name("").1.is_none());
    assert!(super::instruction_name("copyy").1.is_none());
}

#[test]
fn heredoc_bodies_are_whole_lines_of_the_text() {
    let text = "RUN <<A 3<<-'B' cat\none\r\nA\n\t\ttwo\n\tB\nRUN x\n";
    let df = parse(text).unwrap();
    let node = &df.nodes[0];
    assert_eq!(node.heredocs[0].content, "one\r\n");
    assert_eq!(node.heredocs[1].content, "two\n");
    assert_eq!((node.heredocs[1].fd, node.heredocs[1].expand), (3, false));
    // The raw body, then the delimiter's name (BuildKit's Original).
    assert_eq!(node.original, "RUN <<A 3<<-'B' cat\none\r\nA\n\t\ttwo\nB\n");
    assert_eq!((node.start_line, node.end_line), (1, 5));
    assert_eq!(df.nodes[1].start_line, 6);
}
