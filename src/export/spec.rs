//! `--output` specs in docker buildx syntax: `type=oci,dest=out.tar,name=app:1`, plus the
//! shorthands `-o DIR` (type=local) and `-o -` (type=tar to stdout). Parsed into a typed
//! [`OutputSpec`]; unknown keys and types are errors that name the key.

use std::fmt;
use std::path::PathBuf;

use super::Error;
use crate::layer::Compression;

/// Which exporter an output spec selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `type=image` (store locally, optionally push); `type=registry` is this with `push=true`.
    Image,
    /// `type=oci`: OCI image layout, as a tar (default) or directory (`tar=false`).
    Oci,
    /// `type=docker`: docker-archive (`docker load`/`podman load`), tar or directory.
    Docker,
    /// `type=local`: the final filesystem as a directory.
    Local,
    /// `type=tar`: the final filesystem as a tar stream.
    Tar,
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputKind::Image => "image",
            OutputKind::Oci => "oci",
            OutputKind::Docker => "docker",
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
        })
    }
}

/// Where an exporter writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file or directory path.
    Path(PathBuf),
    /// `dest=-`: standard output.
    Stdout,
}

/// A parsed `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The exporter.
    pub kind: OutputKind,
    /// `dest=`; required for oci/docker/local/tar.
    pub dest: Option<Destination>,
    /// `tar=`: archive (true, the default) or directory, for oci/docker.
    pub tar: bool,
    /// `name=`: image names as written (the caller normalises them); comma-separated in
    /// the spec, so quote the field: `"name=a:1,b:2"`.
    pub names: Vec<String>,
    /// `push=` (and `type=registry`).
    pub push: bool,
    /// `registry.insecure=`: allow plain HTTP for the push.
    pub insecure_registry: bool,
    /// `oci-mediatypes=`: defaults to false only for `docker` (a `docker load` archive);
    /// every other exporter, the local store and registry pushes included, uses OCI media
    /// types as current BuildKit does when it pushes.
    pub oci_mediatypes: bool,
    /// `compression=` + `compression-level=`: for new layers; existing layers only change with
    /// `force-compression=true`.
    pub compression: Compression,
    /// `force-compression=`: recompress every layer that is not already `compression`.
    pub force_compression: bool,
}

/// Keys BuildKit accepts that rbuild refuses with a "not supported yet" error.
const NOT_YET: &[&str] = &[
    "push-by-digest",
    "dangling-name-prefix",
    "name-canonical",
    "rewrite-timestamp",
    "store",
    "unpack",
    "oci-artifact",
    "platform-split",
    "buildinfo",
    "buildinfo-attrs",
];

impl OutputSpec {
    /// Parses one `--output` value.
    pub fn parse(spec: &str) -> Result<OutputSpec, Error> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Spec {
                spec: spec.to_string(),
                reason: "empty output spec".to_string(),
            });
        }
        if spec == "-" {
            return Ok(OutputSpec::new(OutputKind::Tar, Some(Destination::Stdout)));
        }
        if !spec.contains('=') {
            return Ok(OutputSpec::new(
                OutputKind::Local,
                Some(Destination::Path(PathBuf::from(spec))),
            ));
        }
        let bad = |reason: String| Error::Spec {
            spec: spec.to_string(),
            reason,
        };
        let fields = split_csv(spec).map_err(|r| bad(r.to_string()))?;
        let mut pairs = Vec::new();
        for field in fields {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not KEY=VALUE")))?;
            pairs.push((k.trim().to_ascii_lowercase(), v.to_string()));
        }
        let ty = pairs
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.clone())
            .ok_or_else(
                || bad("missing type= (image, registry, oci, docker, local, tar)".into()),
            )?;
        let (kind, push) = match ty.as_str() {
            "image" => (OutputKind::Image, false),
            "registry" => (OutputKind::Image, true),
            "oci" => (OutputKind::Oci, false),
            "docker" => (OutputKind::Docker, false),
            "local" => (OutputKind::Local, false),
            "tar" => (OutputKind::Tar, false),
            other => {
                return Err(bad(format!(
                    "unknown output type {other:?} (expected image, registry, oci, docker, local or tar)"
                )));
            }
        };
        let mut out = OutputSpec::new(kind, None);
        out.push = push;
        let mut level = None;
        let mut compression_name = None;
        for (key, value) in pairs {
            let image_like = matches!(
                kind,
                OutputKind::Image | OutputKind::Oci | OutputKind::Docker
            );
            match key.as_str() {
                "type" => {}
                "dest" if kind != OutputKind::Image => {
                    out.dest = Some(match value.as_str() {
                        "" => return Err(bad("dest= is empty".into())),
                        "-" => Destination::Stdout,
                        path => Destination::Path(PathBuf::from(path)),
                    })
                }
                "tar" if matches!(kind, OutputKind::Oci | OutputKind::Docker) => {
                    out.tar = parse_bool(&key, &value).map_err(bad)?
                }
                "name" if image_like => out.names.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                ),
                "push" if kind == OutputKind::Image => {
                    out.push = parse_bool(&key, &value).map_err(bad)?
                }
                "registry.insecure" if kind == OutputKind::Image => {
                    out.insecure_registry = parse_bool(&key, &value).map_err(bad)?
                }
                "oci-mediatypes" if image_like => {
                    out.oci_mediatypes = parse_bool(&key, &value).map_err(bad)?
                }
                "compression" if image_like => compression_name = Some(value),
                "compression-level" if image_like => {
                    let n: i32 = value.parse().map_err(|_| {
                        bad(format!(
                            "compression-level={value:?} is not a number (0..22)"
                        ))
                    })?;
                    if !(0..=22).contains(&n) {
                        return Err(bad(format!("compression-level={n} is out of range 0..22")));
                    }
                    level = Some(n);
                }
                "force-compression" if image_like => {
                    out.force_compression = parse_bool(&key, &value).map_err(bad)?
                }
                k if NOT_YET.contains(&k) || k.starts_with("annotation") => {
                    return Err(Error::Unsupported(format!("output option {k}")));
                }
                k => {
                    return Err(bad(format!("unknown option {k:?} for type={ty}")));
                }
            }
        }
        if let Some(name) = compression_name.as_deref() {
            out.compression = match name {
                "estargz" => return Err(Error::Unsupported("compression=estargz".into())),
                n => Compression::from_name(n, level).ok_or_else(|| {
                    bad(format!(
                        "unknown compression {n:?} (expected gzip, zstd or uncompressed)"
                    ))
                })?,
            };
        } else if let Some(l) = level {
            out.compression = Compression::from_name(out.compression.name(), Some(l))
                .expect("default compression name is known");
        }
        match (kind, &out.dest) {
            (OutputKind::Oci | OutputKind::Docker | OutputKind::Local | OutputKind::Tar, None) => {
                return Err(bad(format!(
                    "type={ty} needs dest=PATH (or dest=- for stdout)"
                )));
            }
            (OutputKind::Local, Some(Destination::Stdout)) => {
                return Err(bad(
                    "type=local writes a directory; use type=tar for stdout".into(),
                ));
            }
            (OutputKind::Oci | OutputKind::Docker, Some(Destination::Stdout)) if !out.tar => {
                return Err(bad(
                    "tar=false writes a directory; it cannot go to stdout".into()
                ));
            }
            _ => {}
        }
        // Docker schema 2 has no zstd layer type; BuildKit switches to OCI media types too.
        if matches!(out.compression, Compression::Zstd { .. }) && !out.oci_mediatypes {
            tracing::warn!("compression=zstd needs OCI media types: using oci-mediatypes=true");
            out.oci_mediatypes = true;
        }
        Ok(out)
    }

    fn new(kind: OutputKind, dest: Option<Destination>) -> OutputSpec {
        OutputSpec {
            kind,
            dest,
            tar: true,
            names: Vec::new(),
            push: false,
            insecure_registry: false,
            oci_mediatypes: kind != OutputKind::Docker,
            compression: Compression::default(),
            force_compression: false,
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(format!("{key}={value:?} is not true or false")),
    }
}

/// Splits on commas outside double quotes (Go `encoding/csv`, leniently: quotes may also
/// appear mid-field as in `name="a,b"`; `""` inside quotes is a literal quote).
fn split_csv(s: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote");
    }
    fields.push(cur);
    Ok(fields
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_specs() {
        let s = OutputSpec::parse("type=oci,dest=out.tar,\"name=a:1,b:2\"").unwrap();
        assert_eq!(s.kind, OutputKind::Oci);
        assert_eq!(s.dest, Some(Destination::Path("out.tar".into())));
        assert_eq!(s.names, vec!["a:1", "b:2"]);
        assert!(s.oci_mediatypes && s.tar);

        let s =
            OutputSpec::parse("type=docker,dest=-,compression=zstd,compression-level=9").unwrap();
        assert_eq!(s.dest, Some(Destination::Stdout));
        assert!(s.oci_mediatypes, "zstd forces OCI media types");
        assert_eq!(s.compression, Compression::Zstd { level: 9 });
        assert!(
            !OutputSpec::parse("type=docker,dest=-")
                .unwrap()
                .oci_mediatypes
        );
        assert!(OutputSpec::parse("type=image").unwrap().oci_mediatypes);
        assert!(OutputSpec::parse("type=registry").unwrap().oci_mediatypes);

        let s = OutputSpec::parse("type=registry,name=localhost:5000/x").unwrap();
        assert!(s.push && s.kind == OutputKind::Image);
        let s = OutputSpec::parse("type=oci,dest=d,tar=false,oci-mediatypes=false").unwrap();
        assert!(!s.tar && !s.oci_mediatypes);

        assert_eq!(OutputSpec::parse("out").unwrap().kind, OutputKind::Local);
        let s = OutputSpec::parse("-").unwrap();
        assert_eq!(
            (s.kind, s.dest),
            (OutputKind::Tar, Some(Destination::Stdout))
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_problem() {
        let err = OutputSpec::parse("type=oci,dest=x,colour=red").unwrap_err();
        assert!(err.to_string().contains("\"colour\""), "{err}");
        let err = OutputSpec::parse("type=ftp,dest=x").unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        assert!(
            OutputSpec::parse("type=oci")
                .unwrap_err()
                .to_string()
                .contains("dest=")
        );
        assert!(OutputSpec::parse("dest=x").is_err());
        assert!(OutputSpec::parse("type=oci,dest=x,tar=maybe").is_err());
        assert!(OutputSpec::parse("type=oci,dest=x,compression=lz4").is_err());
        assert!(matches!(
            OutputSpec::parse("type=image,push-by-digest=true"),
            Err(Error::Unsupported(_))
        ));
        assert!(OutputSpec::parse("type=local,dest=x,push=true").is_err());
        assert!(OutputSpec::parse("type=image,dest=x").is_err());
        assert!(OutputSpec::parse("type=tar,dest=").is_err());
        assert!(OutputSpec::parse("type=oci,dest=\"x").is_err());
    }
}
