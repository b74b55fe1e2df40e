//! Image manifests and indexes (OCI and Docker schema 2 share one shape), plus the canonical
//! serializer whose bytes are what gets hashed, stored and pushed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::descriptor::Descriptor;
use super::{Digest, mediatype};

/// A single-platform image manifest: one config and an ordered list of layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`mediatype::OCI_MANIFEST`] or [`mediatype::DOCKER_MANIFEST`].
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type, for non-image artifacts.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (attestations, signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// An OCI manifest for `config` and `layers`.
    pub fn new_oci(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(mediatype::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The media type to use for this manifest's descriptor (OCI when the field is absent).
    pub fn effective_media_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(mediatype::OCI_MANIFEST)
    }
}

/// A multi-platform index (OCI image index or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`mediatype::OCI_INDEX`] or [`mediatype::DOCKER_MANIFEST_LIST`].
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type, for non-image artifacts.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The manifests, each usually with a platform.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// The entry for `want`, as containerd picks it: same OS and architecture, the same
    /// variant when `want` has one (arm64's `v8` equals no variant), else, when `want` has no
    /// variant, the first entry of that OS/architecture. Attestation entries
    /// (`unknown/unknown`) never match. Entries that are indexes themselves count only when
    /// `nested` is set (the caller then follows them).
    pub fn select_platform(&self, want: &super::Platform, nested: bool) -> Option<&Descriptor> {
        let norm = |p: &super::Platform| -> (String, String, Option<String>) {
            let variant = match (p.architecture.as_str(), p.variant.as_deref()) {
                ("arm64", Some("v8")) => None,
                (_, v) => v.map(str::to_string),
            };
            (p.os.clone(), p.architecture.clone(), variant)
        };
        let (os, arch, variant) = norm(want);
        let candidates = self.manifests.iter().filter(|d| {
            (mediatype::is_manifest(&d.media_type) || nested && mediatype::is_index(&d.media_type))
                && d.platform.as_ref().is_some_and(|p| {
                    let (pos, parch, _) = norm(p);
                    pos == os && parch == arch
                })
        });
        let mut fallback = None;
        for d in candidates {
            let (_, _, pvar) = norm(d.platform.as_ref().expect("filtered on platform"));
            if pvar == variant {
                return Some(d);
            }
            if variant.is_none() && fallback.is_none() {
                fallback = Some(d);
            }
        }
        fallback
    }

    /// An OCI index over `manifests`.
    pub fn new_oci(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(mediatype::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The media type to use for this index's descriptor (OCI when the field is absent).
    pub fn effective_media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(mediatype::OCI_INDEX)
    }
}

/// Either kind of manifest, as found behind a tag.
// Unboxed so callers can match and move out directly; manifests are few and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyManifest {
    /// A single-platform image.
    Image(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

/// Manifest bytes that are neither an image manifest nor an index.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The JSON did not parse as the type its media type claims.
    #[error("malformed {kind} JSON: {source}")]
    Json {
        /// "manifest", "index" or "config".
        kind: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A media type rbuild does not treat as a manifest.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

impl AnyManifest {
    /// Parses manifest bytes, using the `mediaType` field when present and the shape otherwise
    /// (OCI allows omitting it; an index has `manifests`).
    pub fn parse(bytes: &[u8]) -> Result<AnyManifest, ManifestError> {
        let probe: Probe = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            kind: "manifest",
            source,
        })?;
        let is_index = match probe.media_type.as_deref() {
            Some(mt) if mediatype::is_index(mt) => true,
            Some(mt) if mediatype::is_manifest(mt) => false,
            Some(mt) => return Err(ManifestError::UnsupportedMediaType(mt.to_string())),
            None => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Index)
                .map_err(|source| ManifestError::Json {
                    kind: "index",
                    source,
                })
        } else {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Image)
                .map_err(|source| ManifestError::Json {
                    kind: "manifest",
                    source,
                })
        }
    }

    /// The media type for a descriptor of this manifest.
    pub fn media_type(&self) -> &str {
        match self {
            AnyManifest::Image(m) => m.effective_media_type(),
            AnyManifest::Index(i) => i.effective_media_type(),
        }
    }

    /// Every blob this manifest points at directly (config + layers, or child manifests).
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            AnyManifest::Image(m) => std::iter::once(&m.config)
                .chain(m.layers.iter())
                .chain(m.subject.iter())
                .collect(),
            AnyManifest::Index(i) => i.manifests.iter().chain(i.subject.iter()).collect(),
        }
    }
}

/// Serialises `value` the way Go's `encoding/json` does (struct field order, sorted map keys,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped) and returns the bytes with their digest. These bytes
/// are what must be stored and pushed: re-serialising later may not reproduce the digest.
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<(Vec<u8>, Digest), serde_json::Error> {
    let raw = serde_json::to_vec(value)?;
    let bytes = go_escape(raw);
    let digest = Digest::of(&bytes);
    Ok((bytes, digest))
}

/// Go escapes HTML-significant characters inside strings. In serde_json output these bytes can
/// only occur inside string literals, so a byte-level rewrite is exact.
fn go_escape(raw: Vec<u8>) -> Vec<u8> {
    let needs = raw
        .windows(3)
        .any(|w| w == "\u{2028}".as_bytes() || w == "\u{2029}".as_bytes())
        || raw.iter().any(|b| matches!(b, b'<' | b'>' | b'&'));
    if !needs {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut i = 0;
    while i < raw.len() {
        let rest = &raw[i..];
        match raw[i] {
            b'<' => out.extend_from_slice(br"\u003c"),
            b'>' => out.extend_from_slice(br"\u003e"),
            b'&' => out.extend_from_slice(br"\u0026"),
            _ if rest.starts_with("\u{2028}".as_bytes()) => {
                out.extend_from_slice(br"\u2028");
                i += 3;
                continue;
            }
            _ if rest.starts_with("\u{2029}".as_bytes()) => {
                out.extend_from_slice(br"\u2029");
                i += 3;
                continue;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_escapes_like_go() {
        let v = serde_json::json!({"b": "a<b>&c\u{2028}", "a": 1});
        let (bytes, digest) = to_canonical_json(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"a":1,"b":"a\u003cb\u003e\u0026c\u2028"}"#
        );
        assert_eq!(digest, Digest::of(&bytes));
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn manifest_round_trips_and_parses_by_shape() {
        let cfg = Descriptor::new(mediatype::OCI_CONFIG, Digest::of(b"c"), 1);
        let layer = Descriptor::new(mediatype::OCI_LAYER_GZIP, Digest::of(b"l"), 1);
        let m = ImageManifest::new_oci(cfg, vec![layer]);
        let (bytes, _) = to_canonical_json(&m).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":"#));
        assert_eq!(AnyManifest::parse(&bytes).unwrap(), AnyManifest::Image(m));

        let idx = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let parsed = AnyManifest::parse(idx.to_string().as_bytes()).unwrap();
        assert!(matches!(parsed, AnyManifest::Index(_)));
        assert!(AnyManifest::parse(br#"{"mediaType":"text/plain"}"#).is_err());
    }
}
