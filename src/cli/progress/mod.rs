//! Shows a build's [`Event`] stream as `--progress` asks: `plain` (BuildKit's numbered lines),
//! `tty` (live indicatif lines), `rawjson` (one JSON object per event, see docs/progress.md)
//! or `quiet` (nothing but warnings). Also the end-of-build summary, in the same style, and
//! the route that brings `tracing` warnings into the running build's view (`warnings`).

mod plain;
mod transfer;
mod tty;
mod warnings;

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::args::ProgressMode;
use crate::progress::{Event, Reporter};
use plain::Plain;
use tty::Tty;
pub(super) use warnings::{
    ProgressWarnings, hold_warnings, release_held_warnings, warnings_routed,
};

/// What the user sees at the end of a successful build.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Summary {
    /// The image ID (config digest).
    pub image_id: String,
    /// The manifest digest.
    pub manifest: String,
    /// The names the image got.
    pub tags: Vec<String>,
    /// Compressed size of the layers, in bytes.
    pub size: u64,
    /// How many layers the image has.
    pub layers: usize,
    /// Steps that ran.
    pub steps_run: usize,
    /// Steps whose result came from the cache.
    pub steps_cached: usize,
    /// Wall time of the whole command, in seconds.
    pub seconds: f64,
}

/// `1.2 kB`, as docker prints sizes (decimal units).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Summary {
    /// The summary as the text renderers print it.
    fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("Built {} in {:.1}s", self.image_id, self.seconds)];
        out.push(format!("  manifest: {}", self.manifest));
        if !self.tags.is_empty() {
            out.push(format!("  tags:     {}", self.tags.join(", ")));
        }
        out.push(format!(
            "  size:     {} compressed, {} layer{}",
            human_size(self.size),
            self.layers,
            if self.layers == 1 { "" } else { "s" }
        ));
        out.push(format!(
            "  steps:    {} run, {} cached",
            self.steps_run, self.steps_cached
        ));
        out
    }
}

/// One way of showing events.
trait Render: Send + Sync {
    fn event(&self, event: &Event, since_start: Duration);
    fn summary(&self, summary: &Summary);
}

/// The reporter the CLI hands to the solver: counts what it sees and forwards to a renderer.
pub(super) struct Console {
    render: Arc<dyn Render>,
    start: Instant,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    run: usize,
    cached: usize,
    /// Vertices that are Dockerfile steps after FROM (the ones the summary counts).
    steps: std::collections::HashSet<u64>,
}

impl Console {
    /// The renderer for `mode` (`auto` resolved against stderr; `-q` wins over `--progress`).
    pub(super) fn new(mode: ProgressMode, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let render: Arc<dyn Render> = match mode {
            _ if quiet => Arc::new(Quiet),
            ProgressMode::Quiet => Arc::new(Quiet),
            ProgressMode::Rawjson => Arc::new(RawJson {
                out: Mutex::new(Box::new(std::io::stderr())),
            }),
            // indicatif draws nothing on a non-terminal; plain keeps the log useful there.
            ProgressMode::Tty | ProgressMode::Auto if terminal => Arc::new(Tty::new()),
            _ => Arc::new(Plain::new(Box::new(std::io::stderr()))),
        };
        let console = Console {
            render,
            start: Instant::now(),
            counts: Mutex::new(Counts::default()),
        };
        for message in warnings::attach(&console.render, console.start) {
            console.event(Event::Warning { message });
        }
        console
    }

    /// Steps run and cached so far.
    pub(super) fn step_counts(&self) -> (usize, usize) {
        let c = self.counts.lock().expect("counts lock");
        (c.run, c.cached)
    }

    /// Seconds since the build started.
    pub(super) fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Shows the end-of-build summary.
    pub(super) fn summary(&self, summary: &Summary) {
        self.render.summary(summary);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        warnings::detach(&self.render);
    }
}

impl Reporter for Console {
    fn event(&self, event: Event) {
        {
            let mut c = self.counts.lock().expect("counts lock");
            match &event {
                Event::Started {
                    id, step: Some(s), ..
                } if s.index > 1 => {
                    c.steps.insert(*id);
                }
                Event::Cached { id } if c.steps.contains(id) => c.cached += 1,
                Event::Finished { id } if c.steps.contains(id) => c.run += 1,
                _ => {}
            }
        }
        self.render.event(&event, self.start.elapsed());
    }
}

struct Quiet;

impl Render for Quiet {
    fn event(&self, event: &Event, _: Duration) {
        if let Event::Warning { message } = event {
            eprintln!("WARNING: {message}");
        }
    }
    fn summary(&self, _: &Summary) {}
}

/// `--progress=rawjson`: every event as one JSON object with `time` (seconds since start).
struct RawJson {
    out: Mutex<Box<dyn Write + Send>>,
}

impl RawJson {
    fn write(&self, mut v: serde_json::Value, since_start: Duration) {
        v["time"] = serde_json::json!((since_start.as_secs_f64() * 1000.0).round() / 1000.0);
        let mut out = self.out.lock().expect("output lock");
        // A closed stderr must not fail the build; there is nowhere left to report it.
        let _ = writeln!(out, "{v}");
    }
}

impl Render for RawJson {
    fn event(&self, event: &Event, since_start: Duration) {
        let v = serde_json::to_value(event).expect("events serialize");
        self.write(v, since_start);
    }
    fn summary(&self, summary: &Summary) {
        let mut v = serde_json::to_value(summary).expect("summary serializes");
        v["kind"] = "summary".into();
        self.write(v, Duration::from_secs_f64(summary.seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(2_000_000), "2.0 MB");
    }
}
