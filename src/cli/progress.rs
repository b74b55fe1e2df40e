//! Shows a build's [`Event`] stream as `--progress` asks: `plain` (BuildKit's numbered lines),
//! `tty` (live indicatif lines), `rawjson` (one JSON object per event, see docs/progress.md)
//! or `quiet` (nothing but warnings). Also the end-of-build summary, in the same style.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::args::ProgressMode;
use crate::progress::{Event, Reporter};

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
    render: Box<dyn Render>,
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
        let render: Box<dyn Render> = match mode {
            _ if quiet => Box::new(Quiet),
            ProgressMode::Quiet => Box::new(Quiet),
            ProgressMode::Rawjson => Box::new(RawJson {
                out: Mutex::new(Box::new(std::io::stderr())),
            }),
            // indicatif draws nothing on a non-terminal; plain keeps the log useful there.
            ProgressMode::Tty | ProgressMode::Auto if terminal => Box::new(Tty::new()),
            _ => Box::new(Plain::new(Box::new(std::io::stderr()))),
        };
        Console {
            render,
            start: Instant::now(),
            counts: Mutex::new(Counts::default()),
        }
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

/// `--progress=plain`: BuildKit's numbered lines.
struct Plain {
    state: Mutex<PlainState>,
}

struct PlainState {
    out: Box<dyn Write + Send>,
    /// The vertex the last printed line belonged to.
    last: Option<u64>,
    started: HashMap<u64, (Instant, String)>,
}

impl Plain {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Plain {
            state: Mutex::new(PlainState {
                out,
                last: None,
                started: HashMap::new(),
            }),
        }
    }
}

impl PlainState {
    /// Prints a blank line and the vertex's header again when another vertex printed since.
    fn switch_to(&mut self, id: u64) -> std::io::Result<()> {
        if self.last != Some(id) {
            if self.last.is_some() {
                writeln!(self.out)?;
            }
            if let Some((_, name)) = self.started.get(&id) {
                writeln!(self.out, "#{id} {name}")?;
            }
            self.last = Some(id);
        }
        Ok(())
    }

    fn secs(&self, id: u64) -> f64 {
        self.started
            .get(&id)
            .map_or(0.0, |(t, _)| t.elapsed().as_secs_f64())
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Started { id, name, .. } => {
                if self.last.is_some() {
                    writeln!(self.out)?;
                }
                writeln!(self.out, "#{id} {name}")?;
                self.started.insert(*id, (Instant::now(), name.clone()));
                self.last = Some(*id);
            }
            Event::Cached { id } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} CACHED")?;
            }
            Event::Finished { id } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} DONE {:.1}s", self.secs(*id))?;
            }
            Event::Errored { id, message } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} ERROR: {message}")?;
            }
            Event::Log { id, text, .. } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} {:.3} {text}", self.secs(*id))?;
            }
            Event::Status { id, text } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} {text}")?;
            }
            Event::Warning { message } => {
                if self.last.take().is_some() {
                    writeln!(self.out)?;
                }
                writeln!(self.out, "WARNING: {message}")?;
            }
        }
        self.out.flush()
    }
}

impl Render for Plain {
    fn event(&self, event: &Event, _: Duration) {
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = self.state.lock().expect("plain lock").write(event);
    }
    fn summary(&self, summary: &Summary) {
        let mut s = self.state.lock().expect("plain lock");
        let _ = writeln!(s.out);
        for l in summary.lines() {
            let _ = writeln!(s.out, "{l}");
        }
        let _ = s.out.flush();
    }
}

/// How many output lines of a running step the tty view keeps.
const TAIL_LINES: usize = 6;

/// `--progress=tty`: a header line, then one live line per step with its elapsed time and the
/// last lines of its output; finished steps collapse to one line.
struct Tty {
    multi: MultiProgress,
    /// `[+] Building 1.2s (3/5)`, created with the first vertex (so `--dry-run` or an early
    /// error draws nothing).
    header: std::sync::OnceLock<ProgressBar>,
    state: Mutex<TtyState>,
}

#[derive(Default)]
struct TtyState {
    bars: HashMap<u64, TtyBar>,
    started: usize,
    done: usize,
}

struct TtyBar {
    bar: ProgressBar,
    name: String,
    tail: VecDeque<String>,
}

fn secs_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(" => {prefix} {secs}{msg}")
        .expect("valid template")
        .with_key("secs", secs_key)
}

fn final_style() -> ProgressStyle {
    ProgressStyle::with_template(" => {prefix}{msg}").expect("valid template")
}

fn width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(80, |(_, w)| usize::from(w))
        .max(20)
}

/// Cuts `s` to `max` characters (terminal lines must not wrap or the redraw breaks).
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

impl Tty {
    fn new() -> Self {
        Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            header: std::sync::OnceLock::new(),
            state: Mutex::new(TtyState::default()),
        }
    }

    fn header(&self) -> &ProgressBar {
        self.header.get_or_init(|| {
            let header = self.multi.add(ProgressBar::new_spinner());
            header.set_style(
                ProgressStyle::with_template("[+] Building {secs} {msg}")
                    .expect("valid template")
                    .with_key("secs", secs_key),
            );
            header.enable_steady_tick(Duration::from_millis(100));
            header
        })
    }

    fn tail_message(tail: &VecDeque<String>) -> String {
        let w = width().saturating_sub(8);
        tail.iter()
            .map(|l| format!("\n => => # {}", fit(l, w)))
            .collect()
    }

    fn close(&self, st: &mut TtyState, id: u64, mark: &str, keep_tail: bool) {
        let Some(b) = st.bars.remove(&id) else {
            return;
        };
        st.done += 1;
        let secs = b.bar.elapsed().as_secs_f64();
        let w = width();
        let name = fit(&format!("{mark}{}", b.name), w.saturating_sub(12));
        b.bar.set_style(final_style());
        b.bar.set_prefix(format!(
            "{name:<pad$} {secs:>5.1}s",
            pad = w.saturating_sub(12).min(name.chars().count().max(60))
        ));
        b.bar.set_message(if keep_tail {
            Self::tail_message(&b.tail)
        } else {
            String::new()
        });
        b.bar.finish();
    }
}

impl Render for Tty {
    fn event(&self, event: &Event, _: Duration) {
        let mut st = self.state.lock().expect("tty lock");
        match event {
            Event::Started { id, name, .. } => {
                self.header();
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(running_style());
                bar.set_prefix(fit(name, width().saturating_sub(12)));
                bar.enable_steady_tick(Duration::from_millis(100));
                st.started += 1;
                st.bars.insert(
                    *id,
                    TtyBar {
                        bar,
                        name: name.clone(),
                        tail: VecDeque::new(),
                    },
                );
            }
            Event::Log { id, text, .. } | Event::Status { id, text } => {
                if let Some(b) = st.bars.get_mut(id) {
                    b.tail.push_back(text.clone());
                    while b.tail.len() > TAIL_LINES {
                        b.tail.pop_front();
                    }
                    b.bar.set_message(Self::tail_message(&b.tail));
                }
            }
            Event::Cached { id } => self.close(&mut st, *id, "CACHED ", false),
            Event::Finished { id } => self.close(&mut st, *id, "", false),
            Event::Errored { id, .. } => self.close(&mut st, *id, "ERROR ", true),
            Event::Warning { message } => {
                let _ = self.multi.println(format!("WARNING: {message}"));
            }
        }
        if let Some(h) = self.header.get() {
            h.set_message(format!("({}/{})", st.done, st.started));
        }
    }

    fn summary(&self, summary: &Summary) {
        let st = self.state.lock().expect("tty lock");
        let header = self.header();
        header.set_message(format!("({}/{}) FINISHED", st.done, st.started));
        header.finish();
        drop(st);
        // Every line is finished, so nothing redraws any more: print below the final view
        // (multi.println would put the summary above it).
        for l in summary.lines() {
            eprintln!("{l}");
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        // A failed build never reaches summary(): stop the ticking lines where they are.
        if let Some(h) = self.header.get()
            && !h.is_finished()
        {
            h.abandon();
        }
        for b in self.state.lock().expect("tty lock").bars.values() {
            b.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_reprints_header_when_vertices_interleave() {
        let buf = Buf::default();
        let p = Plain::new(Box::new(buf.clone()));
        let t = Duration::ZERO;
        let started = |id, name: &str| Event::Started {
            id,
            name: name.into(),
            step: None,
        };
        p.event(&started(1, "[a 2/2] RUN x"), t);
        p.event(&started(2, "[b 2/2] RUN y"), t);
        p.event(
            &Event::Log {
                id: 1,
                stream: crate::progress::LogStream::Stdout,
                text: "hello".into(),
            },
            t,
        );
        p.event(&Event::Cached { id: 2 }, t);
        p.event(
            &Event::Errored {
                id: 1,
                message: "boom".into(),
            },
            t,
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let masked: Vec<String> = text
            .lines()
            .map(|l| {
                l.split(' ')
                    .map(|w| {
                        if w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.') {
                            "T"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            masked,
            [
                "#1 [a 2/2] RUN x",
                "",
                "#2 [b 2/2] RUN y",
                "",
                "#1 [a 2/2] RUN x",
                "#1 T hello",
                "",
                "#2 [b 2/2] RUN y",
                "#2 CACHED",
                "",
                "#1 [a 2/2] RUN x",
                "#1 ERROR: boom",
            ]
        );
    }

    #[test]
    fn sizes_and_fitting() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(2_000_000), "2.0 MB");
        assert_eq!(fit("abcdef", 5), "ab...");
        assert_eq!(fit("abc", 5), "abc");
    }
}
