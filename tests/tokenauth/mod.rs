//! A `docker-registry` in distribution's `auth: token` mode, with `issuer.py` (next to this
//! file) as its token service. Keys and certificate are made with `openssl` per test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The issuer name and service both sides agree on.
const ISSUER: &str = "rbuild-test-issuer";
const SERVICE: &str = "rbuild-test-registry";

/// A token-auth registry and its token issuer; both are killed on drop.
pub struct TokenRegistry {
    registry: Child,
    issuer: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl TokenRegistry {
    /// Starts the issuer (accepting `user`/`password`) and a registry that trusts it.
    pub fn start(user: &str, password: &str) -> TokenRegistry {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-token-registry-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=rbuild-token-issuer", "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("running openssl");
        assert!(status.success(), "openssl req failed");
        let port_file = d.join("issuer.port");
        let issuer = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenauth/issuer.py"))
            .arg(d.join("key.pem"))
            .arg(d.join("cert.pem"))
            .args([ISSUER, SERVICE, &format!("{user}:{password}")])
            .arg(d.join("issuer.log"))
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("issuer.stderr")).unwrap())
            .spawn()
            .expect("starting issuer.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        let issuer_port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse::<u16>().unwrap();
            }
            assert!(Instant::now() < deadline, "token issuer did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  token:\n    realm: http://127.0.0.1:{issuer_port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            d.join("storage").display(),
            d.join("cert.pem").display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = TokenRegistry {
            registry,
            issuer,
            addr,
            dir,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 401") || buf.starts_with("HTTP/1.1 401") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("token registry did not come up:\n{}", self.registry_log());
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's output, access log included.
    pub fn registry_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// One JSON object per token request: `{"method","user","scopes"}`.
    pub fn issuer_requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("issuer.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The refresh token the issuer accepts in the OAuth2 `refresh_token` grant.
    pub fn refresh_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("refresh_token")).unwrap()
    }

    /// From now on, tokens grant nothing on `repositories`.
    pub fn deny(&self, repositories: &[&str]) {
        std::fs::write(self.dir.path().join("deny"), repositories.join("\n")).unwrap();
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        for child in [&mut self.registry, &mut self.issuer] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
