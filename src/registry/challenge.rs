//! `WWW-Authenticate` challenges: which scheme a registry wants and, for bearer tokens, where
//! to get one (`realm`, `service`, `scope`).

use std::collections::BTreeMap;

/// The authentication a registry asked for in its 401 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="..."`: send the credentials with every request.
    Basic,
    /// `Bearer realm=...,service=...`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// The `service` parameter to pass along.
        service: Option<String>,
        /// The scope the registry suggested (we compute our own; kept for diagnostics).
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses the first challenge we understand from the header values (Bearer preferred).
    pub(crate) fn parse_all<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
        let mut basic = None;
        for value in values {
            match Challenge::parse(value) {
                Some(bearer @ Challenge::Bearer { .. }) => return Some(bearer),
                Some(Challenge::Basic) => basic = Some(Challenge::Basic),
                None => {}
            }
        }
        basic
    }

    /// Parses one `WWW-Authenticate` value.
    pub(crate) fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key="quoted, value",key2=token` → map with lower-case keys.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            }
        );
    }

    #[test]
    fn basic_and_unknown_schemes() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        let both = ["Basic realm=x", "Bearer realm=https://a/t"];
        assert!(matches!(
            Challenge::parse_all(both.into_iter()),
            Some(Challenge::Bearer { .. })
        ));
    }
}
