//! Byte progress of one blob (a layer pulled, pushed, compressed or extracted) in BuildKit's
//! words: sizes as docker's `units.HumanSize` prints them (`10.49MB`), the line the plain view
//! prints (`sha256:… 10.49MB / 52.43MB 0.3s`), and how often it may print one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::progress::ByteAction;

/// Plain output prints a running transfer at most this often (BuildKit's plain printer
/// refreshes about once a second too).
pub(super) const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// `units.HumanSize`: four significant digits, decimal units, no space (`0B`, `512B`,
/// `1.5kB`, `10.49MB`), as BuildKit prints byte progress.
pub(super) fn go_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", go_g4(v), UNITS[u])
}

/// Go's `%.4g` for 0 <= v < 10000: four significant digits, trailing zeros dropped.
fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let int_digits = (v.log10().floor() as i32 + 1).max(1);
    let decimals = (4 - int_digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One transfer as the plain view tracks it.
struct Seen {
    started: Instant,
    last_print: Option<Instant>,
}

/// When each blob's transfer started and was last printed, by vertex and blob name.
#[derive(Default)]
pub(super) struct Transfers {
    seen: HashMap<(u64, String), Seen>,
}

impl Transfers {
    /// The line to print for this update, if one is due: the first update of a blob, then at
    /// most one per [`PLAIN_INTERVAL`], and always the last (`current == total`), which also
    /// forgets the blob.
    pub(super) fn plain_line(
        &mut self,
        id: u64,
        action: ByteAction,
        name: &str,
        current: u64,
        total: Option<u64>,
        now: Instant,
    ) -> Option<String> {
        let key = (id, name.to_string());
        let seen = self.seen.entry(key.clone()).or_insert(Seen {
            started: now,
            last_print: None,
        });
        let done = total == Some(current);
        let due = seen
            .last_print
            .is_none_or(|t| now.duration_since(t) >= PLAIN_INTERVAL);
        if !done && !due {
            return None;
        }
        seen.last_print = Some(now);
        let secs = now.duration_since(seen.started).as_secs_f64();
        if done {
            self.seen.remove(&key);
        }
        Some(byte_line(action, name, current, total, secs, done))
    }
}

/// `sha256:… 10.49MB / 52.43MB 0.3s`, with `extracting ` before the name of an unpacked
/// layer and ` done` after the last update, as BuildKit prints them.
pub(super) fn byte_line(
    action: ByteAction,
    name: &str,
    current: u64,
    total: Option<u64>,
    secs: f64,
    done: bool,
) -> String {
    let mut line = String::new();
    if action == ByteAction::Extract {
        line.push_str("extracting ");
        line.push_str(name);
    } else {
        line.push_str(name);
        line.push(' ');
        line.push_str(&go_size(current));
        if let Some(t) = total {
            line.push_str(" / ");
            line.push_str(&go_size(t));
        }
    }
    line.push_str(&format!(" {secs:.1}s"));
    if done {
        line.push_str(" done");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(go_size(0), "0B");
        assert_eq!(go_size(512), "512B");
        assert_eq!(go_size(1_500), "1.5kB");
        assert_eq!(go_size(10_485_760), "10.49MB");
        assert_eq!(go_size(52_428_800), "52.43MB");
        assert_eq!(go_size(2_000_000), "2MB");
        assert_eq!(go_size(999_999), "1000kB");
        assert_eq!(go_size(123_456_789_012), "123.5GB");
    }

    #[test]
    fn plain_lines_are_throttled_per_blob_and_end_with_done() {
        let mut t = Transfers::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let a = "sha256:aaaa";
        let b = "sha256:bbbb";
        let total = Some(52_428_800);
        let pull = ByteAction::Pull;
        assert_eq!(
            t.plain_line(5, pull, a, 0, total, at(0)).as_deref(),
            Some("sha256:aaaa 0B / 52.43MB 0.0s")
        );
        // A second blob of the same vertex has its own clock.
        assert!(t.plain_line(5, pull, b, 10, total, at(100)).is_some());
        assert_eq!(t.plain_line(5, pull, a, 1_000_000, total, at(300)), None);
        assert_eq!(t.plain_line(5, pull, a, 2_000_000, total, at(900)), None);
        assert_eq!(
            t.plain_line(5, pull, a, 10_485_760, total, at(1_000))
                .as_deref(),
            Some("sha256:aaaa 10.49MB / 52.43MB 1.0s")
        );
        assert_eq!(
            t.plain_line(5, pull, a, 52_428_800, total, at(1_200))
                .as_deref(),
            Some("sha256:aaaa 52.43MB / 52.43MB 1.2s done")
        );
        // The finished blob is forgotten: a new transfer of it starts a new clock.
        assert_eq!(
            t.plain_line(5, pull, a, 5, None, at(5_000)).as_deref(),
            Some("sha256:aaaa 5B 0.0s")
        );
    }

    #[test]
    fn extraction_shows_no_sizes() {
        assert_eq!(
            byte_line(ByteAction::Extract, "sha256:cc", 9, Some(9), 0.42, true),
            "extracting sha256:cc 0.4s done"
        );
    }
}
