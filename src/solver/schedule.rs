//! Scheduling: every needed stage runs as soon as the stages it needs are done, independent
//! stages in parallel on scoped threads (at most `--jobs` at once), each from its base's layers
//! and cache key. Builds (and stages) that reach the same cache key at once share the work:
//! the first takes the key's lock file under `<root>/cache/locks/` and runs the step, the
//! others wait for it and then find its result in the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fs4::fs_std::FileExt;

use super::cache;
use super::stage::StageBuilder;
use super::{Shared, SolveError, StageOutput};
use crate::exec::CancelHandle;
use crate::image::Digest;
use crate::plan::{Op, Plan, Source, StageDispatch};
use crate::store::Store;

/// The sandboxes of this build's running RUN steps, so the first failure can stop them. Kept
/// per build, not only in the process-wide list Ctrl-C uses: a library caller may run two
/// builds in one process, and one failing must not kill the other's steps.
#[derive(Default)]
pub(crate) struct Sandboxes {
    /// Set once [`Sandboxes::stop_all`] ran: sandboxes started later are stopped at once.
    stopped: AtomicBool,
    next: AtomicU64,
    running: Mutex<Vec<(u64, CancelHandle)>>,
}

/// One tracked sandbox; leaves the build's list when dropped (after its run returned).
pub(crate) struct TrackedSandbox<'a> {
    owner: &'a Sandboxes,
    id: u64,
    handle: CancelHandle,
}

impl Sandboxes {
    /// A handle for a sandbox about to start, already cancelled when the build was stopped.
    pub(crate) fn track(&self) -> TrackedSandbox<'_> {
        let handle = CancelHandle::new();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `stop_all` takes, so no sandbox slips between its flag and
        // its walk of the list.
        if self.stopped.load(Ordering::SeqCst) {
            handle.cancel();
        }
        running.push((id, handle.clone()));
        TrackedSandbox {
            owner: self,
            id,
            handle,
        }
    }

    /// Kills every running sandbox of this build (SIGKILL to its helper, which holds the
    /// step's PID namespace: every process in it dies, and its mounts go with its mount
    /// namespace) and every one started from now on. Each run then returns
    /// [`crate::exec::Error::Cancelled`] once its helper is reaped; the owners clean up.
    pub(crate) fn stop_all(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::SeqCst);
        for (_, h) in running.iter() {
            h.cancel();
        }
    }
}

impl TrackedSandbox<'_> {
    /// The handle to give [`crate::exec::run_cancellable`].
    pub(crate) fn handle(&self) -> &CancelHandle {
        &self.handle
    }
}

impl Drop for TrackedSandbox<'_> {
    fn drop(&mut self) {
        self.owner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}

impl Shared<'_> {
    /// Marks the build failed: other stages start no further step, and RUN steps running in
    /// them are killed (they end as [`SolveError::Canceled`]).
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.sandboxes.stop_all();
    }

    /// Whether a stage of this build failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A held in-flight lock on one cache key; released when dropped.
pub(crate) struct StepLock {
    file: File,
}

impl Drop for StepLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

/// Waits until no other build or stage is running the step with cache key `key`, then holds
/// its lock. Lock files are never removed while rbuild runs: deleting one another process has
/// open would let a third process lock a fresh file and run the step twice.
///
/// While another build holds it, this polls instead of blocking, so that `stop` (this build
/// failed elsewhere, or was interrupted) ends the wait with `Err(SolveError::Canceled)`.
pub(crate) fn lock_step(
    store: &Store,
    key: &Digest,
    line: usize,
    stop: &dyn Fn() -> bool,
) -> Result<StepLock, SolveError> {
    let dir = store
        .dir()
        .parent()
        .unwrap_or(store.dir())
        .join("cache")
        .join("locks");
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| SolveError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(key.hex());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    let free = match FileExt::try_lock_exclusive(&file) {
        Ok(free) => free,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => return Err(io(&path)(e)),
    };
    if !free {
        tracing::info!("waiting for another build running the same step ({key})");
        loop {
            if stop() {
                return Err(SolveError::Canceled {
                    line,
                    reason: "stopped while waiting for another build running the same step".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            match FileExt::try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
    Ok(StepLock { file })
}

/// Stages whose files a later needed stage reads (`COPY --from`, `RUN --mount from=`).
fn stages_read_from(dispatched: &BTreeMap<usize, StageDispatch>) -> BTreeSet<usize> {
    let mut read = BTreeSet::new();
    for d in dispatched.values() {
        for step in &d.steps {
            match &step.op {
                Op::Copy(c) => {
                    if let Source::Stage(i) = c.from {
                        read.insert(i);
                    }
                }
                Op::Run(r) => read.extend(r.mount_sources.iter().filter_map(|s| match s {
                    Source::Stage(i) => Some(*i),
                    _ => None,
                })),
                _ => {}
            }
        }
    }
    read
}

/// Runs every needed stage as soon as the stages it needs are done, at most `--jobs` at once
/// on scoped threads (a pool, not waves: a stage never waits for an unrelated one). The first
/// failure stops the build as BuildKit does: no new stage or step starts, RUN steps running in
/// other stages are killed ([`Shared::fail`]), and the first real error is returned (not the
/// cancellations it caused, whichever stage thread reports first).
pub(crate) fn run_waves(
    plan: &Plan,
    dispatched: &BTreeMap<usize, StageDispatch>,
    shared: &Shared<'_>,
) -> Result<(), SolveError> {
    let keep = stages_read_from(dispatched);
    // No limit by default, as BuildKit: stages mostly wait (on RUN processes, sleeps, the
    // network), so capping them at the CPU count serialized three `sleep 2` stages on a
    // 2-CPU machine (bench multistage: 6.0 s with 2 at once, 3.3 s with 3).
    let jobs = shared.request.jobs.unwrap_or(usize::MAX).max(1);
    let mut pending: Vec<usize> = plan.order.clone();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<StageOutput, SolveError>)>();
        let mut running = 0usize;
        let mut failure: Option<SolveError> = None;
        loop {
            if failure.is_none() {
                let done: BTreeSet<usize> = shared
                    .outputs
                    .lock()
                    .expect("outputs lock")
                    .keys()
                    .copied()
                    .collect();
                while running < jobs {
                    let Some(pos) = pending
                        .iter()
                        .position(|&i| plan.stages[i].deps.iter().all(|d| done.contains(d)))
                    else {
                        break;
                    };
                    let i = pending.remove(pos);
                    let keep_root = keep.contains(&i);
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            build_stage(shared, &dispatched[&i], keep_root)
                        }));
                        // The receiver outlives every stage thread of this scope; a panic is
                        // reported first so the loop never waits for a dead thread, then
                        // re-raised (the scope propagates it).
                        if !matches!(result, Ok(Ok(_))) {
                            shared.fail();
                        }
                        match result {
                            Ok(r) => {
                                let _ = tx.send((i, r));
                            }
                            Err(panic) => {
                                let _ = tx.send((
                                    i,
                                    Err(SolveError::Run {
                                        line: 0,
                                        message: "internal error: a stage thread panicked".into(),
                                    }),
                                ));
                                std::panic::resume_unwind(panic);
                            }
                        }
                    });
                    running += 1;
                }
            }
            if running == 0 {
                assert!(
                    failure.is_some() || pending.is_empty(),
                    "stage dependencies always point to earlier stages"
                );
                break;
            }
            let (i, result) = rx.recv().expect("a running stage thread reports back");
            running -= 1;
            match result {
                Ok(out) => {
                    shared.outputs.lock().expect("outputs lock").insert(i, out);
                }
                Err(e) => {
                    let canceled = |e: &SolveError| matches!(e, SolveError::Canceled { .. });
                    if failure
                        .as_ref()
                        .is_none_or(|f| canceled(f) && !canceled(&e))
                    {
                        failure = Some(e);
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    })
}

fn build_stage(
    shared: &Shared<'_>,
    d: &StageDispatch,
    keep_root: bool,
) -> Result<StageOutput, SolveError> {
    let base_layers = match &d.base {
        Source::Stage(p) => shared.outputs.lock().expect("outputs lock")[p]
            .layers
            .clone(),
        Source::Image(r) => shared.resolver.layers_of(r).unwrap_or_default(),
        Source::Context(_) | Source::Scratch | Source::MainContext => Vec::new(),
    };
    let base_diff_ids = match &d.base {
        Source::Stage(p) => shared.outputs.lock().expect("outputs lock")[p]
            .diff_ids
            .clone(),
        _ => d.config.rootfs.diff_ids.clone(),
    };
    if base_layers.len() != base_diff_ids.len() {
        return Err(SolveError::Unsupported {
            line: 0,
            what: format!(
                "a base image whose config lists {} diff_ids for {} layers",
                base_diff_ids.len(),
                base_layers.len()
            ),
        });
    }
    let platform = &shared.request.options.target_platform;
    let platform_text = format!(
        "{}/{}/{}",
        platform.os,
        platform.architecture,
        platform.variant.as_deref().unwrap_or("")
    );
    let base_key = match &d.base {
        Source::Stage(p) => shared.outputs.lock().expect("outputs lock")[p].key.clone(),
        Source::Image(r) => {
            let id = d
                .base_image
                .as_ref()
                .and_then(|i| i.manifest_digest.as_ref().map(|m| m.to_string()))
                .unwrap_or_else(|| r.clone());
            cache::key(&[
                ("image", id.as_bytes()),
                ("platform", platform_text.as_bytes()),
            ])
        }
        _ => cache::key(&[("scratch", b""), ("platform", platform_text.as_bytes())]),
    };
    let name = shared.plan_names.get(&d.index).cloned().flatten();
    let filtered = shared
        .request
        .no_cache_filter
        .contains(&d.index.to_string())
        || name.is_some_and(|n| {
            shared
                .request
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&n))
        });
    let use_cache = !shared.request.no_cache && !filtered;
    if let (Some(v), Source::Image(r)) = (shared.vertices.from(d.index), &d.base) {
        // The FROM step downloads the layers planning left on the registry.
        shared.resolver.run_from_step(shared, v, r, d.from_line)?;
    }
    let mut b = StageBuilder::new(shared, d, base_layers, base_key, use_cache);
    b.diff_ids = base_diff_ids;
    b.run(keep_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_cancels_running_and_later_sandboxes_only_of_this_build() {
        let (this, other) = (Sandboxes::default(), Sandboxes::default());
        let running = this.track();
        let unrelated = other.track();
        let finished = this.track();
        drop(finished);
        assert_eq!(
            this.running.lock().unwrap().len(),
            1,
            "a dropped sandbox leaves the list"
        );
        this.stop_all();
        assert!(running.handle().is_cancelled());
        assert!(
            !unrelated.handle().is_cancelled(),
            "another build is untouched"
        );
        let late = this.track();
        assert!(
            late.handle().is_cancelled(),
            "a sandbox started after the failure stops at once"
        );
    }
}
