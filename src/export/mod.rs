//! Exporters: turn an image in the store into the `--output` the user asked for.
//!
//! [`OutputSpec::parse`] reads buildx `-o` syntax; [`export`] runs one spec: `type=image`
//! names the image in the local store (pushing is the caller's job, through
//! `crate::registry::push`, when [`OutputSpec::push`] is set), `type=oci`/`type=docker` write an
//! OCI layout / docker-archive (tar or directory), `type=local`/`type=tar` write the final
//! filesystem. Media type conversion and forced recompression happen first
//! ([`convert_image`]), so every sink sees the same, final digests.

mod convert;
mod docker;
mod filesystem;
mod layout;
mod oci;
mod spec;

use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use convert::{ConvertOptions, convert_image};
pub use spec::{Destination, OutputKind, OutputSpec};

use crate::image::{Descriptor, Platform};
use crate::layer::LayerError;
use crate::store::{self, Store};
use layout::LayoutSink;

/// What can go wrong while parsing an output spec or exporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed `--output` value.
    #[error("invalid --output {spec:?}: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A BuildKit option rbuild does not implement.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// Reading the image from the store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A layer could not be read, recompressed or applied.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer blob.
        digest: crate::image::Digest,
        /// The layer module's error.
        #[source]
        source: LayerError,
    },
    /// A file operation on the destination failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the output stream failed (stdout closed, disk full...).
    #[error("writing {what} failed: {source}")]
    Write {
        /// Which part of the output.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Generated JSON could not be serialised.
    #[error("cannot serialise {what}: {source}")]
    Json {
        /// Which file.
        what: &'static str,
        /// The serialiser error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs one output spec for the image or index `target` (already in `store`). `names` are
/// fully normalised image names (`-t` tags merged with `name=`); `platform` picks the image from
/// an index for the sinks that need a single image (docker, local, tar; default: host).
/// Returns the descriptor of what was exported (new digest if media types or compression
/// changed).
pub fn export(
    store: &Store,
    target: &Descriptor,
    names: &[String],
    platform: Option<&Platform>,
    spec: &OutputSpec,
) -> Result<Descriptor, Error> {
    // Blobs must not be pruned while they are read or rewritten, nor before the image is named.
    let _gc_guard = store.gc_guard()?;
    let prepare = || {
        let opts = ConvertOptions {
            oci_mediatypes: spec.oci_mediatypes,
            force_compression: spec.force_compression.then_some(spec.compression),
        };
        convert_image(store, target, &opts)
    };
    match spec.kind {
        OutputKind::Image => {
            let desc = prepare()?;
            if names.is_empty() {
                store.put_unnamed_image(&desc.digest)?;
            }
            for name in names {
                store.put_image(name, &desc.digest)?;
            }
            Ok(desc)
        }
        OutputKind::Oci => {
            let desc = prepare()?;
            write_layout(spec, |sink| {
                oci::write_oci_layout(store, &desc, names, sink)
            })?;
            Ok(desc)
        }
        OutputKind::Docker => {
            let desc = prepare()?;
            write_layout(spec, |sink| {
                docker::write_docker_archive(store, &desc, names, platform, sink).map(|_| ())
            })?;
            Ok(desc)
        }
        OutputKind::Local => {
            let dest = match &spec.dest {
                Some(Destination::Path(p)) => p,
                _ => unreachable!("OutputSpec::parse requires a directory for type=local"),
            };
            filesystem::write_local(store, target, platform, dest)?;
            Ok(target.clone())
        }
        OutputKind::Tar => {
            with_output_file(spec, |out| {
                filesystem::write_tar(store, target, platform, out).map(|_| ())
            })?;
            Ok(target.clone())
        }
    }
}

/// Opens the layout sink the spec asks for (tar file, stdout tar, or directory) and runs `f`.
fn write_layout(
    spec: &OutputSpec,
    f: impl FnOnce(&mut LayoutSink<&mut dyn Write>) -> Result<(), Error>,
) -> Result<(), Error> {
    if !spec.tar {
        let Some(Destination::Path(dir)) = &spec.dest else {
            unreachable!("OutputSpec::parse requires a directory for tar=false");
        };
        let mut sink = LayoutSink::dir(dir)?;
        return f(&mut sink);
    }
    with_output_file(spec, |out| {
        let mut sink = LayoutSink::tar(out)?;
        f(&mut sink)?;
        sink.finish()?;
        Ok(())
    })
}

/// Runs `f` with a writer on the destination: stdout, or a temp file next to the destination
/// path that is fsynced and renamed into place only when `f` succeeds.
fn with_output_file(
    spec: &OutputSpec,
    f: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<(), Error> {
    match &spec.dest {
        Some(Destination::Path(path)) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let temp = tempfile::Builder::new()
                .prefix(".rbuild-export-")
                .tempfile_in(dir)
                .map_err(|e| Error::io("create temp file in", dir, e))?;
            let mut out = BufWriter::new(temp);
            f(&mut out)?;
            let temp = out.into_inner().map_err(|e| Error::Write {
                what: "output file",
                source: e.into_error(),
            })?;
            temp.as_file()
                .sync_all()
                .map_err(|e| Error::io("fsync", temp.path(), e))?;
            // Temp files start at 0600; an exported archive is an ordinary output file.
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io("chmod", temp.path(), e))?;
            temp.persist(path)
                .map_err(|e| Error::io("rename into", path, e.error))?;
            Ok(())
        }
        Some(Destination::Stdout) => {
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            f(&mut out)?;
            out.flush().map_err(|source| Error::Write {
                what: "stdout",
                source,
            })
        }
        None => Err(Error::Spec {
            spec: spec.kind.to_string(),
            reason: "dest= is required".into(),
        }),
    }
}
