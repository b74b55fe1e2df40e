//! The build's event stream: what the solver reports while it works (steps started, finished,
//! cached or failed, RUN output lines, warnings). Libraries only emit [`Event`]s through a
//! [`Reporter`]; the command line decides how to show them (`--progress`).
//!
//! Vertex ids are numbered before anything runs, in stage order then step order, so the same
//! Dockerfile always gets the same `#N` numbers even when stages build in parallel.

use serde::Serialize;

/// Where a step sits in its stage, as BuildKit prints it (`[build 2/4]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepPosition {
    /// Stage index in the Dockerfile (0-based).
    pub stage: usize,
    /// The stage's display name: its `AS` name, `stage-N` in multi-stage builds, or `None`
    /// for a single unnamed stage (BuildKit then prints just `[2/4]`).
    pub stage_name: Option<String>,
    /// 1-based step number; the stage's FROM is step 1.
    pub index: usize,
    /// Steps in the stage, FROM included.
    pub total: usize,
    /// Dockerfile line of the instruction (0 when it has none, e.g. an ONBUILD trigger).
    pub line: usize,
}

/// Which output stream a RUN log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// What a [`Event::Bytes`] transfer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ByteAction {
    /// Downloading a blob from a registry.
    Pull,
    /// Uploading a blob to a registry.
    Push,
    /// Compressing a new layer.
    Compress,
    /// Unpacking a layer into a snapshot.
    Extract,
}

/// The [`Event::Status`] text that ends a vertex stopped before it finished because another
/// step failed (BuildKit prints `#N CANCELED`); no `finished` or `errored` event follows it.
pub const CANCELED: &str = "CANCELED";

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A vertex (a step, or other work such as exporting) began.
    Started {
        /// Stable vertex number (`#N`).
        id: u64,
        /// The text BuildKit prints for it: `[build 2/4] RUN make`, `exporting to image`.
        name: String,
        /// The Dockerfile step it is, if it is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<StepPosition>,
    },
    /// The vertex's result came from the build cache; it did not run.
    Cached {
        /// Vertex number.
        id: u64,
    },
    /// The vertex finished successfully.
    Finished {
        /// Vertex number.
        id: u64,
    },
    /// The vertex failed.
    Errored {
        /// Vertex number.
        id: u64,
        /// The error, as the user will see it.
        message: String,
    },
    /// One line of a running step's output (without its newline).
    Log {
        /// Vertex number.
        id: u64,
        /// Stdout or stderr.
        stream: LogStream,
        /// The line.
        text: String,
    },
    /// A short status line about a vertex's progress (`naming to docker.io/library/app done`).
    Status {
        /// Vertex number.
        id: u64,
        /// The status text.
        text: String,
    },
    /// Bytes moved for one blob of a vertex: a layer pulled, pushed or compressed. Sent
    /// repeatedly as the transfer goes on (at most a few times a second per blob), and once
    /// more with `current == total` when it ends.
    Bytes {
        /// Vertex number the transfer belongs to.
        id: u64,
        /// What is being done to the bytes.
        action: ByteAction,
        /// The blob's name as users see it: its digest (`sha256:…`), or a path.
        name: String,
        /// Bytes done so far.
        current: u64,
        /// Total bytes, when known in advance.
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// Why a step was not taken from the cache (sent before it runs), e.g.
    /// `file app/main.go changed`, `build arg VERSION changed`, `base image changed`,
    /// `no earlier build of this step`.
    CacheMiss {
        /// Vertex number.
        id: u64,
        /// The input that changed, in words.
        reason: String,
    },
    /// Something the user should hear about that does not stop the build.
    Warning {
        /// The warning text.
        message: String,
    },
}

impl Event {
    /// The vertex this event is about, if any.
    pub fn vertex(&self) -> Option<u64> {
        match self {
            Event::Started { id, .. }
            | Event::Cached { id }
            | Event::Finished { id }
            | Event::Errored { id, .. }
            | Event::Log { id, .. }
            | Event::Status { id, .. }
            | Event::Bytes { id, .. }
            | Event::CacheMiss { id, .. } => Some(*id),
            Event::Warning { .. } => None,
        }
    }
}

/// Receives a build's events; called from several stage threads at once.
pub trait Reporter: Send + Sync {
    /// Handles one event. Must not block for long: the build waits on it.
    fn event(&self, event: Event);
}

/// A reporter that drops every event (library callers that do not show progress).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Reporter for Discard {
    fn event(&self, _event: Event) {}
}

/// A reporter that keeps every event, in order (for callers that inspect them afterwards).
#[derive(Debug, Default)]
pub struct Collect {
    events: std::sync::Mutex<Vec<Event>>,
}

impl Collect {
    /// The events received so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }
}

impl Reporter for Collect {
    fn event(&self, event: Event) {
        self.events.lock().expect("events lock").push(event);
    }
}

/// The `[name k/n] ` prefix BuildKit puts before a step's instruction text.
pub fn step_prefix(pos: &StepPosition) -> String {
    match &pos.stage_name {
        Some(n) => format!("[{n} {}/{}]", pos.index, pos.total),
        None => format!("[{}/{}]", pos.index, pos.total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_serializes_with_kind_tag() {
        let e = Event::Started {
            id: 3,
            name: "[build 2/4] RUN make".into(),
            step: Some(StepPosition {
                stage: 1,
                stage_name: Some("build".into()),
                index: 2,
                total: 4,
                line: 7,
            }),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "started");
        assert_eq!(v["id"], 3);
        assert_eq!(v["step"]["stage_name"], "build");
        assert_eq!(v["step"]["index"], 2);
        let log = Event::Log {
            id: 3,
            stream: LogStream::Stderr,
            text: "hi".into(),
        };
        assert_eq!(serde_json::to_value(&log).unwrap()["stream"], "stderr");
        assert_eq!(log.vertex(), Some(3));
        assert_eq!(
            Event::Warning {
                message: "w".into()
            }
            .vertex(),
            None
        );
    }

    #[test]
    fn prefix_with_and_without_stage_name() {
        let mut p = StepPosition {
            stage: 0,
            stage_name: None,
            index: 2,
            total: 3,
            line: 2,
        };
        assert_eq!(step_prefix(&p), "[2/3]");
        p.stage_name = Some("stage-0".into());
        assert_eq!(step_prefix(&p), "[stage-0 2/3]");
    }

    #[test]
    fn collect_keeps_order() {
        let c = Collect::default();
        c.event(Event::Finished { id: 1 });
        c.event(Event::Cached { id: 2 });
        assert_eq!(
            c.events(),
            vec![Event::Finished { id: 1 }, Event::Cached { id: 2 }]
        );
    }
}
