//! The target stage's result as an OCI image: config with times, rootfs and history that match
//! the layers actually written, and a manifest, all stored as blobs.

use super::{BuildResult, Shared, SolveError, StageOutput};
use crate::image::ImageManifest;
use crate::plan::StageDispatch;

/// Formats Unix seconds as RFC 3339 UTC (`2023-11-14T22:13:20Z`), as Go's `time.RFC3339Nano`
/// does for whole seconds.
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Writes the target's config and manifest into the store.
///
/// Times follow BuildKit so that a build served from a cache reproduces the image digest:
/// a step that added a layer gets the time that layer was first built (recorded in its cache
/// entry), a config-only step the time of the newest layer before it (else the base image's
/// last history time, else the build's start), and the config `created` the last history
/// time. `SOURCE_DATE_EPOCH` overrides them all.
pub(crate) fn assemble(
    shared: &Shared<'_>,
    dispatch: &StageDispatch,
    out: &StageOutput,
) -> Result<BuildResult, SolveError> {
    let build_time = format_rfc3339(shared.start_time);
    let epoch = shared.epoch.map(format_rfc3339);
    let mut config = dispatch.config.clone();
    config.rootfs.diff_ids = out.diff_ids.clone();
    for (k, v) in &shared.request.labels {
        config.config.labels.insert(k.clone(), v.clone());
    }
    let first_new = dispatch.first_new_history.min(config.history.len());
    let new_layers = out.produced.iter().filter(|p| **p).count();
    let base_layers = &out.layers[..out.layers.len().saturating_sub(new_layers)];
    fill_base_times(
        shared,
        &mut config.history[..first_new],
        base_layers,
        &epoch,
    );
    let base_time = config.history[..first_new]
        .iter()
        .rev()
        .find_map(|h| h.created.clone());
    let mut layers = out.layers[out.layers.len().saturating_sub(new_layers)..].iter();
    let mut newest: Option<i64> = None;
    let new = &mut config.history[first_new..];
    for (entry, (step, produced)) in new.iter_mut().zip(dispatch.steps.iter().zip(&out.produced)) {
        // A step that changed nothing adds no layer (BuildKit drops empty layers too).
        entry.empty_layer = step.empty_layer || !produced;
        if *produced && let Some(layer) = layers.next() {
            let t = shared
                .cache
                .created_of(&layer.digest)
                .unwrap_or(shared.start_time);
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
        let time = match (&epoch, newest, &base_time) {
            (Some(e), _, _) => e.clone(),
            (None, Some(t), _) => format_rfc3339(t),
            (None, None, Some(b)) => b.clone(),
            (None, None, None) => build_time.clone(),
        };
        entry.created = Some(time);
    }
    config.created = Some(match (&epoch, config.history.last()) {
        (Some(e), _) => e.clone(),
        (None, Some(h)) => h.created.clone().unwrap_or(build_time),
        (None, None) => build_time,
    });
    let config_desc = shared.store.put_config(&config)?;
    let manifest = ImageManifest::new_oci(config_desc.clone(), out.layers.clone());
    let manifest_desc = shared.store.put_manifest(&manifest)?;
    Ok(BuildResult {
        manifest: manifest_desc,
        config_digest: config_desc.digest,
        config,
        warnings: Vec::new(),
        layers: out.layers.clone(),
        vertices: 0,
        cache_exports: Vec::new(),
    })
}

/// Gives times to base history entries that have none: those of a stage built on another
/// stage of this build (whose steps were never given times). Layer entries take their layer's
/// cache time, the others the time before them, so such images are reproducible too. Only
/// done when the entries line up with the base layers one to one.
fn fill_base_times(
    shared: &Shared<'_>,
    history: &mut [crate::image::History],
    base_layers: &[crate::image::Descriptor],
    epoch: &Option<String>,
) {
    if history.iter().all(|h| h.created.is_some())
        || history.iter().filter(|h| !h.empty_layer).count() != base_layers.len()
    {
        return;
    }
    let mut layers = base_layers.iter();
    let mut last: Option<String> = None;
    for entry in history {
        let layer = if entry.empty_layer {
            None
        } else {
            layers.next()
        };
        if entry.created.is_none() {
            entry.created = epoch.clone().or_else(|| {
                layer
                    .and_then(|l| shared.cache.created_of(&l.digest))
                    .map(format_rfc3339)
                    .or_else(|| last.clone())
            });
        }
        if entry.created.is_some() {
            last = entry.created.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
