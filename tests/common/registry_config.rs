//! What a test registry starts with: its `config.yml`, and for the basic-auth variant an
//! htpasswd file plus a CA and server certificate made with the openssl CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::token::{ISSUER, SERVICE, TokenServer};

/// TLS material of the basic-auth variant.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) ca_cert: PathBuf,
    pub(crate) cert_dir: PathBuf,
}

/// The `http.tls` and `auth.htpasswd` configuration of the basic-auth variant.
pub(crate) fn basic_tls_yaml(dir: &Path) -> String {
    format!(
        "  tls:\n    certificate: {crt}\n    key: {key}\n\
         auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {htpasswd}\n",
        crt = dir.join("tls/server.crt").display(),
        key = dir.join("tls/server.key").display(),
        htpasswd = dir.join("htpasswd").display(),
    )
}

/// The `auth.token` configuration pointing at `server`.
pub(crate) fn token_yaml(server: &TokenServer) -> String {
    format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    \
         issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
        realm = server.realm(),
        bundle = server.cert_path().display(),
    )
}

/// Writes `config.yml`: loopback address, filesystem storage, access log, `auth_yaml`.
pub(crate) fn write_config(config: &Path, addr: SocketAddr, storage: &Path, auth_yaml: &str) {
    let yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: rbuild-test-secret\n{auth_yaml}",
        storage = storage.display(),
    );
    std::fs::write(config, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
}

/// Creates the htpasswd file, a CA and a server certificate under `dir`.
pub(crate) fn prepare_basic_tls(dir: &Path, user: &str, password: &str) -> Tls {
    let htpasswd = super::run_ok(
        Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .stdin(Stdio::null()),
    );
    std::fs::write(dir.join("htpasswd"), htpasswd).expect("writing htpasswd");

    let tls = dir.join("tls");
    let cert_dir = dir.join("certs");
    std::fs::create_dir(&tls).expect("creating tls dir");
    std::fs::create_dir(&cert_dir).expect("creating certs dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    super::run_ok(
        Command::new("openssl")
            .current_dir(&tls)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "7"])
            .args(["-subj", "/CN=rbuild test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    super::run_ok(
        Command::new("openssl")
            .current_dir(&tls)
            .arg("req")
            .args(ec)
            .args(["-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", "/CN=127.0.0.1"]),
    );
    std::fs::write(
        tls.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("writing server.ext");
    super::run_ok(
        Command::new("openssl")
            .current_dir(&tls)
            .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt"])
            .args(["-days", "7", "-extfile", "server.ext"]),
    );
    let ca_cert = cert_dir.join("ca.crt");
    std::fs::copy(tls.join("ca.crt"), &ca_cert).expect("copying ca.crt");
    Tls { ca_cert, cert_dir }
}
