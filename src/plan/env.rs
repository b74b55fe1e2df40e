//! The environment a RUN step sees, held compactly: every `KEY=value` entry in one buffer.
//!
//! A stage's RUN environment is rebuilt after each ENV or ARG, and large Dockerfiles
//! alternate ENV and RUN; one owned string per entry made each rebuild a dozen allocations.

use serde::Serialize;
use serde::ser::SerializeSeq;

/// `KEY=value` entries in order, stored back to back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RunEnv {
    text: String,
    /// End offset of each entry in `text`.
    ends: Vec<usize>,
}

impl RunEnv {
    /// An empty environment with room for `entries` entries of `bytes` bytes in total.
    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> RunEnv {
        RunEnv {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(entries),
        }
    }

    /// Appends one entry written in parts (`["KEY", "=", "value"]`), without formatting.
    pub(crate) fn push_parts(&mut self, parts: &[&str]) {
        for p in parts {
            self.text.push_str(p);
        }
        self.ends.push(self.text.len());
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.text[start..end]
        })
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether `entry` is one of the entries, exactly.
    pub fn contains(&self, entry: &str) -> bool {
        self.iter().any(|e| e == entry)
    }
}

impl<S: AsRef<str>> FromIterator<S> for RunEnv {
    fn from_iter<I: IntoIterator<Item = S>>(entries: I) -> RunEnv {
        let mut env = RunEnv::default();
        for e in entries {
            env.push_parts(&[e.as_ref()]);
        }
        env
    }
}

impl std::fmt::Debug for RunEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A JSON array of strings, as the `Vec<String>` this replaced: cache keys computed from a
/// serialized RUN do not change.
impl Serialize for RunEnv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for e in self.iter() {
            seq.serialize_element(e)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_serialize_as_a_list() {
        let mut env = RunEnv::with_capacity(0, 0);
        assert!(env.is_empty());
        assert_eq!(serde_json::to_string(&env).unwrap(), "[]");
        env.push_parts(&["A", "=", "1"]);
        env.push_parts(&["EMPTY="]);
        env.push_parts(&["B", "=", "x=y"]);
        assert_eq!(env.iter().collect::<Vec<_>>(), ["A=1", "EMPTY=", "B=x=y"]);
        assert_eq!(env.iter().next_back(), Some("B=x=y"));
        assert!(env.contains("EMPTY=") && !env.contains("A="));
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            serde_json::to_string(&["A=1", "EMPTY=", "B=x=y"]).unwrap()
        );
        assert_eq!(format!("{env:?}"), r#"["A=1", "EMPTY=", "B=x=y"]"#);
    }
}
