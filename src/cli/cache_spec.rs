//! `--cache-to` / `--cache-from` values in buildx's syntax: `type=registry,ref=R,mode=max`,
//! `type=local,dest=DIR`, `type=local,src=DIR`, or a bare reference (a registry cache).
//! Malformed values are usage errors; BuildKit cache backends rbuild does not have (gha, s3,
//! azblob, inline) are refused as not supported yet.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::CliError;
use crate::layer::Compression;
use crate::registry::Reference;
use crate::solver::{CacheExport, CacheImport, CacheLocation, CacheMode};

/// Cache backends BuildKit has and rbuild does not.
const OTHER_BACKENDS: &[&str] = &["gha", "s3", "azblob", "inline"];

fn usage(flag: &str, spec: &str, msg: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{flag} {spec:?}: {msg}"))
}

/// `key=value` fields; a value without `=` is `ref=` (buildx's shorthand).
fn fields(flag: &str, spec: &str) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    if !spec.contains('=') {
        out.insert("type".into(), "registry".into());
        out.insert("ref".into(), spec.to_string());
        return Ok(out);
    }
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| usage(flag, spec, format!("{field:?} is not KEY=VALUE")))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(usage(flag, spec, format!("{k} is given twice")));
        }
    }
    Ok(out)
}

fn boolean(flag: &str, spec: &str, key: &str, v: &str) -> Result<bool, CliError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(usage(flag, spec, format!("{key} must be true or false"))),
    }
}

/// The location and the keys left for the caller.
fn location(
    flag: &str,
    spec: &str,
    f: &mut BTreeMap<String, String>,
    dir_key: &str,
) -> Result<CacheLocation, CliError> {
    let kind = f.remove("type").unwrap_or_else(|| "registry".into());
    match kind.as_str() {
        "registry" => {
            let r = f
                .remove("ref")
                .ok_or_else(|| usage(flag, spec, "type=registry needs ref="))?;
            let reference = Reference::parse(&r).map_err(|e| usage(flag, spec, e))?;
            Ok(CacheLocation::Registry(reference))
        }
        "local" => {
            let dir = f
                .remove(dir_key)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| usage(flag, spec, format!("type=local needs {dir_key}=")))?;
            // BuildKit names a local cache `latest` unless told otherwise.
            let tag = f.remove("tag").unwrap_or_else(|| "latest".into());
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag,
            })
        }
        other if OTHER_BACKENDS.contains(&other) => {
            Err(CliError::Unsupported(format!("{flag} type={other}")))
        }
        other => Err(usage(
            flag,
            spec,
            format!("unknown cache type {other:?} (expected registry or local)"),
        )),
    }
}

/// Fails on keys nobody consumed.
fn leftovers(flag: &str, spec: &str, f: &BTreeMap<String, String>) -> Result<(), CliError> {
    match f.keys().next() {
        Some(k) => Err(usage(flag, spec, format!("unknown key {k:?}"))),
        None => Ok(()),
    }
}

/// Parses one `--cache-to`.
pub(crate) fn parse_cache_to(spec: &str) -> Result<CacheExport, CliError> {
    const FLAG: &str = "--cache-to";
    let mut f = fields(FLAG, spec)?;
    let location = location(FLAG, spec, &mut f, "dest")?;
    let mode = match f.remove("mode").as_deref() {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => {
            return Err(usage(
                FLAG,
                spec,
                format!("mode={other}: expected min or max"),
            ));
        }
    };
    let level = match f.remove("compression-level") {
        Some(l) => Some(
            l.parse::<i32>()
                .map_err(|_| usage(FLAG, spec, "compression-level must be a number"))?,
        ),
        None => None,
    };
    let compression = match f.remove("compression") {
        Some(c) => Some(Compression::from_name(&c, level).ok_or_else(|| {
            usage(
                FLAG,
                spec,
                format!("compression={c}: expected gzip, zstd or uncompressed"),
            )
        })?),
        None => None,
    };
    // BuildKit only recompresses with force-compression=true; rbuild always stores the
    // asked-for compression, so the key is accepted either way.
    if let Some(v) = f.remove("force-compression") {
        boolean(FLAG, spec, "force-compression", &v)?;
    }
    let cache_mounts = match f.remove("cache-mounts") {
        Some(v) => boolean(FLAG, spec, "cache-mounts", &v)?,
        None => false,
    };
    let ignore_error = match f.remove("ignore-error") {
        Some(v) => boolean(FLAG, spec, "ignore-error", &v)?,
        None => false,
    };
    // The cache is always an OCI image manifest with OCI media types, which is what these
    // BuildKit keys ask for when true; false would ask for an index or Docker types.
    for key in ["oci-mediatypes", "image-manifest"] {
        if let Some(v) = f.remove(key)
            && !boolean(FLAG, spec, key, &v)?
        {
            return Err(CliError::Unsupported(format!("{FLAG} {key}=false")));
        }
    }
    leftovers(FLAG, spec, &f)?;
    Ok(CacheExport {
        location,
        mode,
        compression,
        cache_mounts,
        ignore_error,
    })
}

/// Parses one `--cache-from`.
pub(crate) fn parse_cache_from(spec: &str) -> Result<CacheImport, CliError> {
    const FLAG: &str = "--cache-from";
    let mut f = fields(FLAG, spec)?;
    let location = location(FLAG, spec, &mut f, "src")?;
    leftovers(FLAG, spec, &f)?;
    Ok(CacheImport { location })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_usage(r: Result<impl std::fmt::Debug, CliError>) -> bool {
        matches!(r, Err(CliError::Usage(_)))
    }

    #[test]
    fn registry_and_local_specs() {
        let to = parse_cache_to(
            "type=registry,ref=127.0.0.1:5000/app:cache,mode=max,compression=zstd,cache-mounts=true",
        )
        .unwrap();
        assert_eq!(to.mode, CacheMode::Max);
        assert!(to.cache_mounts);
        assert_eq!(to.compression.map(|c| c.name()), Some("zstd"));
        match &to.location {
            CacheLocation::Registry(r) => assert_eq!(r.to_string(), "127.0.0.1:5000/app:cache"),
            other => panic!("{other:?}"),
        }
        let from = parse_cache_from("type=local,src=/tmp/c").unwrap();
        assert_eq!(
            from.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        let bare = parse_cache_from("example.com/app:cache").unwrap();
        assert!(matches!(bare.location, CacheLocation::Registry(_)));
        assert_eq!(
            parse_cache_to("type=local,dest=d").unwrap().mode,
            CacheMode::Min
        );
    }

    #[test]
    fn bad_specs_are_usage_errors_and_other_backends_unsupported() {
        assert!(is_usage(parse_cache_to("type=registry")));
        assert!(is_usage(parse_cache_to("type=registry,ref=a,mode=all")));
        assert!(is_usage(parse_cache_to("type=registry,ref=a,colour=red")));
        assert!(is_usage(parse_cache_from("type=local,dest=d")));
        assert!(is_usage(parse_cache_from("type=ftp,ref=a")));
        assert!(is_usage(parse_cache_to(
            "type=registry,ref=a,cache-mounts=yes"
        )));
        assert!(matches!(
            parse_cache_to("type=gha"),
            Err(CliError::Unsupported(m)) if m == "--cache-to type=gha"
        ));
        assert!(matches!(
            parse_cache_from("type=s3,bucket=b"),
            Err(CliError::Unsupported(_))
        ));
    }
}
