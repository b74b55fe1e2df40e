//! `tracing` warnings shown through the running build's view: a [`ProgressWarnings`] layer
//! turns WARN events into [`Event::Warning`]s for the active [`super::Console`], so a tty view
//! stays clean and rawjson stays one JSON object per line. Before a build's view exists the CLI
//! may hold warnings ([`hold_warnings`]); the view shows them first when it is created.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::Render;
use crate::progress::Event;

/// Where `tracing` warnings go instead of straight to stderr (which would garble the tty view
/// and break rawjson's one-object-per-line promise).
#[derive(Default)]
struct WarningRoute {
    /// The renderer of the build running now, and when that build started.
    active: Option<(Weak<dyn Render>, Instant)>,
    /// Set by the CLI before a build's view exists: warnings wait here for it.
    hold: bool,
    held: Vec<String>,
}

static WARNINGS: Mutex<WarningRoute> = Mutex::new(WarningRoute {
    active: None,
    hold: false,
    held: Vec::new(),
});

fn route() -> MutexGuard<'static, WarningRoute> {
    // A panic while holding the lock leaves plain data; keep using it.
    WARNINGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps warnings logged from now on until a build's view is created (which shows them
/// first) or [`release_held_warnings`] prints them.
pub(in crate::cli) fn hold_warnings() {
    route().hold = true;
}

/// Whether a warning logged now would go through [`warning`] rather than to stderr.
pub(in crate::cli) fn warnings_routed() -> bool {
    let r = route();
    r.hold || r.active.as_ref().is_some_and(|(w, _)| w.strong_count() > 0)
}

/// Shows a logged warning in the running build's view (as [`Event::Warning`]), or keeps it
/// while warnings are held. Returns false when neither applies (the caller prints it).
fn warning(message: String) -> bool {
    let mut r = route();
    if let Some((render, start)) = r
        .active
        .as_ref()
        .and_then(|(w, s)| Some((w.upgrade()?, *s)))
    {
        drop(r);
        render.event(&Event::Warning { message }, start.elapsed());
        return true;
    }
    if r.hold {
        r.held.push(message);
        return true;
    }
    false
}

/// Stops holding warnings and returns those no build view took (to print at exit).
pub(in crate::cli) fn release_held_warnings() -> Vec<String> {
    let mut r = route();
    r.hold = false;
    std::mem::take(&mut r.held)
}

/// Makes `render` the view warnings go to; returns the warnings held until now.
pub(super) fn attach(render: &Arc<dyn Render>, start: Instant) -> Vec<String> {
    let mut r = route();
    r.active = Some((Arc::downgrade(render), start));
    r.hold = false;
    std::mem::take(&mut r.held)
}

/// Stops sending warnings to `render` (its build is over).
pub(super) fn detach(render: &Arc<dyn Render>) {
    let mut r = route();
    let ours = r
        .active
        .as_ref()
        .is_some_and(|(w, _)| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(render)));
    if ours {
        r.active = None;
    }
}

/// A `tracing` layer that sends WARN events to the build's view while one is routed (the
/// CLI's stderr formatter skips those same events then, see [`warnings_routed`]).
pub(in crate::cli) struct ProgressWarnings;

impl<S: Subscriber> Layer<S> for ProgressWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != Level::WARN || !warnings_routed() {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let message = text.finish();
        if !warning(message.clone()) {
            // The build's view went away between the check and now.
            eprintln!("WARNING: {message}");
        }
    }
}

/// The event's message followed by its other fields as `name=value`, as the stderr
/// formatter writes them.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Event;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    /// Keeps the warnings it is shown.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Render for Seen {
        fn event(&self, event: &Event, _: Duration) {
            if let Event::Warning { message } = event {
                self.0.lock().unwrap().push(message.clone());
            }
        }
        fn summary(&self, _: &super::super::Summary) {}
    }

    #[test]
    fn warn_events_reach_the_attached_view_held_ones_first() {
        let subscriber = tracing_subscriber::registry().with(ProgressWarnings);
        tracing::subscriber::with_default(subscriber, || {
            hold_warnings();
            tracing::warn!(path = "/x", "held until the view exists");
            let seen = Arc::new(Seen::default());
            let render: Arc<dyn Render> = seen.clone();
            let held = attach(&render, Instant::now());
            assert_eq!(held, ["held until the view exists path=\"/x\""]);
            tracing::warn!("skipping socket {}", "a.sock");
            tracing::info!("not a warning");
            assert_eq!(*seen.0.lock().unwrap(), ["skipping socket a.sock"]);
            detach(&render);
            assert!(!warnings_routed());
            assert!(release_held_warnings().is_empty());
        });
    }
}
