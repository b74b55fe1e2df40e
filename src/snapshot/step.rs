//! A RUN step on an active snapshot, with its layer: on overlay snapshots the step and the
//! diff of its upper dir run in ONE sandbox helper (one re-exec, one user namespace, one pair
//! of `newuidmap`/`newgidmap` calls), and the layer streams through a pipe into the caller's
//! sink (the store's blob writer) while the helper writes it.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use super::nsjob::DiffReport;
use super::{Active, Backend, DiffSummary, Error, NsJob, Snapshotter};
use crate::exec::{self, CancelHandle, ExitStatus, RunSpec, Stream};
use crate::layer::Compression;

/// Where and how a step's layer is written.
pub struct LayerOutput<'a> {
    /// The layer's compression.
    pub compression: Compression,
    /// Clamp file times to this epoch (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// Receives the compressed layer blob (nothing when the step fails).
    pub sink: &'a mut (dyn Write + Send),
}

/// How a step ended and the layer it produced.
#[derive(Debug)]
pub struct StepOutcome {
    /// The step's exit status.
    pub status: ExitStatus,
    /// The layer written to the sink; `None` when the step did not exit with 0.
    pub layer: Option<DiffSummary>,
    /// `CLOCK_MONOTONIC` nanoseconds when the step's process ended.
    exited_ns: u64,
}

impl StepOutcome {
    /// Time since the step's process ended (for timing the layer production).
    pub fn since_exit(&self) -> Duration {
        Duration::from_nanos(exec::monotonic_ns().saturating_sub(self.exited_ns))
    }
}

impl Snapshotter {
    /// Runs `spec` (whose root is `active.root()`) and, when it exits with 0, writes its
    /// layer to `layer.sink`. A non-zero exit is `Ok` with no layer; a cancelled run is
    /// `Error::Exec(exec::Error::Cancelled)`.
    pub fn run_step(
        &self,
        active: &Active,
        spec: &RunSpec,
        cancel: &CancelHandle,
        on_output: &mut dyn FnMut(Stream, &[u8]),
        layer: LayerOutput<'_>,
    ) -> Result<StepOutcome, Error> {
        if active.backend == Backend::Copy {
            let status = exec::run_cancellable(spec, cancel, on_output)?;
            let exited_ns = exec::monotonic_ns();
            let layer = match status.success() {
                true => Some(self.diff_to(
                    active,
                    layer.compression,
                    layer.source_date_epoch,
                    layer.sink,
                )?),
                false => None,
            };
            return Ok(StepOutcome {
                status,
                layer,
                exited_ns,
            });
        }
        let upper = active.upper();
        let fail = |message: String| Error::Diff {
            upper: upper.clone(),
            message,
        };
        let (name, level) = super::compression_job_args(layer.compression);
        let job = NsJob::Diff {
            upper: upper.clone(),
            compression: name.into(),
            level,
            source_date_epoch: layer.source_date_epoch,
        };
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| fail(format!("creating a pipe for the layer: {e}")))?;
        let sink = layer.sink;
        let (ran, copied) = std::thread::scope(|scope| {
            let copier = scope.spawn(move || {
                let mut reader = std::io::BufReader::with_capacity(1 << 20, File::from(r));
                // On a failed write the reader is dropped, so the helper fails on EPIPE.
                std::io::copy(&mut reader, sink)
            });
            let ran = exec::run_then(spec, cancel, on_output, Some((job, w)));
            let copied = copier
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the layer copy thread panicked")));
            (ran, copied)
        });
        let ran = match (ran, copied) {
            (Ok(ran), Ok(_)) => ran,
            (Err(exec::Error::Cancelled), _) => return Err(exec::Error::Cancelled.into()),
            (Err(exec::Error::Sandbox(m)), Ok(_)) if m.starts_with(exec::AFTER_STEP) => {
                return Err(fail(m));
            }
            (Err(e), Ok(_)) => return Err(e.into()),
            (_, Err(e)) => return Err(fail(format!("storing the layer: {e}"))),
        };
        let layer = match ran.after {
            None => None,
            Some(v) => {
                let report: DiffReport =
                    serde_json::from_value(v).map_err(|e| fail(format!("bad diff report: {e}")))?;
                Some(DiffSummary {
                    diff_id: report.diff_id.parse().map_err(|e| fail(format!("{e}")))?,
                    uncompressed_size: report.uncompressed_size,
                })
            }
        };
        if ran.status.success() && layer.is_none() {
            return Err(fail("the helper wrote no layer".into()));
        }
        Ok(StepOutcome {
            status: ran.status,
            layer,
            exited_ns: ran.exited_ns,
        })
    }
}
