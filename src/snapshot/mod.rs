//! Filesystem snapshots: unpacked base layers, overlay mounts for RUN steps, and diffs of what a step changed.

mod nsjob;

pub(crate) use nsjob::{NsJob, run_ns_job};
