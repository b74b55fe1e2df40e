//! `--progress=tty`: an indicatif view with a `[+] Building` header, one live line per running
//! step (elapsed time, last output lines) that collapses to one line when the step ends, and a
//! byte bar with size and rate under the step for each blob it moves, removed when done.

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
    /// Byte bars of blobs in flight, by blob name, in the order they appeared.
    blobs: Vec<(String, ProgressBar)>,
}

fn secs_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(" => {prefix} {secs}{msg}")
        .expect("valid template")
        .with_key("secs", secs_key)
}

fn blob_style(total_known: bool) -> ProgressStyle {
    let template = if total_known {
        " => => {prefix} {decimal_bytes}/{decimal_total_bytes} [{bar:20}] {decimal_bytes_per_sec}"
    } else {
        " => => {prefix} {decimal_bytes} {decimal_bytes_per_sec}"
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

/// `sha256:0123456789ab`: the digest cut as docker shows layer ids; other names as they are.
fn short_blob(name: &str) -> String {
    match name.split_once(':') {
        Some((algo, hex)) if hex.len() > 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{algo}:{}", &hex[..12])
        }
        _ => name.to_string(),
    }
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
        Self::with_target(ProgressDrawTarget::stderr_with_hz(10))
    }

    /// A view drawing on `target` (hidden in unit tests).
    fn with_target(target: ProgressDrawTarget) -> Self {
        Tty {
            multi: MultiProgress::with_draw_target(target),
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
        for (_, blob) in &b.blobs {
            blob.finish_and_clear();
            self.multi.remove(blob);
        }
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

impl Tty {
    /// Updates (or adds, under the step and its other blobs) the byte bar of one blob;
    /// removes it when the transfer is done.
    fn blob(
        &self,
        step: &mut TtyBar,
        action: crate::progress::ByteAction,
        name: &str,
        current: u64,
        total: Option<u64>,
    ) {
        let found = step.blobs.iter().position(|(n, _)| n == name);
        if total == Some(current) {
            if let Some(i) = found {
                let (_, bar) = step.blobs.remove(i);
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            return;
        }
        let bar = match found {
            Some(i) => &step.blobs[i].1,
            None => {
                let after = step.blobs.last().map_or(&step.bar, |(_, b)| b);
                let bar = self
                    .multi
                    .insert_after(after, ProgressBar::new(total.unwrap_or(0)));
                bar.set_style(blob_style(total.is_some()));
                let verb = match action {
                    crate::progress::ByteAction::Pull => "pulling",
                    crate::progress::ByteAction::Push => "pushing",
                    crate::progress::ByteAction::Compress => "compressing",
                    crate::progress::ByteAction::Extract => "extracting",
                };
                bar.set_prefix(format!("{verb} {}", short_blob(name)));
                step.blobs.push((name.to_string(), bar));
                &step.blobs[step.blobs.len() - 1].1
            }
        };
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(current);
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
                        blobs: Vec::new(),
                    },
                );
            }
            // A step stopped because another one failed: it ends here, like BuildKit's
            // `CANCELED` line, instead of ticking on until the build's error is printed.
            Event::Status { id, text } if text == crate::progress::CANCELED => {
                self.close(&mut st, *id, "CANCELED ", false);
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
            Event::CacheMiss { id, reason } => {
                if let Some(b) = st.bars.get_mut(id) {
                    b.tail.push_back(format!("cache miss: {reason}"));
                    while b.tail.len() > TAIL_LINES {
                        b.tail.pop_front();
                    }
                    b.bar.set_message(Self::tail_message(&b.tail));
                }
            }
            Event::Cached { id } => self.close(&mut st, *id, "CACHED ", false),
            Event::Finished { id } => self.close(&mut st, *id, "", false),
            Event::Errored { id, .. } => self.close(&mut st, *id, "ERROR ", true),
            Event::Bytes {
                id,
                action,
                name,
                current,
                total,
            } => {
                if let Some(b) = st.bars.get_mut(id) {
                    self.blob(b, *action, name, *current, *total);
                }
            }
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
            for (_, blob) in &b.blobs {
                blob.finish_and_clear();
            }
            b.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_are_cut_like_docker_layer_ids() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_blob(&d), "sha256:abababababab");
        assert_eq!(short_blob("app/layer.tar"), "app/layer.tar");
    }

    #[test]
    fn byte_bars_appear_under_their_step_and_go_when_done() {
        let tty = Tty::with_target(ProgressDrawTarget::hidden());
        let t = Duration::ZERO;
        tty.event(
            &Event::Started {
                id: 1,
                name: "[1/2] FROM debian".into(),
                step: None,
            },
            t,
        );
        let bytes = |name: &str, current| Event::Bytes {
            id: 1,
            action: crate::progress::ByteAction::Pull,
            name: name.into(),
            current,
            total: Some(100),
        };
        tty.event(&bytes("sha256:a", 10), t);
        tty.event(&bytes("sha256:b", 20), t);
        tty.event(&bytes("sha256:a", 50), t);
        {
            let st = tty.state.lock().unwrap();
            let blobs = &st.bars[&1].blobs;
            assert_eq!(blobs.len(), 2);
            assert_eq!(blobs[0].0, "sha256:a");
            assert_eq!(blobs[0].1.position(), 50);
            assert_eq!(blobs[0].1.prefix(), "pulling sha256:a");
            assert_eq!(blobs[1].1.position(), 20);
        }
        tty.event(&bytes("sha256:a", 100), t);
        assert_eq!(tty.state.lock().unwrap().bars[&1].blobs.len(), 1);
        tty.event(
            &Event::CacheMiss {
                id: 1,
                reason: "base image changed".into(),
            },
            t,
        );
        assert_eq!(
            tty.state.lock().unwrap().bars[&1]
                .tail
                .back()
                .map(String::as_str),
            Some("cache miss: base image changed")
        );
        tty.event(&Event::Finished { id: 1 }, t);
        assert!(tty.state.lock().unwrap().bars.is_empty());
    }

    #[test]
    fn a_canceled_step_collapses() {
        let tty = Tty::with_target(ProgressDrawTarget::hidden());
        let t = Duration::ZERO;
        tty.event(
            &Event::Started {
                id: 7,
                name: "[a 1/1] RUN sleep 600".into(),
                step: None,
            },
            t,
        );
        tty.event(
            &Event::Status {
                id: 7,
                text: crate::progress::CANCELED.into(),
            },
            t,
        );
        let st = tty.state.lock().unwrap();
        assert!(st.bars.is_empty());
        assert_eq!(st.done, 1);
    }

    #[test]
    fn fit_cuts_long_lines() {
        assert_eq!(fit("abcdef", 5), "ab...");
        assert_eq!(fit("abc", 5), "abc");
    }
}
