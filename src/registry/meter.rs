//! Byte progress of blob transfers: each download or upload task owns a [`Meter`] that sends
//! throttled ticks over a channel, and the pull or push future forwards them to the caller's
//! [`Reporter`] as [`Event::Bytes`]. The channel keeps the reporter (a borrowed `&dyn`) out
//! of the spawned transfer tasks, which must be `'static`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::progress::{ByteAction, Event, Reporter};

/// At most one tick per blob this often (plus the final one): about 4 a second.
const INTERVAL: Duration = Duration::from_millis(250);

/// Where a pull or push reports the bytes it moves: `reporter`, under vertex `vertex`.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    /// Receives one [`Event::Bytes`] per tick.
    pub reporter: &'a dyn Reporter,
    /// The vertex the transfers belong to (the FROM step, the exporting step...).
    pub vertex: u64,
}

impl Progress<'static> {
    /// Progress that goes nowhere.
    pub fn none() -> Progress<'static> {
        Progress {
            reporter: &crate::progress::Discard,
            vertex: 0,
        }
    }
}

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("vertex", &self.vertex)
            .finish_non_exhaustive()
    }
}

/// One progress report of one blob.
#[derive(Debug)]
pub(crate) struct Tick {
    name: String,
    current: u64,
    total: u64,
}

/// The sending half given to transfer tasks; `None` when nobody listens.
pub(crate) type Ticks = Option<UnboundedSender<Tick>>;

/// Counts one blob's bytes and sends throttled ticks.
#[derive(Debug)]
pub(crate) struct Meter {
    tx: Ticks,
    name: String,
    total: u64,
    /// Bytes done and when the last tick went out.
    state: Mutex<(u64, Option<Instant>)>,
}

impl Meter {
    /// A meter for blob `name` of `total` bytes.
    pub(crate) fn new(tx: &Ticks, name: String, total: u64) -> Meter {
        Meter {
            tx: tx.clone(),
            name,
            total,
            state: Mutex::new((0, None)),
        }
    }

    /// Sets the bytes done (a resumed transfer may move it back or forward).
    pub(crate) fn set(&self, current: u64) {
        let mut st = self.state.lock().expect("meter lock");
        st.0 = current;
        let due = st.1.is_none_or(|t| t.elapsed() >= INTERVAL);
        if due && self.tx.is_some() {
            st.1 = Some(Instant::now());
            self.send(current);
        }
    }

    /// Adds `n` bytes done.
    pub(crate) fn add(&self, n: u64) {
        let current = self.state.lock().expect("meter lock").0 + n;
        self.set(current);
    }

    /// The transfer is complete: one last tick with every byte done.
    pub(crate) fn finish(&self) {
        self.state.lock().expect("meter lock").0 = self.total;
        self.send(self.total);
    }

    fn send(&self, current: u64) {
        if let Some(tx) = &self.tx {
            // The receiver only goes away when the pull or push is over.
            let _ = tx.send(Tick {
                name: self.name.clone(),
                current: current.min(self.total),
                total: self.total,
            });
        }
    }
}

/// Runs the transfer that `work` builds around a tick sender, forwarding its ticks to
/// `progress` as [`Event::Bytes`] with `action` while it runs. Every tick is delivered
/// before this returns.
pub(crate) async fn forwarding<T, F>(
    progress: Progress<'_>,
    action: ByteAction,
    work: impl FnOnce(Ticks) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let (tx, mut rx) = unbounded_channel::<Tick>();
    let emit = |t: Tick| {
        progress.reporter.event(Event::Bytes {
            id: progress.vertex,
            action,
            name: t.name,
            current: t.current,
            total: Some(t.total),
        })
    };
    let work = work(Some(tx));
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            Some(t) = rx.recv() => emit(t),
        }
    };
    // Tasks that sent their last tick just before `work` finished.
    while let Ok(t) = rx.try_recv() {
        emit(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Collect;

    #[tokio::test]
    async fn ticks_are_throttled_and_end_with_the_total() {
        let collect = Collect::default();
        let progress = Progress {
            reporter: &collect,
            vertex: 7,
        };
        forwarding(progress, ByteAction::Pull, |tx| async move {
            let m = Meter::new(&tx, "sha256:ab".into(), 1000);
            // A burst: only the first tick of it passes the throttle.
            for _ in 0..100 {
                m.add(5);
            }
            tokio::time::sleep(INTERVAL + Duration::from_millis(20)).await;
            m.add(500);
            m.finish();
        })
        .await;
        let seen: Vec<(u64, Option<u64>)> = collect
            .events()
            .into_iter()
            .map(|e| match e {
                Event::Bytes {
                    id,
                    action,
                    name,
                    current,
                    total,
                } => {
                    assert_eq!(
                        (id, action, name.as_str()),
                        (7, ByteAction::Pull, "sha256:ab")
                    );
                    (current, total)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![(5, Some(1000)), (1000, Some(1000)), (1000, Some(1000))]
        );
    }

    #[tokio::test]
    async fn no_listener_costs_nothing() {
        let m = Meter::new(&None, "x".into(), 10);
        m.add(3);
        m.finish();
        assert_eq!(m.state.lock().unwrap().0, 10);
    }
}
