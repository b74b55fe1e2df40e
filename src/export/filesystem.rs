//! `type=local` and `type=tar`: the image's final filesystem (all layers applied, whiteouts
//! resolved) as a directory or as one tar stream, like BuildKit's local and tar exporters.

use std::io::Write;
use std::path::Path;

use super::Error;
use crate::image::{Descriptor, Platform};
use crate::layer::{ApplyOptions, Compression, EntryOptions, LayerWriter, apply, write_dir_tree};
use crate::store::Store;

/// Applies every layer of `target` (narrowed to `platform` if it is an index) onto `dest`.
pub(crate) fn write_local(
    store: &Store,
    target: &Descriptor,
    platform: Option<&Platform>,
    dest: &Path,
) -> Result<(), Error> {
    let image = store.read_image(&target.digest, platform)?;
    std::fs::create_dir_all(dest).map_err(|e| Error::io("create directory", dest, e))?;
    let options = ApplyOptions::default();
    for layer in &image.manifest.layers {
        let blob = store.open_blob(&layer.digest)?;
        apply(blob, dest, &options).map_err(|source| Error::Layer {
            digest: layer.digest.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes the final filesystem of `target` as an uncompressed tar into `out`. The layers are
/// applied into a store scratch directory first, then walked in sorted order.
pub(crate) fn write_tar<W: Write>(
    store: &Store,
    target: &Descriptor,
    platform: Option<&Platform>,
    out: W,
) -> Result<W, Error> {
    let scratch = store.scratch_dir("export-tar-")?;
    let rootfs = scratch.path().join("rootfs");
    write_local(store, target, platform, &rootfs)?;
    let tar_err = |source| Error::Layer {
        digest: target.digest.clone(),
        source,
    };
    let mut writer = LayerWriter::new(out, Compression::Uncompressed).map_err(tar_err)?;
    write_dir_tree(
        &mut writer,
        &rootfs,
        Path::new(""),
        &EntryOptions::default(),
    )
    .map_err(tar_err)?;
    let summary = writer.finish().map_err(tar_err)?;
    Ok(summary.sink)
}
