//! `type=oci`: an OCI image layout, as a tar archive (default) or a directory (`tar=false`).
//! `index.json` gets one entry per image name, carrying `io.containerd.image.name` (the full
//! name) and `org.opencontainers.image.ref.name` (the tag), as BuildKit and containerd write.

use std::io::Write;

use super::Error;
use super::layout::{LayoutSink, collect_blobs};
use crate::image::{Descriptor, ImageIndex, to_canonical_json};
use crate::registry::Reference;
use crate::store::Store;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";

/// Writes `target` and everything it references as an OCI layout into `sink`.
pub(crate) fn write_oci_layout<W: Write>(
    store: &Store,
    target: &Descriptor,
    names: &[String],
    sink: &mut LayoutSink<W>,
) -> Result<(), Error> {
    for digest in collect_blobs(store, target)? {
        sink.put_blob(store, &digest)?;
    }
    sink.put_file("oci-layout", OCI_LAYOUT)?;
    let index = ImageIndex::new_oci(index_entries(target, names));
    let (bytes, _) = to_canonical_json(&index).map_err(|source| Error::Json {
        what: "index.json",
        source,
    })?;
    sink.put_file("index.json", &bytes)
}

/// One index.json entry per name (or one bare entry when there are no names).
pub(crate) fn index_entries(target: &Descriptor, names: &[String]) -> Vec<Descriptor> {
    if names.is_empty() {
        return vec![target.clone()];
    }
    names
        .iter()
        .map(|name| {
            let mut d = target.clone();
            d.annotations.insert(IMAGE_NAME.to_string(), name.clone());
            let tag = Reference::parse(name)
                .ok()
                .and_then(|r| r.digest().is_none().then(|| r.tag().map(str::to_string)))
                .flatten();
            if let Some(tag) = tag {
                d.annotations.insert(REF_NAME.to_string(), tag);
            }
            d
        })
        .collect()
}
