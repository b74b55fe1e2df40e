//! `RUN --mount` values (bind, cache, tmpfs, secret, ssh) parsed and validated as BuildKit's
//! `commands_runmount.go` does: CSV fields, key aliases, per-type rules and defaults.

use std::borrow::Cow;

use serde::Serialize;

use super::suggest;

/// Go's `strings.ToLower`, borrowing when there is nothing to change (the common case: this
/// runs for every key of every mount).
fn lower(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// What kind of filesystem a `RUN --mount` provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A read-only (by default) view of the context, a stage or an image.
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A secret file from `--secret`.
    Secret,
    /// The SSH agent socket from `--ssh`.
    Ssh,
}

impl MountKind {
    const NAMES: [&'static str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

    fn parse(value: &str) -> Result<MountKind, String> {
        Ok(match lower(value).as_ref() {
            "bind" => MountKind::Bind,
            "cache" => MountKind::Cache,
            "tmpfs" => MountKind::Tmpfs,
            "secret" => MountKind::Secret,
            "ssh" => MountKind::Ssh,
            _ => {
                return Err(suggest::with_suggestion(
                    format!("unsupported mount type {value:?}"),
                    value,
                    Self::NAMES,
                ));
            }
        })
    }

    /// The lower-case name used in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Everyone writes the same directory (the default).
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Users wait for each other.
    Locked,
}

/// Expands one `--mount` value (variables of the stage), as BuildKit's `SingleWordExpander`.
pub type WordExpander<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

/// One parsed `RUN --mount=...` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMount {
    /// `type=` (default `bind`).
    pub kind: MountKind,
    /// `from=`: a stage, image or named context to take the files from.
    pub from: Option<String>,
    /// `source=`/`src=`: path inside `from` (or secret id source).
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: where it appears in the container.
    pub target: Option<String>,
    /// Read-only (bind, secret and ssh default to true; cache and tmpfs to false).
    pub read_only: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: Option<CacheSharing>,
    /// `required` for secret and ssh mounts.
    pub required: bool,
    /// `mode=` (octal) for cache, secret and ssh mounts.
    pub mode: Option<u32>,
    /// `uid=` for cache, secret and ssh mounts.
    pub uid: Option<u32>,
    /// `gid=` for cache, secret and ssh mounts.
    pub gid: Option<u32>,
    /// `size=` in bytes for tmpfs mounts.
    pub size: Option<u64>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
}

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

impl RunMount {
    /// Parses one `--mount` value (CSV of `key=value` fields). `expand` is applied to each value;
    /// when it is `None` (validation before variables are known), values holding `$` are skipped.
    pub fn parse(
        value: &str,
        mut expand: Option<&mut WordExpander<'_>>,
    ) -> Result<RunMount, String> {
        let fields = split_csv(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
        let mut m = RunMount {
            kind: MountKind::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let mut ro_auto = true;
        for field in &fields {
            let (key, raw) = match field.split_once('=') {
                Some((k, v)) => (lower(k), v),
                None => {
                    let key = lower(field);
                    match key.as_ref() {
                        "readonly" | "ro" => {
                            m.read_only = true;
                            ro_auto = false;
                            continue;
                        }
                        "readwrite" | "rw" => {
                            m.read_only = false;
                            ro_auto = false;
                            continue;
                        }
                        "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                            m.required = true;
                            continue;
                        }
                        "required" => {
                            return Err(format!(
                                "unexpected key 'required' for mount type '{}'",
                                m.kind.as_str()
                            ));
                        }
                        _ => {
                            return Err(format!(
                                "invalid field '{field}' must be a key=value pair"
                            ));
                        }
                    }
                }
            };
            let value = match expand.as_mut() {
                Some(f) => f(raw)?,
                None if raw.contains('$') && key.as_ref() != "from" => continue,
                None => raw.to_string(),
            };
            let bool_value =
                |v: &str| parse_go_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"));
            match key.as_ref() {
                "type" => m.kind = MountKind::parse(&value)?,
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.read_only = bool_value(&value)?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = !bool_value(&value)?;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                        return Err(format!(
                            "unexpected key 'required' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.required = bool_value(&value)?;
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match lower(&value).as_ref() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => return Err(format!("unsupported sharing value {value:?}")),
                    })
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(&value, 8)
                            .map_err(|_| format!("invalid value {value} for mode"))?,
                    )
                }
                "uid" => {
                    m.uid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid value {value} for uid"))?,
                    )
                }
                "gid" => {
                    m.gid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("invalid value {value} for gid"))?,
                    )
                }
                "size" => {
                    if m.kind != MountKind::Tmpfs {
                        return Err(format!(
                            "unexpected key 'size' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.size = Some(
                        parse_size(&value)
                            .ok_or_else(|| format!("invalid value {value} for size"))?,
                    )
                }
                "env" => m.env = Some(value),
                _ => {
                    return Err(suggest::with_suggestion(
                        format!("unexpected key '{key}' in '{field}'"),
                        &key,
                        MOUNT_KEYS,
                    ));
                }
            }
        }
        let file_info_allowed = matches!(
            m.kind,
            MountKind::Secret | MountKind::Ssh | MountKind::Cache
        );
        for (set, name) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set && !file_info_allowed {
                return Err(format!(
                    "{name} not allowed for {:?} type mounts",
                    m.kind.as_str()
                ));
            }
        }
        if ro_auto {
            m.read_only = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
        }
        if m.sharing.is_some() && m.kind != MountKind::Cache {
            return Err(format!(
                "invalid cache sharing set for {} mount",
                m.kind.as_str()
            ));
        }
        if m.kind == MountKind::Secret {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
        }
        if m.env.is_some() && m.kind != MountKind::Secret {
            return Err(format!(
                "unexpected key 'env' for mount type '{}'",
                m.kind.as_str()
            ));
        }
        if matches!(
            m.kind,
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs
        ) && m.target.as_deref().is_none_or(str::is_empty)
            && expand.is_some()
        {
            return Err(format!("{} mount requires a target", m.kind.as_str()));
        }
        Ok(m)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1g`, `512k`, `100`, with an optional `b`/`ib`.
fn parse_size(v: &str) -> Option<u64> {
    let lower = v.trim().to_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    Some((num * mult as f64) as u64)
}

/// Splits one CSV record as Go's `encoding/csv` does for a single line. Unquoted fields
/// borrow from `s`.
fn split_csv(s: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let mut fields = Vec::new();
    let mut rest = s;
    // Unquoted fields, the usual kind, are slices up to the next comma.
    while !rest.starts_with('"') {
        let end = rest.find(',').unwrap_or(rest.len());
        let field = &rest[..end];
        if field.contains('"') {
            return Err("bare \" in non-quoted-field".into());
        }
        fields.push(Cow::Borrowed(field));
        if end == rest.len() {
            return Ok(fields);
        }
        rest = &rest[end + 1..];
    }
    let mut chars = rest.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(Cow::Owned(field));
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                    None => {
                        fields.push(Cow::Owned(field));
                        return Ok(fields);
                    }
                }
            }
        }
        fields.push(Cow::Owned(field));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<RunMount, String> {
        let mut id = |s: &str| Ok::<_, String>(s.to_string());
        RunMount::parse(v, Some(&mut id))
    }

    #[test]
    fn cache_mount_keys() {
        let m = parse("type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000")
            .unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("go"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert!(!m.read_only);
    }

    #[test]
    fn bind_defaults_to_read_only_and_rw_flips_it() {
        let m = parse("target=/src,from=build,source=/out").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(m.read_only);
        assert_eq!(m.from.as_deref(), Some("build"));
        let m = parse("type=bind,target=/src,rw").unwrap();
        assert!(!m.read_only);
        let m = parse("type=bind,target=/src,readonly=false").unwrap();
        assert!(!m.read_only);
    }

    #[test]
    fn secret_ssh_and_tmpfs() {
        let m = parse("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(m.required && m.read_only);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        let m = parse("type=ssh").unwrap();
        assert_eq!(m.kind, MountKind::Ssh);
        let m = parse("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn rejects_invalid_mounts() {
        assert_eq!(
            parse("type=cahce,target=/x").unwrap_err(),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            parse("type=cache,target=/x,sharng=locked").unwrap_err(),
            "unexpected key 'sharng' in 'sharng=locked' (did you mean sharing?)"
        );
        assert_eq!(
            parse("type=bind,target=/x,mode=0700").unwrap_err(),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            parse("type=bind,target=/x,sharing=shared").unwrap_err(),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            parse("type=secret,from=x,id=a").unwrap_err(),
            "secret mount should not have a from"
        );
        assert_eq!(
            parse("type=cache,target=/x,mode=9").unwrap_err(),
            "invalid value 9 for mode"
        );
        assert_eq!(
            parse("type=bind,target=/x,required").unwrap_err(),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            parse("type=cache").unwrap_err(),
            "cache mount requires a target"
        );
        assert!(parse("type=cache,target=/x,junk").is_err());
    }

    #[test]
    fn defers_variables_when_not_expanding() {
        let m = RunMount::parse("type=cache,target=$HOME/.cache", None).unwrap();
        assert_eq!(m.target, None);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(split_csv("a=1,\"b=x,y\",c").unwrap(), ["a=1", "b=x,y", "c"]);
        assert!(split_csv("a\"b").is_err());
    }
}
