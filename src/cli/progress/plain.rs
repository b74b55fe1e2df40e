//! `--progress=plain`: BuildKit's numbered lines (`#5 [build 2/4] RUN make`, `#5 0.123 out`,
//! `#5 CACHED`, `#5 DONE 1.2s`, `#5 ERROR: ...`, `#5 sha256:… 10.49MB / 52.43MB 0.3s`),
//! headers repeated when vertices interleave.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::transfer::Transfers;
use super::{Render, Summary};
use crate::progress::Event;

/// `--progress=plain`: BuildKit's numbered lines.
pub(super) struct Plain {
    state: Mutex<PlainState>,
}

struct PlainState {
    out: Box<dyn Write + Send>,
    /// The vertex the last printed line belonged to.
    last: Option<u64>,
    started: HashMap<u64, (Instant, String)>,
    transfers: Transfers,
}

impl Plain {
    /// A renderer writing to `out` (stderr in the CLI).
    pub(super) fn new(out: Box<dyn Write + Send>) -> Self {
        Plain {
            state: Mutex::new(PlainState {
                out,
                last: None,
                started: HashMap::new(),
                transfers: Transfers::default(),
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
            Event::CacheMiss { id, reason } => {
                self.switch_to(*id)?;
                writeln!(self.out, "#{id} cache miss: {reason}")?;
            }
            Event::Bytes {
                id,
                action,
                name,
                current,
                total,
            } => {
                let line =
                    self.transfers
                        .plain_line(*id, *action, name, *current, *total, Instant::now());
                if let Some(line) = line {
                    self.switch_to(*id)?;
                    writeln!(self.out, "#{id} {line}")?;
                }
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
    fn plain_prints_byte_progress_and_its_end() {
        let buf = Buf::default();
        let p = Plain::new(Box::new(buf.clone()));
        let t = Duration::ZERO;
        p.event(
            &Event::Started {
                id: 5,
                name: "[1/2] FROM docker.io/library/debian:12".into(),
                step: None,
            },
            t,
        );
        let bytes = |current| Event::Bytes {
            id: 5,
            action: crate::progress::ByteAction::Pull,
            name: "sha256:abcd".into(),
            current,
            total: Some(52_428_800),
        };
        p.event(&bytes(0), t);
        // Within the same second: not printed.
        p.event(&bytes(10_485_760), t);
        p.event(&bytes(52_428_800), t);
        p.event(&Event::Finished { id: 5 }, t);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "#5 [1/2] FROM docker.io/library/debian:12");
        assert!(
            lines[1].starts_with("#5 sha256:abcd 0B / 52.43MB 0.0s"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("#5 sha256:abcd 52.43MB / 52.43MB ")
                && lines[2].ends_with("s done"),
            "{text}"
        );
        assert!(lines[3].starts_with("#5 DONE "), "{text}");
    }
}
