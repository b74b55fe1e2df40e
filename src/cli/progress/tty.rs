//! `--progress=tty`: an indicatif view with a `[+] Building` header, one live line per running
//! step (elapsed time, last output lines) that collapses to one line when the step ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::{Render, Summary};
use crate::progress::Event;

/// How many output lines of a running step the tty view keeps.
const TAIL_LINES: usize = 6;

/// `--progress=tty`: a header line, then one live line per step with its elapsed time and the
/// last lines of its output; finished steps collapse to one line.
pub(super) struct Tty {
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
    /// A view drawing on stderr (which must be a terminal to show anything).
    pub(super) fn new() -> Self {
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
            Event::Log { id, text, .. }
            | Event::Status { id, text }
            | Event::CacheMiss { id, reason: text } => {
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
            // Byte bars are not drawn yet; the step's spinner keeps running meanwhile.
            Event::Bytes { .. } => {}
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

    #[test]
    fn fit_cuts_long_lines() {
        assert_eq!(fit("abcdef", 5), "ab...");
        assert_eq!(fit("abc", 5), "abc");
    }
}
