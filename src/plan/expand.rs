//! Word expansion for the planner through the shared BuildKit-exact lexer
//! ([`crate::dockerfile::Lexer`]), reporting which variables each word used.

use std::collections::{BTreeMap, BTreeSet};

use crate::dockerfile::{Lexer, VarLookup};

/// Variables visible to one instruction, by name.
pub(crate) type Vars = BTreeMap<String, String>;

/// A word after expansion, with the names of the variables it read (set or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub value: String,
    pub used: BTreeSet<String>,
}

/// Expands one word the way BuildKit's `ProcessWordWithMatches` does (quotes removed).
pub(crate) fn expand_word(
    word: &str,
    vars: &dyn VarLookup,
    escape: char,
) -> Result<Expanded, String> {
    let e = Lexer::new(escape)
        .process_word_with_matches(word, vars)
        .map_err(|e| e.to_string())?;
    let mut used = e.matched;
    used.extend(e.unmatched);
    Ok(Expanded {
        value: e.value,
        used,
    })
}

/// [`expand_word`] keeping only the value.
pub(crate) fn expand(word: &str, vars: &dyn VarLookup, escape: char) -> Result<String, String> {
    expand_word(word, vars, escape).map(|e| e.value)
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
    fn tracks_used_variables() {
        let e = expand_word("${A}-$NOPE-${B:-x}", &vars(), '\\').unwrap();
        assert_eq!(e.used.into_iter().collect::<Vec<_>>(), ["A", "B", "NOPE"]);
    }
}
