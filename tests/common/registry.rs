//! A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) bound to
//! a free loopback port with temporary storage. Three variants: anonymous plain HTTP, htpasswd
//! basic auth over TLS from a CA generated for the test, and bearer tokens from a
//! [`TokenServer`] (plain HTTP). Killed and reaped on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry_config::{Tls, basic_tls_yaml, prepare_basic_tls, token_yaml, write_config};
use super::token::{TokenPolicy, TokenRequest, TokenServer};

/// How long a freshly started registry may take to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting on a free port: the port is picked by binding port 0 and releasing
/// it, so another process can grab it before the registry does.
const START_ATTEMPTS: usize = 5;

/// How clients authenticate.
enum Auth {
    Anonymous,
    Basic { tls: Tls },
    Token { server: TokenServer },
}

/// A running `docker-registry` on `127.0.0.1`: plain HTTP from [`Registry::start`], HTTPS with
/// basic auth from [`Registry::start_with_auth`], bearer tokens from
/// [`Registry::start_with_token`].
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    credentials: Option<(String, String)>,
    auth: Auth,
}

impl Registry {
    /// Starts an anonymous, plain-HTTP registry and waits until `GET /v2/` answers 200.
    pub fn start() -> Registry {
        Registry::start_inner(|_| (None, Auth::Anonymous))
    }

    /// Starts a registry that requires HTTP basic auth (`user`/`password`, bcrypt htpasswd)
    /// over TLS. Its certificate is issued for `127.0.0.1` and `localhost` by a CA created for
    /// this registry alone; see [`Registry::ca_cert_path`] and [`Registry::cert_dir`].
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_inner(|dir| {
            let tls = prepare_basic_tls(dir, user, password);
            let creds = (user.to_string(), password.to_string());
            (Some(creds), Auth::Basic { tls })
        })
    }

    /// Starts a plain-HTTP registry using the bearer-token flow (like Docker Hub): `/v2/`
    /// answers 401 with `WWW-Authenticate: Bearer realm=...,service=...`, and a [`TokenServer`]
    /// issues tokens according to `policy`. See [`Registry::token_requests`].
    pub fn start_with_token(policy: TokenPolicy) -> Registry {
        Registry::start_inner(|dir| {
            let creds = (policy.user.clone(), policy.password.clone());
            let server = TokenServer::start(dir, policy);
            (Some(creds), Auth::Token { server })
        })
    }

    fn start_inner(prepare: impl FnOnce(&Path) -> (Option<(String, String)>, Auth)) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-registry-")
            .tempdir()
            .expect("creating the registry's temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("creating the registry storage dir");
        let (credentials, auth) = prepare(dir.path());
        let auth_yaml = auth_config(&auth, dir.path());
        let tls = matches!(auth, Auth::Basic { .. });

        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let config = dir.path().join("config.yml");
            write_config(&config, addr, &storage, &auth_yaml);
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).expect("creating registry.log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("duplicating the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("could not start docker-registry (apt-get install docker-registry): {e}")
                });
            let expect_200 = matches!(auth, Auth::Anonymous);
            if wait_ready(&mut child, addr, tls, expect_200) {
                return Registry {
                    child,
                    addr,
                    dir,
                    credentials,
                    auth,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!(
            "docker-registry did not come up after {START_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Base URL: `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` for the auth variant.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `127.0.0.1:PORT/REPO`: convenient for building image references.
    pub fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// Whether this registry serves TLS (the basic-auth variant).
    pub fn is_tls(&self) -> bool {
        matches!(self.auth, Auth::Basic { .. })
    }

    fn tls(&self) -> Option<&Tls> {
        match &self.auth {
            Auth::Basic { tls } => Some(tls),
            _ => None,
        }
    }

    /// The token server of the token variant.
    pub fn token_server(&self) -> Option<&TokenServer> {
        match &self.auth {
            Auth::Token { server } => Some(server),
            _ => None,
        }
    }

    /// The token requests clients made so far (empty for other variants).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.token_server()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// The PEM CA certificate that signed the server certificate (auth variant only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls().map(|t| t.ca_cert.as_path())
    }

    /// A directory holding only `ca.crt`, in the layout `skopeo --cert-dir` and
    /// `/etc/docker/certs.d/HOST:PORT/` use (auth variant only).
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls().map(|t| t.cert_dir.as_path())
    }

    /// `(user, password)` of the basic-auth and token variants.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Everything the registry printed so far (its request log included), e.g. to check that
    /// a push used a cross-repository mount (`"mount="` in a request URI).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The requests the registry served so far, from its access log, oldest first; e.g.
    /// `requests().iter().filter(|r| r.method == "POST" && r.uri.contains("mount="))`.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log()
            .lines()
            .filter_map(LoggedRequest::parse)
            .collect()
    }

    /// Whether repository `repo` links blob `digest` (`sha256:...`), by looking at storage.
    pub fn has_blob(&self, repo: &str, digest: &str) -> bool {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_layers")
            .join(algorithm)
            .join(hex)
            .join("link")
            .is_file()
    }

    /// Whether repository `repo` has tag `tag`, by looking at storage.
    pub fn has_tag(&self, repo: &str, tag: &str) -> bool {
        self.storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link")
            .is_file()
    }

    /// The registry's filesystem storage root (`docker/registry/v2/...` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Writes a docker `config.json` with this registry's credentials into `dir` (created if
    /// needed) and returns its path, for tests that set `DOCKER_CONFIG=dir`.
    pub fn write_docker_config(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        let (user, password) = self
            .credentials()
            .expect("write_docker_config needs a registry with credentials");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let json = serde_json::json!({ "auths": { self.addr(): { "auth": token } } });
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json).expect("serialising config.json"),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Points an rbuild (or docker-like) command at this registry's credentials and trust:
    /// with credentials, writes `config.json` into `docker_config_dir` and sets `DOCKER_CONFIG`
    /// to it; for TLS, sets `RBUILD_REGISTRY_CA` (read by rbuild's registry client) to the test
    /// CA. An anonymous registry needs nothing: rbuild treats `127.0.0.0/8` as insecure, like
    /// docker.
    pub fn configure_client(&self, cmd: &mut Command, docker_config_dir: &Path) {
        if self.credentials.is_some() {
            self.write_docker_config(docker_config_dir);
            cmd.env("DOCKER_CONFIG", docker_config_dir);
        }
        if let Some(ca) = self.ca_cert_path() {
            cmd.env("RBUILD_REGISTRY_CA", ca);
        }
    }

    /// `skopeo` options reaching this registry, with `prefix` `"src-"`, `"dest-"` or `""`
    /// (for `inspect`): credentials, and the CA dir or `tls-verify=false`.
    pub fn skopeo_args(&self, prefix: &str) -> Vec<String> {
        let mut args = Vec::new();
        if let Some((user, password)) = self.credentials() {
            args.push(format!("--{prefix}creds={user}:{password}"));
        }
        match self.cert_dir() {
            Some(dir) => args.push(format!("--{prefix}cert-dir={}", dir.display())),
            None => args.push(format!("--{prefix}tls-verify=false")),
        }
        args
    }
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `POST`, `PATCH`, `PUT`, `DELETE`.
    pub method: String,
    /// Path and query, e.g. `/v2/app/blobs/uploads/?mount=sha256:...&from=base`.
    pub uri: String,
    /// The status the registry answered.
    pub status: u16,
}

impl LoggedRequest {
    /// Parses `IP - - [date] "METHOD URI HTTP/1.1" STATUS SIZE "referer" "agent"`.
    fn parse(line: &str) -> Option<LoggedRequest> {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut words = request.split(' ');
        let (method, uri) = (words.next()?, words.next()?);
        let status = rest.split_whitespace().next()?.parse().ok()?;
        Some(LoggedRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            status,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until the registry answers on its port (and, without TLS, until `GET /v2/` answers:
/// 200 when `expect_200`, else any status). False when the process died (e.g. the port was
/// taken) or the timeout passed.
fn wait_ready(child: &mut Child, addr: SocketAddr, tls: bool, expect_200: bool) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_status)) = child.try_wait() {
            return false;
        }
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // With TLS the certificates are loaded before the listener opens, so an accepted
            // connection means it serves; without TLS, check that the API answers too.
            if tls || v2_answers(stream, expect_200) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn v2_answers(mut stream: TcpStream, expect_200: bool) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    match response.get(..12) {
        Some(status) if expect_200 => status.ends_with(" 200"),
        Some(status) => status.starts_with("HTTP/1."),
        None => false,
    }
}

/// The `http.tls` and `auth` parts of the registry configuration.
fn auth_config(auth: &Auth, dir: &Path) -> String {
    match auth {
        Auth::Anonymous => String::new(),
        Auth::Basic { .. } => basic_tls_yaml(dir),
        Auth::Token { server } => token_yaml(server),
    }
}
