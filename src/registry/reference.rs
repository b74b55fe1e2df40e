//! Image references parsed and normalised exactly as docker's `distribution/reference` does:
//! `busybox` → `docker.io/library/busybox:latest`, `localhost:5000/x`, `name:tag@sha256:...`.
//! Error texts match docker's so scripts that grep for them keep working.

use std::fmt;
use std::str::FromStr;

use crate::image::Digest;

/// The registry name docker uses for Docker Hub in normalised references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag docker assumes when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A reference that docker would refuse, with docker's own wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text does not match the reference grammar at all.
    #[error("invalid reference format")]
    InvalidFormat,
    /// Upper-case letters in the repository path.
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    /// An empty string.
    #[error("repository name must have at least one component")]
    Empty,
    /// Registry plus repository longer than docker allows.
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// A bare 64-hex string, which docker reserves for image IDs.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    /// A digest docker would accept but rbuild cannot verify.
    #[error("unsupported digest algorithm in reference: {0}")]
    UnsupportedDigest(String),
    /// A digest that is not `algorithm:hex`.
    #[error("invalid checksum digest format")]
    InvalidDigest,
}

/// A normalised image reference: registry, repository, optional tag and optional digest.
///
/// A reference with neither tag nor digest gets the tag `latest`, as `docker pull` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `s` the way `docker pull` does (docker's `ParseNormalizedNamed` + `TagNameOnly`).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(ReferenceError::HexName(s.to_string()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d)?)),
            None => (s, None),
        };
        // The tag separator is the last ':' that comes after the last '/', so that a port in
        // the registry part (`localhost:5000/x`) is not mistaken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidFormat);
        }
        if name.is_empty() {
            return Err(ReferenceError::InvalidFormat);
        }
        let (registry, remainder) = split_domain(name);
        if let Some(registry) = registry
            && !valid_domain(registry)
        {
            return Err(ReferenceError::InvalidFormat);
        }
        if !valid_path(remainder) {
            return Err(if valid_path(&remainder.to_ascii_lowercase()) {
                ReferenceError::Uppercase
            } else {
                ReferenceError::InvalidFormat
            });
        }
        if name.len() > NAME_TOTAL_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let mut registry = registry.unwrap_or(DOCKER_HUB).to_string();
        if registry == "index.docker.io" {
            registry = DOCKER_HUB.to_string();
        }
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Builds a reference from parts that are already normalised (e.g. read from the store).
    pub fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Reference, ReferenceError> {
        let mut text = format!("{registry}/{repository}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(d) = &digest {
            text.push('@');
            text.push_str(&d.to_string());
        }
        Reference::parse(&text)
    }

    /// The registry as written (`host[:port]`), `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) that serves the registry API: `registry-1.docker.io` for Docker Hub.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when the text had neither tag nor digest, `None` for a digest-only ref.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether this reference points at Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::InvalidFormat);
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The name as it goes in a manifest URL: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// Docker's short form: `busybox:latest`, `owner/app:1`, `ghcr.io/o/n@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        self.push_suffix(&mut out);
        out
    }

    /// Docker's short form of the name alone: `busybox`, `owner/app`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry only if it looks like a
/// host (has `.` or `:`, or is `localhost`) or contains upper-case letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_digest(s: &str) -> Result<Digest, ReferenceError> {
    let (alg, hex) = s.split_once(':').ok_or(ReferenceError::InvalidDigest)?;
    let alg_ok = !alg.is_empty()
        && alg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReferenceError::InvalidFormat);
    }
    if alg != "sha256" {
        return Err(ReferenceError::UnsupportedDigest(s.to_string()));
    }
    s.parse().map_err(|_| ReferenceError::InvalidDigest)
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// `host[:port]` where host is a dotted name of alphanumeric/hyphen labels, or `[ipv6]`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if domain.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// Path components of lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("owner/app"), "docker.io/owner/app:latest");
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(
            Reference::parse("owner/app:v1").unwrap().familiar(),
            "owner/app:v1"
        );
    }

    #[test]
    fn other_registries_keep_host_and_port() {
        let r = Reference::parse("ghcr.io/owner/name:1.0").unwrap();
        assert_eq!((r.registry(), r.api_host()), ("ghcr.io", "ghcr.io"));
        assert_eq!(r.repository(), "owner/name");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.familiar(), "ghcr.io/owner/name:1.0");
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.to_string(), "localhost:5000/x:latest");
        let r = Reference::parse("127.0.0.1:41234/a/b:t").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:41234");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        // Upper case in the first component makes it a registry name, as in docker.
        assert_eq!(Reference::parse("Foo/bar").unwrap().registry(), "Foo");
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse(&format!("localhost:5000/x:v2@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.to_string(), format!("localhost:5000/x:v2@{D}"));
        assert_eq!(r.manifest_ref(), D);
    }

    #[test]
    fn bad_references_use_docker_error_texts() {
        let err = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("Busybox"),
            "invalid reference format: repository name must be lowercase"
        );
        assert_eq!(
            err("docker.io/Library/busybox"),
            "invalid reference format: repository name must be lowercase"
        );
        for bad in [
            "foo bar",
            "busybox:",
            "busybox:-x",
            ":tag",
            "a//b",
            "a/",
            "-a",
            "a--",
            "busybox@sha256:xyz",
            "localhost:port/x",
            "host-.com/x",
        ] {
            assert_eq!(err(bad), "invalid reference format", "{bad}");
        }
        assert_eq!(err(""), "repository name must have at least one component");
        let long = format!("a/{}", "b".repeat(300));
        assert_eq!(
            err(&long),
            "repository name must not be more than 255 characters"
        );
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(err(hex).contains("cannot specify 64-byte hexadecimal strings"));
        assert!(err(&format!("x@sha512:{}", "a".repeat(128))).contains("unsupported digest"));
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in ["a_b", "a__b", "a.b", "a---b", "a-b/c.d_e", "x:Tag_1.0-rc"] {
            Reference::parse(ok).unwrap();
        }
        for bad in ["a___b", "a..b", "a._b", "_a"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn with_tag_and_digest_rebuild_the_reference() {
        let r = Reference::parse("localhost:5000/x:a").unwrap();
        assert_eq!(r.with_tag("b").unwrap().to_string(), "localhost:5000/x:b");
        let d: Digest = D.parse().unwrap();
        assert_eq!(
            r.with_digest(d).to_string(),
            format!("localhost:5000/x@{D}")
        );
        let back = Reference::from_parts("docker.io", "library/busybox", Some("1"), None).unwrap();
        assert_eq!(back.familiar(), "busybox:1");
    }
}
