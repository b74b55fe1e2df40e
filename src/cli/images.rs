//! Local store commands: `images`, `inspect`, `tag`, `rmi`, `prune`, printing what docker
//! prints. Names are normalised through [`crate::registry::Reference`] before they reach the
//! store, and shown in docker's short form.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde::Serialize;

use super::args::{ImagesArgs, InspectArgs, PruneArgs, RmiArgs, TagArgs};
use super::{CliError, Globals};
use crate::image::{AnyManifest, Descriptor, Digest, ImageConfig, RuntimeConfig, parse_rfc3339};
use crate::registry::Reference;
use crate::store::{self, ImageRecord, PruneOptions, Store};

/// Finds an image by (normalised) name, by `name@digest`, or by ID / digest / ID prefix.
fn resolve(store: &Store, input: &str) -> anyhow::Result<ImageRecord> {
    if let Ok(r) = Reference::parse(input) {
        if let Some(d) = r.digest() {
            return Ok(store.resolve(&d.to_string())?);
        }
        match store.resolve(&r.to_string()) {
            Ok(rec) => return Ok(rec),
            Err(store::Error::ImageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.resolve(input).map_err(|e| match e {
        store::Error::ImageNotFound(_) => anyhow::anyhow!("No such image: {input}"),
        e => e.into(),
    })
}

/// `(repository, tag)` in docker's short form; `<none>` for unnamed images.
fn repo_tag(rec: &ImageRecord) -> (String, String) {
    match rec.name.as_deref().map(Reference::parse) {
        Some(Ok(r)) => (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()),
        Some(Err(_)) => (rec.name.clone().unwrap_or_default(), "<none>".into()),
        None => ("<none>".into(), "<none>".into()),
    }
}

/// Sum of the blob sizes an image needs (manifests, configs, compressed layers).
fn image_size(store: &Store, rec: &ImageRecord) -> u64 {
    let mut seen = BTreeSet::new();
    let mut stack = vec![rec.target.digest.clone()];
    let mut total = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        total += store.blob_size(&d).unwrap_or(0);
        if let Ok(m) = store.read_manifest(&d) {
            stack.extend(m.children().into_iter().map(|c| c.digest.clone()));
        }
    }
    total
}

/// The config's `created` time, for a single image or the host's image of an index.
fn created_of(store: &Store, rec: &ImageRecord) -> Option<String> {
    store
        .read_image(&rec.target.digest, None)
        .ok()
        .and_then(|img| img.config.created)
}

/// `rbuild images`: `REPOSITORY TAG [DIGEST] IMAGE ID CREATED SIZE`, newest first; `-q` prints
/// only the short IDs.
pub(super) fn images(args: ImagesArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    let mut rows = Vec::new();
    for rec in store.list_images()? {
        let secs = created_of(&store, &rec).as_deref().and_then(parse_rfc3339);
        rows.push((secs, rec));
    }
    rows.sort_by(|a, b| {
        let (x, y) = (a.0.unwrap_or(f64::MIN), b.0.unwrap_or(f64::MIN));
        y.total_cmp(&x).then_with(|| a.1.name.cmp(&b.1.name))
    });
    if args.quiet {
        for (_, rec) in &rows {
            println!("{}", rec.id.short());
        }
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut table = vec![if args.digests {
        vec!["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    } else {
        vec!["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect()
    }];
    for (secs, rec) in &rows {
        let (repo, tag) = repo_tag(rec);
        let created = match secs {
            Some(s) => format!("{} ago", human_duration(now - s)),
            None => "N/A".to_string(),
        };
        let mut row = vec![repo, tag];
        if args.digests {
            row.push(rec.target.digest.to_string());
        }
        row.push(rec.id.short().to_string());
        row.push(created);
        row.push(human_size(image_size(&store, rec)));
        table.push(row);
    }
    print_table(&table);
    Ok(())
}

/// Prints columns padded like docker's tabwriter (3 spaces between columns).
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < cols {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `rbuild inspect IMAGE` prints a one-element JSON array shaped like `docker image inspect`:
/// `Id` (config digest, or index digest), `RepoTags`, `RepoDigests` (`name@manifest-digest`),
/// `Created`, `Author`, `Architecture`, `Variant`, `Os`, `Size` (stored bytes), `Config`
/// (the runtime config: Env, Cmd, Entrypoint, ...), `RootFS` (`Type`, `Layers` = diff IDs),
/// plus rbuild's own view: `Descriptor` (what the name points at), `Manifest` (the manifest or
/// index) and `ImageConfig` (the full config; absent for an index with no image for this host),
/// both as rbuild parses them (fields it does not model, like docker's `container`, are left
/// out).
pub(super) fn inspect(args: InspectArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    let rec = resolve(&store, &args.image)?;
    let all = store.list_images()?;
    let names: Vec<&ImageRecord> = all.iter().filter(|r| r.id == rec.id).collect();
    let repo_tags: Vec<String> = names
        .iter()
        .filter_map(|r| r.name.as_deref())
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| r.familiar())
        .collect();
    let repo_digests: BTreeSet<String> = names
        .iter()
        .filter_map(|r| {
            let reference = Reference::parse(r.name.as_deref()?).ok()?;
            Some(format!("{}@{}", reference.familiar_name(), r.target.digest))
        })
        .collect();
    let manifest = store.read_manifest(&rec.target.digest)?;
    let image = store.read_image(&rec.target.digest, None).ok();
    let cfg = image.as_ref().map(|i| &i.config);
    let out = [InspectOutput {
        id: rec.id.to_string(),
        repo_tags,
        repo_digests,
        created: cfg.and_then(|c| c.created.clone()),
        author: cfg.and_then(|c| c.author.clone()).unwrap_or_default(),
        architecture: cfg.map(|c| c.architecture.clone()),
        variant: cfg.and_then(|c| c.variant.clone()),
        os: cfg.map(|c| c.os.clone()),
        size: image_size(&store, &rec),
        config: cfg.map(|c| &c.config),
        root_fs: cfg.map(|c| InspectRootFs {
            kind: &c.rootfs.kind,
            layers: &c.rootfs.diff_ids,
        }),
        descriptor: &rec.target,
        manifest: match &manifest {
            AnyManifest::Image(m) => serde_json::to_value(m)?,
            AnyManifest::Index(i) => serde_json::to_value(i)?,
        },
        image_config: cfg,
    }];
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The `inspect` document; field order follows `docker image inspect`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectOutput<'a> {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: BTreeSet<String>,
    created: Option<String>,
    author: String,
    architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: Option<String>,
    size: u64,
    config: Option<&'a RuntimeConfig>,
    #[serde(rename = "RootFS")]
    root_fs: Option<InspectRootFs<'a>>,
    descriptor: &'a Descriptor,
    manifest: serde_json::Value,
    image_config: Option<&'a ImageConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectRootFs<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    layers: &'a [Digest],
}

/// `rbuild tag SOURCE TARGET`.
pub(super) fn tag(args: TagArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    let rec = resolve(&store, &args.source)?;
    let target = Reference::parse(&args.target)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.target)))?;
    if target.digest().is_some() {
        return Err(CliError::Usage(format!(
            "refusing to create a tag with a digest reference: {}",
            args.target
        ))
        .into());
    }
    store.put_image(&target.to_string(), &rec.target.digest)?;
    Ok(())
}

/// `rbuild rmi IMAGE...`: removes names (or an unnamed image by ID); blobs stay until prune.
pub(super) fn rmi(args: RmiArgs, globals: &Globals) -> anyhow::Result<()> {
    let store = Store::open(&globals.root)?;
    let mut failed = Vec::new();
    for input in &args.images {
        if let Err(e) = rmi_one(&store, input) {
            eprintln!("Error: {e:#}");
            failed.push(input.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("could not remove: {}", failed.join(", "));
    }
    Ok(())
}

fn rmi_one(store: &Store, input: &str) -> anyhow::Result<()> {
    if let Ok(r) = Reference::parse(input)
        && r.digest().is_none()
    {
        match store.remove_name(&r.to_string()) {
            Ok(_) => {
                println!("Untagged: {}", r.familiar());
                return Ok(());
            }
            Err(store::Error::ImageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let rec = resolve(store, input)?;
    let names: Vec<String> = store
        .list_images()?
        .into_iter()
        .filter(|r| r.id == rec.id)
        .filter_map(|r| r.name)
        .collect();
    if names.len() > 1 {
        bail!(
            "conflict: unable to delete {} - image is referenced in multiple repositories ({}); remove the names one by one",
            rec.id.short(),
            names.join(", ")
        );
    }
    for gone in store.remove_id(&rec.id)? {
        if let Some(name) = gone.name.as_deref().and_then(|n| Reference::parse(n).ok()) {
            println!("Untagged: {}", name.familiar());
        }
    }
    println!("Deleted: {}", rec.id);
    Ok(())
}

/// `rbuild prune`: drops unnamed images (`--all`: every image, the build cache's index
/// entries and gc roots, and `RUN --mount=type=cache` directories), then every blob no image
/// or gc root references, the cache entries whose layers went, their cache-miss explanations
/// and stale step locks. `--filter until=` and `--keep-storage` limit all of it as `docker
/// builder prune` does (cache mounts by last use). Everything happens under the store's
/// exclusive gc lock, so no build runs meanwhile.
pub(super) fn prune(args: PruneArgs, globals: &Globals) -> anyhow::Result<()> {
    let options = PruneOptions::parse(
        &args.filter,
        args.keep_storage.as_deref(),
        SystemTime::now(),
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let store = Store::open(&globals.root)?;
    let (mut images, mut roots, mut entries) = (0, 0, 0);
    let mut snapshots = 0;
    let mut cache = crate::solver::CachePruneReport::default();
    let report = store.prune_locked(
        &options,
        |store| {
            if args.all {
                roots = store.clear_gc_roots(options.until)?;
                entries = crate::solver::drop_cache_entries(store, options.until);
                images = store.remove_all_images(options.until)?;
            } else {
                images = store.remove_unnamed_images(options.until)?;
            }
            Ok(())
        },
        |store| {
            cache = crate::solver::prune_cache(store, args.all, options.until, options.keep_bytes);
            prune_snapshots(
                store,
                &globals.root,
                args.all,
                options.until,
                &mut snapshots,
            ) + cache.reclaimed_bytes
        },
    )?;
    if roots > 0 {
        println!("Removed {roots} build cache root set(s)");
    }
    if images > 0 {
        println!("Removed {images} image(s)");
    }
    let entries = entries + cache.index_entries;
    if entries > 0 {
        println!("Removed {entries} build cache entr{}", plural_y(entries));
    }
    if cache.cache_mounts > 0 {
        println!("Removed {} cache mount(s)", cache.cache_mounts);
    }
    if snapshots > 0 {
        println!("Removed {snapshots} unpacked layer snapshot(s)");
    }
    for d in &report.removed_blobs {
        println!("deleted: {d}");
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.reclaimed_bytes)
    );
    Ok(())
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// Removes unpacked layer snapshots no remaining image or cache entry needs (all of them with
/// `--all`), last written before `until` if given; returns the bytes freed. Runs under the
/// store's exclusive gc lock, so no build is using them.
fn prune_snapshots(
    store: &Store,
    root: &std::path::Path,
    all: bool,
    until: Option<SystemTime>,
    removed: &mut usize,
) -> u64 {
    let layers = super::du::snapshot_layers(root);
    if layers.is_empty() {
        return 0;
    }
    let keep = if all {
        Default::default()
    } else {
        match super::du::needed_snapshots(store, root) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("keeping every snapshot: cannot tell which are needed: {e}");
                return 0;
            }
        }
    };
    let snap = match crate::snapshot::Snapshotter::new(root) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot open the snapshots to prune them: {e}");
            return 0;
        }
    };
    let mut freed = 0;
    for (hex, path) in layers {
        let old = until.is_none_or(|u| {
            std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < u)
        });
        if keep.contains(&hex) || !old {
            continue;
        }
        let Ok(diff_id) = format!("sha256:{hex}").parse::<crate::image::Digest>() else {
            continue;
        };
        let size = crate::store::tree_size(&path);
        match snap.remove_layer(&diff_id) {
            Ok(()) => {
                freed += size;
                *removed += 1;
            }
            Err(e) => tracing::warn!("cannot remove snapshot {}: {e}", path.display()),
        }
    }
    freed
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant digits.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", significant(size, 3), UNITS[i])
}

/// Go's `%.3g` for the magnitudes `human_size` produces (below 1000): no exponent, no
/// trailing zeros.
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Docker's `units.HumanDuration`.
pub(super) fn human_duration(secs: f64) -> String {
    let seconds = secs as i64;
    let minutes = seconds / 60;
    let hours = (secs / 3600.0 + 0.5) as i64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (secs / 3600.0) as i64 / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(524), "524B");
        assert_eq!(human_size(4_260), "4.26kB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(12_000_000), "12MB");
        assert_eq!(human_size(123_400_000), "123MB");
        assert_eq!(human_duration(0.5), "Less than a second");
        assert_eq!(human_duration(61.0), "About a minute");
        assert_eq!(human_duration(3.0 * 86_400.0), "3 days");
    }
}
