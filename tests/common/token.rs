//! A token server for the distribution bearer-token flow, so registry tests meet what Docker
//! Hub, GHCR and Harbor do: `401` with `WWW-Authenticate: Bearer realm=...`, then a token
//! request (GET with basic credentials, or the OAuth2 POST with a password or refresh token)
//! answered with an RS256 JWT that the registry verifies against this server's certificate.
//!
//! Signing uses the `openssl` CLI (no crypto crate in the test tree). Each request is recorded
//! so tests can assert which scopes a client asked for (e.g. the source repository of a
//! cross-repository mount).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::http::{form, values};

/// The `service` the registry and the token server agree on.
pub const SERVICE: &str = "rbuild-test-registry";
/// The token issuer the registry trusts.
pub const ISSUER: &str = "rbuild-test-token-server";
/// Token lifetime; long enough for any test.
const LIFETIME_SECS: u64 = 600;

/// Who may do what on a token-auth registry.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// The one user that exists.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Whether requests without credentials get pull access (like public Docker Hub repos).
    pub anonymous_pull: bool,
    /// Repositories the user may pull from but not push to.
    pub read_only: Vec<String>,
}

impl TokenPolicy {
    /// `user`/`password` may pull and push everything; anonymous requests get nothing.
    pub fn new(user: &str, password: &str) -> TokenPolicy {
        TokenPolicy {
            user: user.to_string(),
            password: password.to_string(),
            anonymous_pull: false,
            read_only: Vec::new(),
        }
    }
}

/// One token request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Authenticated user (`None` for anonymous requests).
    pub user: Option<String>,
    /// Requested scopes, e.g. `repository:app:pull,push`.
    pub scopes: Vec<String>,
    /// The HTTP status the server answered.
    pub status: u16,
}

/// A running token server on `127.0.0.1`; stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    cert: PathBuf,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Generates an RSA signing key and self-signed certificate in `dir` and starts serving.
    pub fn start(dir: &Path, policy: TokenPolicy) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        super::run_ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                ])
                .args(["-subj", "/CN=rbuild test token signer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("running openssl x509");
        assert!(der.status.success(), "openssl x509 -outform DER failed");
        let signer = Signer {
            key,
            x5c: STANDARD.encode(der.stdout),
        };

        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the token server");
        let addr = listener.local_addr().expect("token server address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(stream, &policy, &signer, &requests);
                    }
                }
            })
        };
        TokenServer {
            addr,
            cert,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The realm URL registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry verifies tokens with (`rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Every token request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The refresh token issued to `user` (what docker stores as `identitytoken`).
pub fn refresh_token_for(user: &str) -> String {
    format!("rbuild-test-refresh-{user}")
}

struct Signer {
    key: PathBuf,
    x5c: String,
}

impl Signer {
    fn sign(&self, subject: &str, access: &[serde_json::Value]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + LIFETIME_SECS, "nbf": now - 60, "iat": now,
            "jti": format!("{now}-{}", std::process::id()), "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running openssl dgst");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("openssl dgst output");
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

/// Handles one request on `stream` and closes it.
fn serve(
    stream: TcpStream,
    policy: &TokenPolicy,
    signer: &Signer,
    requests: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (mut authorization, mut length) = (None, 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let query = target.split_once('?').map_or("", |(_, q)| q);
    let (status, json) = match (method, target.split('?').next()) {
        ("GET", Some("/token")) => {
            let params = form(query);
            let user = basic_user(authorization.as_deref(), policy);
            respond(
                policy,
                signer,
                requests,
                "GET",
                user,
                scopes(&params),
                &params,
            )
        }
        ("POST", Some("/token")) => {
            let params = form(&String::from_utf8_lossy(&body));
            let user = match values(&params, "grant_type").first().map(String::as_str) {
                Some("password") => {
                    let given = (values(&params, "username"), values(&params, "password"));
                    match given {
                        (u, p) if u == [policy.user.clone()] && p == [policy.password.clone()] => {
                            Ok(Some(policy.user.clone()))
                        }
                        _ => Err(()),
                    }
                }
                Some("refresh_token")
                    if values(&params, "refresh_token") == [refresh_token_for(&policy.user)] =>
                {
                    Ok(Some(policy.user.clone()))
                }
                _ => Err(()),
            };
            respond(
                policy,
                signer,
                requests,
                "POST",
                user,
                scopes(&params),
                &params,
            )
        }
        _ => (404, serde_json::json!({ "error": "not found" })),
    };
    let body = json.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Grants what the policy allows of `scopes` to `user` (Err = bad credentials).
fn respond(
    policy: &TokenPolicy,
    signer: &Signer,
    requests: &Mutex<Vec<TokenRequest>>,
    method: &str,
    user: Result<Option<String>, ()>,
    scopes: Vec<String>,
    params: &[(String, String)],
) -> (u16, serde_json::Value) {
    let record = |user: Option<String>, status| {
        requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TokenRequest {
                method: method.to_string(),
                user,
                scopes: scopes.clone(),
                status,
            });
    };
    let Ok(user) = user else {
        record(None, 401);
        return (
            401,
            serde_json::json!({ "errors": [{ "code": "UNAUTHORIZED" }] }),
        );
    };
    let mut access = Vec::new();
    for scope in &scopes {
        let mut fields = scope.splitn(3, ':');
        let (kind, name, actions) = (fields.next(), fields.next(), fields.next());
        let (Some("repository"), Some(name), Some(actions)) = (kind, name, actions) else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|action| match (&user, *action) {
                (Some(_), "pull") => true,
                (Some(_), "push") => !policy.read_only.iter().any(|r| r == name),
                (None, "pull") => policy.anonymous_pull,
                _ => false,
            })
            .collect();
        access.push(serde_json::json!({ "type": "repository", "name": name, "actions": granted }));
    }
    record(user.clone(), 200);
    let token = signer.sign(user.as_deref().unwrap_or(""), &access);
    let mut json = serde_json::json!({
        "token": token, "access_token": token, "expires_in": LIFETIME_SECS,
    });
    let offline =
        values(params, "offline_token") == ["true"] || values(params, "access_type") == ["offline"];
    if let (Some(user), true) = (&user, offline) {
        json["refresh_token"] = refresh_token_for(user).into();
    }
    (200, json)
}

/// The user of a basic `Authorization` header: `Ok(None)` without one, `Err` when wrong.
fn basic_user(header: Option<&str>, policy: &TokenPolicy) -> Result<Option<String>, ()> {
    let Some(header) = header else {
        return Ok(None);
    };
    let encoded = header.strip_prefix("Basic ").ok_or(())?;
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    match text.split_once(':') {
        Some((u, p)) if u == policy.user && p == policy.password => Ok(Some(u.to_string())),
        _ => Err(()),
    }
}

/// Every requested scope: `scope` may repeat and may hold several space-separated scopes.
fn scopes(params: &[(String, String)]) -> Vec<String> {
    values(params, "scope")
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
