//! Content descriptors and platforms, with the exact OCI JSON field names and field order
//! (Go's struct order, so our canonical bytes match what BuildKit/containerd produce).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Digest;

/// A pointer to a blob: media type, digest and size, plus optional annotations and platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// What the blob is (see [`super::mediatype`]).
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The blob's content digest.
    pub digest: Digest,
    /// The blob's length in bytes.
    pub size: u64,
    /// Alternative download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form metadata, e.g. `org.opencontainers.image.ref.name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform of the manifest this descriptor points at (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of the target, for artifact manifests.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A plain descriptor without annotations or platform.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An OS/architecture pair (with optional variant and OS details) as in OCI indexes and configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in GOARCH spelling (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system in GOOS spelling (`linux`).
    pub os: String,
    /// OS version (Windows builds).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7` for arm, `v8` is dropped for arm64 like containerd does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {value:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct PlatformError {
    value: String,
}

impl Platform {
    /// The platform rbuild itself runs on (Linux, with the Go spelling of the architecture).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses and normalises like containerd: `linux/x86_64` → `linux/amd64`,
    /// `linux/aarch64/v8` → `linux/arm64`, `linux/arm` → `linux/arm/v7`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PlatformError {
            value: s.to_string(),
        };
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split('/');
        let os = parts.next().filter(|p| !p.is_empty()).ok_or_else(err)?;
        let arch = parts.next().filter(|p| !p.is_empty()).ok_or_else(err)?;
        let variant = parts.next().filter(|p| !p.is_empty());
        if parts.next().is_some() {
            return Err(err());
        }
        let (arch, variant) = match (arch, variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.map(str::to_string)),
            ("aarch64" | "arm64", Some("8" | "v8") | None) => ("arm64", None),
            ("aarch64" | "arm64", Some(v)) => ("arm64", Some(v.to_string())),
            ("armhf" | "arm", None) => ("arm", Some("v7".to_string())),
            ("armel", None) => ("arm", Some("v6".to_string())),
            ("arm", Some(v)) => (
                "arm",
                Some(if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                }),
            ),
            ("i386" | "386", v) => ("386", v.map(str::to_string)),
            (a, v) => (a, v.map(str::to_string)),
        };
        Ok(Platform {
            architecture: arch.to_string(),
            os: os.to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing_normalises_like_containerd() {
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/arm".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
    }

    #[test]
    fn descriptor_json_uses_oci_field_names() {
        let d = Descriptor::new(super::super::mediatype::OCI_CONFIG, Digest::of(b"{}"), 2);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}}"#,
                Digest::of(b"{}")
            )
        );
    }
}
