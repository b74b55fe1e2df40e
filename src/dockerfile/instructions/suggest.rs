//! "did you mean" suggestions for misspelt flags, stage names and keys, as BuildKit's
//! `util/suggest` gives them.

use crate::dockerfile::error::levenshtein;

/// The closest candidate to `word` if it is close enough to be a plausible typo.
///
/// Matching is case-insensitive; a candidate qualifies when its edit distance is at most half
/// of the longer word (at least 1), close to what BuildKit's `suggest.Search` accepts.
pub(crate) fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        let dist = levenshtein(&lower, &cand.to_lowercase());
        let limit = (lower.chars().count().max(cand.chars().count()) / 2).max(1);
        if dist == 0 || dist > limit {
            continue;
        }
        if best.is_none_or(|(d, _)| dist < d) {
            best = Some((dist, cand));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Appends ` (did you mean X?)` to `message` when a suggestion exists.
pub(crate) fn with_suggestion<'a, I>(message: String, word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match did_you_mean(word, candidates) {
        Some(s) => format!("{message} (did you mean {s}?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(
            did_you_mean("fromm", ["from", "chown"]),
            Some("from".into())
        );
        assert_eq!(
            did_you_mean("buidl", ["build", "final"]),
            Some("build".into())
        );
        assert_eq!(did_you_mean("zzzzzz", ["from", "chown"]), None);
        assert_eq!(did_you_mean("from", ["from"]), None);
    }

    #[test]
    fn appends_hint() {
        assert_eq!(
            with_suggestion("unknown flag: --lnk".into(), "lnk", ["link"]),
            "unknown flag: --lnk (did you mean link?)"
        );
    }
}
