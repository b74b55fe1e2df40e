//! Bearer tokens for the distribution token flow: scopes, the token request (GET with basic
//! credentials, or the OAuth2 POST with a refresh/identity token), and reuse until expiry.
//!
//! One token may cover several scopes (`repository:dst:pull,push` plus `repository:src:pull`),
//! which is what a cross-repository mount needs on token registries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RegistryError;
use super::challenge::Challenge;
use super::credentials::Credential;
use super::error::{chain_text, describe_body};

/// What a request needs to be allowed to do in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// Repository path.
    pub repository: String,
    /// Whether pushing is needed in addition to pulling.
    pub push: bool,
}

impl Scope {
    /// Read access to `repository`.
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: false,
        }
    }

    /// Read and write access to `repository`.
    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: true,
        }
    }

    /// The scope string of the token protocol.
    pub fn as_token_scope(&self) -> String {
        let actions = if self.push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }
}

/// A token and when to stop using it.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// Tokens of one registry host, keyed by the sorted scope set they were issued for.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<String, Token>>,
}

/// Tokens are dropped this long before their stated expiry so a request started just before
/// expiry does not carry a dead token.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// The spec's minimum lifetime when the token service does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

impl TokenCache {
    fn key(scopes: &[Scope]) -> String {
        let mut s: Vec<String> = scopes.iter().map(Scope::as_token_scope).collect();
        s.sort();
        s.dedup();
        s.join(" ")
    }

    /// A cached, unexpired token for exactly these scopes, or one that covers them.
    pub(crate) fn get(&self, scopes: &[Scope]) -> Option<String> {
        let key = TokenCache::key(scopes);
        let tokens = self.tokens.lock().expect("token cache poisoned");
        let now = Instant::now();
        if let Some(t) = tokens.get(&key).filter(|t| t.expires > now) {
            return Some(t.value.clone());
        }
        // A push token also serves pulls of the same repository.
        if scopes.len() == 1 && !scopes[0].push {
            let wider = Scope::push(&scopes[0].repository).as_token_scope();
            return tokens
                .get(&wider)
                .filter(|t| t.expires > now)
                .map(|t| t.value.clone());
        }
        None
    }

    /// Forgets the token for these scopes (after the registry refused it).
    pub(crate) fn forget(&self, scopes: &[Scope]) {
        let key = TokenCache::key(scopes);
        self.tokens
            .lock()
            .expect("token cache poisoned")
            .remove(&key);
    }

    fn put(&self, scopes: &[Scope], value: String, lifetime: Duration) {
        let expires = Instant::now()
            + lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1));
        self.tokens
            .lock()
            .expect("token cache poisoned")
            .insert(TokenCache::key(scopes), Token { value, expires });
    }

    /// Gets a token from the challenge's realm for `scopes`, caches and returns it.
    pub(crate) async fn fetch(
        &self,
        http: &reqwest::Client,
        registry: &str,
        challenge: &Challenge,
        credential: Option<&Credential>,
        scopes: &[Scope],
    ) -> Result<String, RegistryError> {
        let Challenge::Bearer { realm, service, .. } = challenge else {
            return Err(RegistryError::Unsupported(format!(
                "token request to {registry} without a bearer challenge"
            )));
        };
        let scope_strings: Vec<String> = {
            let mut s: Vec<String> = scopes.iter().map(Scope::as_token_scope).collect();
            s.sort();
            s.dedup();
            s
        };
        let token_err = |message: String| RegistryError::Token {
            registry: registry.to_string(),
            realm: realm.clone(),
            message,
        };
        let request = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant: scopes are space-separated in one form field.
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "rbuild".to_string()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.clone()));
                }
                if !scope_strings.is_empty() {
                    form.push(("scope", scope_strings.join(" ")));
                }
                http.post(realm.as_str())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(urlencode(form.iter().map(|(k, v)| (*k, v.as_str()))))
            }
            other => {
                let mut url = reqwest::Url::parse(realm)
                    .map_err(|e| token_err(format!("invalid realm URL: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scope_strings {
                        q.append_pair("scope", s);
                    }
                    if let Some(Credential::Basic { username, .. }) = other {
                        q.append_pair("account", username);
                    }
                }
                let req = http.get(url);
                match other {
                    Some(Credential::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        let resp = request.send().await.map_err(|e| RegistryError::Transport {
            registry: registry.to_string(),
            action: format!("token request to {realm}"),
            reason: chain_text(&e.without_url()),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| RegistryError::Transport {
            registry: registry.to_string(),
            action: format!("reading token from {realm}"),
            reason: chain_text(&e.without_url()),
        })?;
        if status >= 500 || status == 429 {
            return Err(RegistryError::Status {
                registry: registry.to_string(),
                repository: String::new(),
                action: format!("token request to {realm}"),
                status,
                message: describe_body(status, &body),
                retry_after: None,
            });
        }
        if status != 200 {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                repository: scopes
                    .first()
                    .map(|s| s.repository.clone())
                    .unwrap_or_default(),
                action: format!("token request to {realm}"),
                message: describe_body(status, &body),
                login_server: super::credentials::auth_key(registry),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| token_err(format!("unreadable token response: {e}")))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("token response has no token".into()))?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        self.put(scopes, value.clone(), lifetime);
        Ok(value)
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
fn urlencode<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").expect("static URL parses");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_render_as_the_token_protocol_wants() {
        assert_eq!(Scope::pull("a/b").as_token_scope(), "repository:a/b:pull");
        assert_eq!(Scope::push("x").as_token_scope(), "repository:x:pull,push");
    }

    #[test]
    fn cache_reuses_until_expiry_and_push_tokens_cover_pulls() {
        let cache = TokenCache::default();
        cache.put(&[Scope::push("x")], "t1".into(), Duration::from_secs(300));
        assert_eq!(cache.get(&[Scope::push("x")]).as_deref(), Some("t1"));
        assert_eq!(cache.get(&[Scope::pull("x")]).as_deref(), Some("t1"));
        assert_eq!(cache.get(&[Scope::pull("y")]), None);
        // Order of scopes does not matter for multi-scope tokens.
        cache.put(
            &[Scope::push("a"), Scope::pull("b")],
            "t2".into(),
            Duration::from_secs(300),
        );
        assert_eq!(
            cache.get(&[Scope::pull("b"), Scope::push("a")]).as_deref(),
            Some("t2")
        );
        cache.forget(&[Scope::push("x")]);
        assert_eq!(cache.get(&[Scope::push("x")]), None);
        // Tokens about to expire are not handed out.
        cache.put(&[Scope::pull("z")], "t3".into(), Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(cache.get(&[Scope::pull("z")]), None);
    }

    #[test]
    fn form_encoding_escapes_spaces_and_colons() {
        let s = urlencode([("scope", "repository:a:pull repository:b:pull")].into_iter());
        assert_eq!(s, "scope=repository%3Aa%3Apull+repository%3Ab%3Apull");
    }
}
