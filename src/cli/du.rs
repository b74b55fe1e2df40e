//! `rbuild du`: disk usage of an rbuild root like `docker buildx du`: images, build cache
//! layers, unreferenced blobs, unpacked snapshots and cache mounts, each with its size and
//! whether `rbuild prune` (or `prune --all`) reclaims it. Also the snapshot bookkeeping `prune`
//! shares: which unpacked layers still belong to an image or a cache entry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Globals;
use super::args::DuArgs;
use super::images::{human_duration, human_size};
use crate::store::tree_size;
use crate::store::{BlobOwner, Store};

/// One line of `du --verbose`.
struct Record {
    id: String,
    kind: &'static str,
    size: u64,
    reclaimable: bool,
    modified: SystemTime,
}

/// The kinds in the order the summary lists them.
const KINDS: [&str; 7] = [
    "image",
    "unnamed image",
    "build cache",
    "unreferenced",
    "snapshot",
    "cache mount",
    "cache metadata",
];

fn modified(path: &Path) -> SystemTime {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The unpacked layer directories under `<root>/snapshots/layers/`, by diff_id hex.
pub(super) fn snapshot_layers(root: &Path) -> Vec<(String, PathBuf)> {
    let dir = root.join("snapshots").join("layers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    out.sort();
    out
}

/// The diff_ids (hex) some image in the store or some build cache entry whose layer is still
/// stored needs: their unpacked snapshots are worth keeping.
pub(super) fn needed_snapshots(store: &Store, root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut keep = BTreeSet::new();
    for rec in store.list_images()? {
        // Index images: the host platform's manifest is the one builds unpack.
        if let Ok(img) = store.read_image(&rec.target.digest, None) {
            keep.extend(
                img.config
                    .rootfs
                    .diff_ids
                    .iter()
                    .map(|d| d.hex().to_string()),
            );
        }
    }
    // The build cache index (src/solver/cache.rs): JSON files with `layer` and `diff_id`.
    let index = root.join("cache").join("index-v1");
    if let Ok(entries) = std::fs::read_dir(&index) {
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let layer = v["layer"]["digest"].as_str().and_then(|d| d.parse().ok());
            if let (Some(layer), Some(diff_id)) = (layer, v["diff_id"].as_str())
                && store.has_blob(&layer)
            {
                keep.insert(diff_id.trim_start_matches("sha256:").to_string());
            }
        }
    }
    Ok(keep)
}

fn owner_kind(owner: BlobOwner) -> &'static str {
    match owner {
        BlobOwner::NamedImage => "image",
        BlobOwner::UnnamedImage => "unnamed image",
        BlobOwner::BuildCache => "build cache",
        BlobOwner::Unreferenced => "unreferenced",
    }
}

fn records(store: &Store, root: &Path) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for b in store.usage()? {
        out.push(Record {
            id: b
                .digest
                .map(|d| d.to_string())
                .unwrap_or_else(|| "(partial write)".into()),
            kind: owner_kind(b.owner),
            size: b.size,
            // Build cache layers go with `prune --all`; named images only with `rmi`.
            reclaimable: b.owner != BlobOwner::NamedImage,
            modified: b.modified,
        });
    }
    for (hex, path) in snapshot_layers(root) {
        out.push(Record {
            id: format!("sha256:{hex}"),
            kind: "snapshot",
            size: tree_size(&path),
            reclaimable: true,
            modified: modified(&path),
        });
    }
    // Cache index, cache-miss explanations and step locks: small, but they grow with use.
    let metadata = root.join("cache");
    if metadata.is_dir() {
        out.push(Record {
            id: metadata.display().to_string(),
            kind: "cache metadata",
            size: tree_size(&metadata),
            reclaimable: false,
            modified: modified(&metadata),
        });
    }
    for m in crate::solver::cache_mount_usage(root) {
        out.push(Record {
            // A `from=` cache's id carries its source after a NUL.
            id: m.id.replace('\0', " "),
            kind: "cache mount",
            size: m.size,
            // `rbuild prune --all` removes them, as `docker builder prune --all` does.
            reclaimable: true,
            modified: m.last_used,
        });
    }
    Ok(out)
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) => format!("{} ago", human_duration(d.as_secs_f64())),
        Err(_) => "just now".into(),
    }
}

fn print_rows(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `rbuild du [--verbose]`.
pub(super) fn du(args: DuArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    let records = records(&store, &globals.root)?;
    let mut rows = Vec::new();
    if args.verbose {
        rows.push(vec![
            "ID".to_string(),
            "TYPE".into(),
            "RECLAIMABLE".into(),
            "SIZE".into(),
            "LAST MODIFIED".into(),
        ]);
        for r in &records {
            rows.push(vec![
                r.id.clone(),
                r.kind.into(),
                r.reclaimable.to_string(),
                human_size(r.size),
                ago(r.modified),
            ]);
        }
    } else {
        rows.push(vec![
            "TYPE".to_string(),
            "COUNT".into(),
            "SIZE".into(),
            "RECLAIMABLE".into(),
        ]);
        for kind in KINDS {
            let of_kind: Vec<&Record> = records.iter().filter(|r| r.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            rows.push(vec![
                kind.to_string(),
                of_kind.len().to_string(),
                human_size(of_kind.iter().map(|r| r.size).sum()),
                human_size(
                    of_kind
                        .iter()
                        .filter(|r| r.reclaimable)
                        .map(|r| r.size)
                        .sum(),
                ),
            ]);
        }
    }
    if rows.len() > 1 {
        print_rows(&rows);
        println!();
    }
    let reclaimable: u64 = records
        .iter()
        .filter(|r| r.reclaimable)
        .map(|r| r.size)
        .sum();
    let total: u64 = records.iter().map(|r| r.size).sum();
    println!("Reclaimable:\t{}", human_size(reclaimable));
    println!("Total:\t\t{}", human_size(total));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_layers_lists_only_diff_id_directories() {
        let root = tempfile::tempdir().unwrap();
        let layers = root.path().join("snapshots/layers");
        let hex = "a".repeat(64);
        std::fs::create_dir_all(layers.join(&hex).join("fs")).unwrap();
        std::fs::write(layers.join(&hex).join("fs/f"), b"12345").unwrap();
        std::fs::create_dir_all(layers.join("not-a-layer")).unwrap();
        let found = snapshot_layers(root.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, hex);
        assert_eq!(tree_size(&found[0].1), 5);
    }
}
