//! Values as BuildKit and docker format or validate them: clean paths, WORKDIR and COPY
//! destinations, port specs, stop signals, and Go's `%q`/`Duration` formatting used in history.

use std::fmt::Write as _;
use std::time::Duration;

use crate::dockerfile::instructions::Healthcheck;

/// Lexical `path.Clean` of `base/rel` (or of `rel` alone when `base` is `None`), made
/// absolute: the cleaned path is written straight into one string.
fn clean_joined(base: Option<&str>, rel: &str, extra: usize) -> String {
    let mut out = String::with_capacity(base.map_or(0, str::len) + rel.len() + 1 + extra);
    let parts = base
        .into_iter()
        .flat_map(|b| b.split('/'))
        .chain(rel.split('/'));
    for c in parts {
        match c {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// BuildKit's `NormalizeWorkdir`: relative paths join the current one; the result is clean.
pub(crate) fn normalize_workdir(current: &str, new: &str) -> String {
    normalize_with_room(current, new, 0)
}

fn normalize_with_room(current: &str, new: &str, extra: usize) -> String {
    if new.starts_with('/') {
        clean_joined(None, new, extra)
    } else {
        clean_joined(Some(current), new, extra)
    }
}

/// COPY/ADD destination made absolute; a trailing `/` (or `.`) means "into this directory".
pub(crate) fn dest_path(workdir: &str, dest: &str) -> String {
    let mut abs = normalize_with_room(workdir, dest, 1);
    let into_dir = dest.is_empty() || dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if into_dir && abs != "/" {
        abs.push('/');
    }
    abs
}

/// docker's `nat.ParsePortSpec`: `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`...
pub(crate) fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) if proto.bytes().any(|b| !b.is_ascii_lowercase()) => {
            (p, std::borrow::Cow::Owned(proto.to_lowercase()))
        }
        Some((p, proto)) => (p, std::borrow::Cow::Borrowed(proto)),
        None => (spec, std::borrow::Cow::Borrowed("tcp")),
    };
    if !matches!(proto.as_ref(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {ports}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for containerPort: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "WINCH",
];

/// docker's `signal.ParseSignal`: a number, or a name with or without `SIG` (also `RTMIN+n`).
pub(crate) fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n == 0 {
            Err(format!("Invalid signal: {s}"))
        } else {
            Ok(())
        };
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
        Ok(())
    } else {
        Err(format!("Invalid signal: {s}"))
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn healthcheck_config(h: &Healthcheck) -> crate::image::Healthcheck {
    match h {
        Healthcheck::None => crate::image::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => crate::image::Healthcheck {
            test: test.clone(),
            interval: nanos(*interval),
            timeout: nanos(*timeout),
            start_period: nanos(*start_period),
            start_interval: nanos(*start_interval),
            retries: i64::from(*retries),
        },
    }
}

/// Appends Go's `%q` of `s` to `out`.
fn go_quote_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(v: &[String]) -> String {
    let mut out = String::with_capacity(2 + v.iter().map(|s| s.len() + 3).sum::<usize>());
    go_quote_list_into(&mut out, v);
    out
}

fn go_quote_list_into(out: &mut String, v: &[String]) {
    out.push('[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        go_quote_into(out, s);
    }
    out.push(']');
}

/// Go's `Duration.String()`.
fn go_duration(n: i64) -> String {
    if n == 0 {
        return "0s".into();
    }
    let d = Duration::from_nanos(n.unsigned_abs());
    let total = d.as_secs_f64();
    if d < Duration::from_secs(1) {
        let ns = d.as_nanos();
        return if ns < 1_000 {
            format!("{ns}ns")
        } else if ns < 1_000_000 {
            format!("{}µs", trim_float(ns as f64 / 1e3))
        } else {
            format!("{}ms", trim_float(ns as f64 / 1e6))
        };
    }
    let h = (total / 3600.0).floor() as u64;
    let m = ((total - h as f64 * 3600.0) / 60.0).floor() as u64;
    let s = total - h as f64 * 3600.0 - m as f64 * 60.0;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_float(s)));
    out
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Go's `%q` of a `*container.HealthConfig`, as BuildKit writes it into history.
pub(crate) fn go_quote_health(h: &crate::image::Healthcheck) -> String {
    let retries = match h.retries {
        0 => "'\\x00'".to_string(),
        n @ 1..=31 => format!("'\\x{n:02x}'"),
        n => match char::from_u32(n as u32) {
            Some(c) if !c.is_control() => format!("'{c}'"),
            _ => format!("'\\x{n:02x}'"),
        },
    };
    let mut out = String::with_capacity(64 + h.test.iter().map(|t| t.len() + 3).sum::<usize>());
    out.push_str("&{");
    go_quote_list_into(&mut out, &h.test);
    for d in [h.interval, h.timeout, h.start_period, h.start_interval] {
        out.push(' ');
        go_quote_into(&mut out, &go_duration(d));
    }
    out.push(' ');
    out.push_str(&retries);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize_workdir("/", "app"), "/app");
        assert_eq!(normalize_workdir("/app", "../x/./y/"), "/x/y");
        assert_eq!(normalize_workdir("/app", "/abs"), "/abs");
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "sub/"), "/app/sub/");
        assert_eq!(dest_path("/app", "f.txt"), "/app/f.txt");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(dest_path("/", "."), "/");
        assert_eq!(normalize_workdir("/a", "../../.."), "/");
        assert_eq!(normalize_workdir("/a/b", "..//c/../d/"), "/a/d");
        assert_eq!(normalize_workdir("", "x"), "/x");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            parse_port_spec("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(parse_port_spec("x").is_err());
        assert!(parse_port_spec("80/foo").is_err());
    }

    #[test]
    fn signals() {
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("kill").is_ok());
        assert!(check_signal("9").is_ok());
        assert_eq!(
            check_signal("SIGFOO").unwrap_err(),
            "Invalid signal: SIGFOO"
        );
    }

    #[test]
    fn go_formatting() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\""]"#
        );
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        let h = crate::image::Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 3,
            ..Default::default()
        };
        assert_eq!(
            go_quote_health(&h),
            r#"&{["CMD-SHELL" "true"] "5s" "0s" "0s" "0s" '\x03'}"#
        );
    }
}
