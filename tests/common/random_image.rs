//! Images of incompressible data, built by rbuild itself (`FROM scratch` + `COPY`) and pushed
//! to a test registry: big enough for byte progress to be seen while a pull or push runs.

use super::{Context, Registry, run_ok};

/// `len` bytes that gzip cannot shrink (xorshift64*, seeded), so a layer is as big as its file.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builds an image with one layer holding `/random.bin` of `megabytes` MB of random data and
/// pushes it to `registry` (anonymous: this logs in nowhere) as `repo_tag` (e.g.
/// `randbase:1`); returns the full reference.
pub fn push_random_image(registry: &Registry, repo_tag: &str, megabytes: usize) -> String {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY random.bin /random.bin\n")
        .file(
            "random.bin",
            random_bytes(megabytes as u64, megabytes * 1_000_000),
        );
    let reference = registry.repo(repo_tag);
    let root = tempfile::tempdir().expect("a temp root for the random image");
    let mut cmd = super::rbuild_with_root(root.path());
    cmd.args(["build", "--progress=plain", "--push", "-t", &reference])
        .arg(ctx.path());
    if let Some(ca) = registry.ca_cert_path() {
        cmd.env("RBUILD_REGISTRY_CA", ca);
    }
    run_ok(&mut cmd);
    reference
}
