//! `HEALTHCHECK`: `NONE` or `CMD` with `--interval --timeout --start-period --start-interval
//! --retries`, durations in Go's `time.ParseDuration` syntax as BuildKit reads them.

use std::time::Duration;

use serde::Serialize;

use super::flags::{FlagKind, Flags};

/// A parsed `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check (config `Test: ["NONE"]`).
    None,
    /// `HEALTHCHECK [opts] CMD ...`.
    Cmd {
        /// `["CMD", args...]` (exec form) or `["CMD-SHELL", "command"]` (shell form).
        test: Vec<String>,
        /// `--interval` (zero = unset).
        interval: Duration,
        /// `--timeout` (zero = unset).
        timeout: Duration,
        /// `--start-period` (zero = unset).
        start_period: Duration,
        /// `--start-interval` (zero = unset).
        start_interval: Duration,
        /// `--retries` (zero = unset).
        retries: u32,
    },
}

const FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

/// Builds a healthcheck from the node's flags and args (sub-command word first).
pub(crate) fn parse(
    flag_words: &[String],
    args: &[String],
    json: bool,
) -> Result<Healthcheck, String> {
    let Some(kind) = args.first() else {
        return Err("HEALTHCHECK requires at least one argument".into());
    };
    let kind = kind.to_uppercase();
    let rest = &args[1..];
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        Flags::parse(flag_words, &[])?;
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(flag_words, FLAGS)?;
    if kind != "CMD" {
        return Err(format!("Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"));
    }
    let cmd = if json {
        rest.to_vec()
    } else if rest.is_empty() {
        vec![]
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let mut test = vec![if json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let interval = |name: &str| -> Result<Duration, String> {
        let Some(v) = flags.str(name).filter(|v| !v.is_empty()) else {
            return Ok(Duration::ZERO);
        };
        let d = parse_go_duration(v).map_err(|e| format!("--{name}: {e}"))?;
        if d < Duration::from_millis(1) {
            return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
        }
        Ok(d)
    };
    let retries = match flags.str("retries").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("--retries: invalid syntax {v:?}"))?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            u32::try_from(n).map_err(|_| format!("--retries: value out of range {v:?}"))?
        }
    };
    Ok(Healthcheck::Cmd {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration`: `[-]N[.F]unit...` with units ns, us, µs, ms, s, m, h; `0` alone.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let body = s.strip_prefix('+').unwrap_or(s);
    if let Some(rest) = body.strip_prefix('-') {
        if !rest.is_empty() && rest.chars().all(|c| c == '0') {
            return Ok(Duration::ZERO);
        }
        return Err(format!("time: negative duration {s:?} not allowed"));
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * nanos;
        rest = next;
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn shell_and_exec_forms() {
        let h = parse(
            &w(&["--interval=5s", "--retries=3"]),
            &w(&["CMD", "curl -f http://x/"]),
            false,
        )
        .unwrap();
        let Healthcheck::Cmd {
            test,
            interval,
            retries,
            ..
        } = h
        else {
            panic!()
        };
        assert_eq!(test, ["CMD-SHELL", "curl -f http://x/"]);
        assert_eq!(interval, Duration::from_secs(5));
        assert_eq!(retries, 3);
        let h = parse(&[], &w(&["cmd", "true", "x"]), true).unwrap();
        let Healthcheck::Cmd { test, .. } = h else {
            panic!()
        };
        assert_eq!(test, ["CMD", "true", "x"]);
        assert_eq!(parse(&[], &w(&["NONE"]), false).unwrap(), Healthcheck::None);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&[], &w(&["NONE", "x"]), false).unwrap_err(),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            parse(&[], &w(&["RUN", "x"]), false).unwrap_err(),
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            parse(&w(&["--interval=0s"]), &w(&["CMD", "x"]), false).unwrap_err(),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            parse(&w(&["--retries=-1"]), &w(&["CMD", "x"]), false).unwrap_err(),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            parse(&w(&["--intervl=1s"]), &w(&["CMD", "x"]), false).unwrap_err(),
            "unknown flag: --intervl (did you mean --interval?)"
        );
        assert_eq!(
            parse(&[], &w(&["CMD"]), false).unwrap_err(),
            "Missing command after HEALTHCHECK CMD"
        );
    }
}
