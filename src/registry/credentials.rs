//! Registry credentials as docker and podman keep them: lookup from `config.json` (`auths`,
//! `credsStore`, `credHelpers` via `docker-credential-*`, `DOCKER_CONFIG`) and podman's
//! `auth.json` (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`); and storing or
//! erasing them the way `docker login`/`docker logout` do.
//!
//! Docker Hub's credentials live under the key `https://index.docker.io/v1/`; every other
//! registry under its `host[:port]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use super::{DOCKER_HUB, RegistryError};

/// The config key docker uses for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or personal access token).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The key under which credentials for `registry` (as in [`super::Reference::registry`]) are
/// stored: `https://index.docker.io/v1/` for Docker Hub, else the registry itself.
pub fn auth_key(registry: &str) -> String {
    match registry {
        DOCKER_HUB | "index.docker.io" | "registry-1.docker.io" | DOCKER_HUB_AUTH_KEY => {
            DOCKER_HUB_AUTH_KEY.to_string()
        }
        other => other
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    }
}

/// Docker's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".docker")
}

/// Finds credentials for `registry`: docker's config first, then podman's `auth.json`.
/// `Ok(None)` means "anonymous".
pub fn lookup(registry: &str) -> Result<Option<Credential>, RegistryError> {
    let key = auth_key(registry);
    if let Some(c) = convert(docker_credential::get_credential(&key))? {
        return Ok(Some(c));
    }
    // Podman keys Docker Hub as `docker.io`; try both spellings.
    for k in [key.as_str(), registry] {
        if let Some(c) = convert(docker_credential::get_podman_credential(k))? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn convert(
    found: Result<DockerCredential, CredentialRetrievalError>,
) -> Result<Option<Credential>, RegistryError> {
    match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(
            CredentialRetrievalError::NoCredentialConfigured
            | CredentialRetrievalError::ConfigNotFound
            | CredentialRetrievalError::ConfigReadError,
        ) => Ok(None),
        // Helpers answer "credentials not found" for registries they know nothing about.
        Err(CredentialRetrievalError::HelperFailure { stdout, stderr, .. })
            if (stdout.clone() + &stderr).contains("credentials not found") =>
        {
            Ok(None)
        }
        Err(CredentialRetrievalError::HelperFailure {
            helper,
            stdout,
            stderr,
        }) => Err(RegistryError::CredentialHelper {
            helper: helper.trim_start_matches("docker-credential-").to_string(),
            reason: format!("{}{}", stdout.trim(), stderr.trim()),
        }),
        Err(other) => Err(RegistryError::CredentialHelper {
            helper: "(configured)".into(),
            reason: other.to_string(),
        }),
    }
}

/// Where `store`/`erase` put the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// base64 `auth` in this config file.
    File(PathBuf),
    /// A `docker-credential-<helper>` program.
    Helper(String),
}

/// Saves credentials for `registry` as `docker login` does: through the registry's
/// `credHelpers` entry or the `credsStore` helper when configured, else as base64 `auth` in
/// `config.json` (written atomically with mode 0600).
pub fn store(
    config_dir: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<StoredIn, RegistryError> {
    let key = auth_key(registry);
    let path = config_dir.join("config.json");
    let mut config = read_config(&path)?;
    let helper = helper_for(&config, &key);
    let auths = config
        .as_object_mut()
        .ok_or_else(|| file_err(&path, "not a JSON object"))?
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| file_err(&path, "\"auths\" is not a JSON object"))?;
    let stored = match &helper {
        Some(h) => {
            let input =
                serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
            run_helper(h, "store", &input.to_string())?;
            // Docker keeps an empty entry so `docker logout` and tools know the server.
            auths.insert(key, serde_json::json!({}));
            StoredIn::Helper(h.clone())
        }
        None => {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            auths.insert(key, serde_json::json!({ "auth": auth }));
            StoredIn::File(path.clone())
        }
    };
    write_config(config_dir, &path, &config)?;
    Ok(stored)
}

/// Removes credentials for `registry`. `Ok(false)` when none were stored.
pub fn erase(config_dir: &Path, registry: &str) -> Result<bool, RegistryError> {
    let key = auth_key(registry);
    let path = config_dir.join("config.json");
    if !path.exists() {
        return Ok(false);
    }
    let mut config = read_config(&path)?;
    let helper = helper_for(&config, &key);
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(&key))
        .is_some();
    if let Some(h) = &helper
        && let Err(e) = run_helper(h, "erase", &key)
    {
        // The helper may simply not know the server; only fail if nothing was removed.
        if !removed {
            tracing::debug!("erase through docker-credential-{h}: {e}");
            return Ok(false);
        }
    }
    if removed {
        write_config(config_dir, &path, &config)?;
    }
    Ok(removed || helper.is_some())
}

fn helper_for(config: &serde_json::Value, key: &str) -> Option<String> {
    let from_helpers = config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .and_then(|h| h.as_str());
    let store = config.get("credsStore").and_then(|h| h.as_str());
    from_helpers
        .or(store)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn read_config(path: &Path) -> Result<serde_json::Value, RegistryError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_err(path, &e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(file_err(path, &e.to_string())),
    }
}

fn write_config(dir: &Path, path: &Path, config: &serde_json::Value) -> Result<(), RegistryError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| file_err(dir, &e.to_string()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| file_err(dir, &e.to_string()))?;
    let text = serde_json::to_string_pretty(config).map_err(|e| file_err(path, &e.to_string()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| tmp.write_all(text.as_bytes()))
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| file_err(tmp.path(), &e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| file_err(path, &e.error.to_string()))?;
    Ok(())
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<(), RegistryError> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{action} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn file_err(path: &Path, reason: &str) -> RegistryError {
    RegistryError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_uses_the_index_key() {
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("registry-1.docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(auth_key("https://ghcr.io/"), "ghcr.io");
    }

    #[test]
    fn store_then_erase_keeps_other_settings_and_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"other:1":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}"#,
        )
        .unwrap();
        let stored = store(dir.path(), "127.0.0.1:5000", "user", "pa:ss").unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(stored, StoredIn::File(path.clone()));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["detachKeys"], "ctrl-x");
        assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
        let auth = v["auths"]["127.0.0.1:5000"]["auth"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(decoded, b"user:pa:ss");

        assert!(erase(dir.path(), "127.0.0.1:5000").unwrap());
        assert!(!erase(dir.path(), "127.0.0.1:5000").unwrap());
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(v["auths"].get("127.0.0.1:5000").is_none());
        assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
    }
}
