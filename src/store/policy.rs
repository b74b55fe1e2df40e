//! What `prune` may delete: [`PruneOptions`], parsed from docker's `--filter until=` and
//! `--keep-storage` syntax.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::image::parse_rfc3339;

/// Limits on what [`super::Store::prune_with`] removes. The default removes every unreferenced
/// blob and unnamed image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Only remove unreferenced blobs written, and unnamed images recorded, before this time.
    pub until: Option<SystemTime>,
    /// Stop removing (oldest first) once all blobs together take at most this many bytes.
    pub keep_bytes: Option<u64>,
}

/// A filter or size the prune options do not understand.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `--filter KEY=VALUE` with a key other than `until`.
    #[error("invalid filter {0:?}: only until=<duration or timestamp> is supported")]
    Filter(String),
    /// An `until=` value that is neither a Go duration nor a timestamp.
    #[error(
        "invalid until value {0:?}: use a duration like 24h or 1h30m, a Unix timestamp, or an RFC 3339 time"
    )]
    Until(String),
    /// A `--keep-storage` value that is not a size.
    #[error("invalid size {0:?}: use a number with an optional unit, e.g. 512MB or 10GB")]
    Size(String),
}

impl PruneOptions {
    /// Builds options from `--filter` values and `--keep-storage`, relative to `now`.
    pub fn parse(
        filters: &[String],
        keep_storage: Option<&str>,
        now: SystemTime,
    ) -> Result<PruneOptions, PolicyError> {
        let mut opts = PruneOptions::default();
        for f in filters {
            let value = f
                .strip_prefix("until=")
                .ok_or_else(|| PolicyError::Filter(f.clone()))?;
            let until = if let Some(d) = parse_go_duration(value) {
                now.checked_sub(d)
                    .ok_or_else(|| PolicyError::Until(value.into()))?
            } else if let Some(secs) = parse_rfc3339(value).or_else(|| value.parse().ok()) {
                UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
            } else {
                return Err(PolicyError::Until(value.into()));
            };
            // Several until filters: the strictest (earliest) wins.
            opts.until = Some(opts.until.map_or(until, |u| u.min(until)));
        }
        if let Some(size) = keep_storage {
            opts.keep_bytes = Some(parse_size(size).ok_or_else(|| PolicyError::Size(size.into()))?);
        }
        Ok(opts)
    }
}

/// Go's `time.ParseDuration` for non-negative values: `300ms`, `1.5h`, `2h45m`.
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Docker's `RAMInBytes`: binary multiples, unit letters k/m/g/t/p with optional `b`/`ib`.
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let value: f64 = t[..split].parse().ok()?;
    let unit = t[split..].trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    Some((value * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_filters_and_sizes() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = PruneOptions::parse(&["until=1h30m".into()], Some("10GB"), now).unwrap();
        assert_eq!(o.until, Some(now - Duration::from_secs(5400)));
        assert_eq!(o.keep_bytes, Some(10 << 30));
        let o = PruneOptions::parse(&["until=1970-01-01T00:01:40Z".into()], None, now).unwrap();
        assert_eq!(o.until, Some(UNIX_EPOCH + Duration::from_secs(100)));
        let o = PruneOptions::parse(&["until=100".into(), "until=10s".into()], None, now).unwrap();
        assert_eq!(o.until, Some(UNIX_EPOCH + Duration::from_secs(100)));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("42"), Some(42));
        assert!(PruneOptions::parse(&["label=x".into()], None, now).is_err());
        assert!(PruneOptions::parse(&["until=soon".into()], None, now).is_err());
        assert!(PruneOptions::parse(&[], Some("lots"), now).is_err());
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("h"), None);
    }
}
