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
pub(crate) fn assemble(
    shared: &Shared<'_>,
    dispatch: &StageDispatch,
    out: &StageOutput,
) -> Result<BuildResult, SolveError> {
    let created = format_rfc3339(shared.epoch.unwrap_or(shared.start_time));
    let mut config = dispatch.config.clone();
    config.created = Some(created.clone());
    config.rootfs.diff_ids = out.diff_ids.clone();
    for (k, v) in &shared.request.labels {
        config.config.labels.insert(k.clone(), v.clone());
    }
    let new = &mut config.history[dispatch.first_new_history..];
    for (entry, (step, produced)) in new.iter_mut().zip(dispatch.steps.iter().zip(&out.produced)) {
        entry.created = Some(created.clone());
        // A step that changed nothing adds no layer (BuildKit drops empty layers too).
        entry.empty_layer = step.empty_layer || !produced;
    }
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
    })
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
