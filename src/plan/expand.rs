//! Word expansion for the planner through the shared BuildKit-exact lexer
//! ([`crate::dockerfile::Lexer`]), keeping only each word's value.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::dockerfile::{Lexer, VarLookup};

/// Variables visible to one instruction, by name.
pub(crate) type Vars = BTreeMap<String, String>;

/// Expands one word the way BuildKit's `ProcessWordWithMatches` does (quotes removed),
/// keeping only the value.
pub(crate) fn expand(word: &str, vars: &dyn VarLookup, escape: char) -> Result<String, String> {
    Lexer::new(escape)
        .process_value(word, vars)
        .map_err(|e| e.to_string())
}

/// [`expand`] that borrows `word` when expanding would not change it (most words: paths,
/// package names, flags), saving a copy per word.
pub(crate) fn expand_cow<'w>(
    word: &'w str,
    vars: &dyn VarLookup,
    escape: char,
) -> Result<Cow<'w, str>, String> {
    let lexer = Lexer::new(escape);
    if lexer.is_plain(word) {
        return Ok(Cow::Borrowed(word));
    }
    lexer
        .process_value(word, vars)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "a"), ("EMPTY", ""), ("P", "/usr/bin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn x(w: &str) -> String {
        expand(w, &vars(), '\\').unwrap()
    }

    #[test]
    fn expands_with_buildkit_rules() {
        assert_eq!(x("$A"), "a");
        assert_eq!(x("${A}b"), "ab");
        assert_eq!(x("${NOPE:-d}"), "d");
        assert_eq!(x("${EMPTY-d}"), "");
        assert_eq!(x("${A:+set}"), "set");
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A b\""), "a b");
        assert_eq!(x("${P}:/bin"), "/usr/bin:/bin");
    }

    #[test]
    fn plain_words_are_borrowed() {
        assert!(matches!(
            expand_cow("/usr/lib", &vars(), '\\'),
            Ok(Cow::Borrowed("/usr/lib"))
        ));
        assert_eq!(expand_cow("$A/b", &vars(), '\\').unwrap(), "a/b");
        assert_eq!(expand_cow("x\\ y", &vars(), '\\').unwrap(), "x y");
        assert_eq!(expand_cow("x` y", &vars(), '`').unwrap(), "x y");
    }
}
