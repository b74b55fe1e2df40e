//! `RUN --mount=type=cache` directories: persistent per-id dirs under `<root>/cache-mounts/`,
//! shared by all builds, with BuildKit's `sharing=shared|private|locked` semantics.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::Error;
use super::run::hand_over;
use super::spawn::{Job, Response, call};
use super::spec::{CacheInit, MountSpec};
use crate::image::Digest;

/// How concurrent steps share one cache id (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Any number of steps use the same directory at once (the default).
    #[default]
    Shared,
    /// A step that finds the directory in use gets another instance of it.
    Private,
    /// Steps wait for each other.
    Locked,
}

/// The cache-mount area of an rbuild root.
#[derive(Debug, Clone)]
pub struct CacheMounts {
    dir: PathBuf,
}

/// A cache directory held for one step; the lock (if any) is released on drop.
#[derive(Debug)]
pub struct CacheLease {
    path: PathBuf,
    fresh: bool,
    _lock: Option<File>,
}

impl CacheMounts {
    /// The cache mounts of the rbuild root `root` (`<root>/cache-mounts/`).
    pub fn new(root: &Path) -> CacheMounts {
        CacheMounts {
            dir: root.join("cache-mounts"),
        }
    }

    /// Gets the directory for cache `id`, creating it if needed, honouring `sharing`.
    pub fn acquire(&self, id: &str, sharing: Sharing) -> Result<CacheLease, Error> {
        self.acquire_seeded(id, sharing, None)
    }

    /// [`acquire`](Self::acquire) for `RUN --mount=type=cache,from=...`: a directory created
    /// now starts as a copy of `seed` (ownership kept, made inside the user namespace), as
    /// BuildKit bases such a cache on the `from` snapshot. The caller puts what identifies
    /// the seed (stage or image key, `source=`) into `id`, so each seed gets its own cache.
    pub fn acquire_seeded(
        &self,
        id: &str,
        sharing: Sharing,
        seed: Option<&CacheSeed>,
    ) -> Result<CacheLease, Error> {
        let key = self.dir.join(Digest::of(id.as_bytes()).hex());
        fs::create_dir_all(&key).map_err(host("creating cache dir", &key))?;
        let _ = fs::write(key.join("id"), id);
        for instance in 0u32.. {
            let name = if instance == 0 {
                "data".to_string()
            } else {
                format!("private-{instance}")
            };
            let path = key.join(&name);
            let lock_path = key.join(format!("{name}.lock"));
            let lock = match sharing {
                Sharing::Shared => None,
                Sharing::Locked | Sharing::Private => {
                    let f = File::options()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .map_err(host("opening cache lock", &lock_path))?;
                    if sharing == Sharing::Locked {
                        f.lock().map_err(host("locking cache", &lock_path))?;
                    } else if f.try_lock().is_err() {
                        continue;
                    }
                    Some(f)
                }
            };
            let fresh = match seed {
                Some(seed) if !path.exists() => seed_dir(&key, &path, seed)?,
                _ => match fs::create_dir(&path) {
                    Ok(()) => {
                        hand_over(&path)?;
                        true
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(host("creating cache dir", &path)(e)),
                },
            };
            return Ok(CacheLease {
                path,
                fresh,
                _lock: lock,
            });
        }
        unreachable!("instances are unbounded")
    }
}

/// What a `from=` cache mount starts with: directory `subpath` of the root made of `layers`.
#[derive(Debug, Clone)]
pub struct CacheSeed {
    /// Snapshot layer dirs or plain directories, base first.
    pub layers: Vec<PathBuf>,
    /// The `source=` path inside that root.
    pub subpath: String,
}

/// Fills a temp dir next to `path` with a copy of `seed` and renames it to `path`, so other
/// builds never see a half-seeded cache. Returns whether this call created `path`.
fn seed_dir(key: &Path, path: &Path, seed: &CacheSeed) -> Result<bool, Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "seeding-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = key.join(&name);
    fs::create_dir(&tmp).map_err(host("creating cache dir", &tmp))?;
    hand_over(&tmp)?;
    let job = crate::snapshot::NsJob::Seed {
        layers: seed.layers.clone(),
        subpath: seed.subpath.clone(),
        dest: tmp.clone(),
    };
    let copied = match call(Job::Snapshot(job), None, None, &mut |_, _| {}) {
        Ok(Response::Done(_)) => Ok(()),
        Ok(Response::Failed(m)) => Err(Error::Sandbox(format!(
            "seeding cache {} from {}: {m}",
            path.display(),
            seed.subpath
        ))),
        Ok(Response::Exited(_)) => Err(Error::Protocol("unexpected reply to a seed job".into())),
        Err(e) => Err(e),
    };
    let result = copied.and_then(|()| match fs::rename(&tmp, path) {
        Ok(()) => Ok(true),
        // Another build seeded the same cache meanwhile; use theirs.
        Err(_) if path.is_dir() => Ok(false),
        Err(e) => Err(host("moving the seeded cache to", path)(e)),
    });
    if tmp.exists() {
        let empty = crate::snapshot::NsJob::Empty { dir: tmp.clone() };
        let _ = call(Job::Snapshot(empty), None, None, &mut |_, _| {});
        let _ = fs::remove_dir(&tmp);
    }
    result
}

fn host<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::Host {
        action,
        path: path.to_path_buf(),
        source: e,
    }
}

impl CacheLease {
    /// The host directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory was created by this lease (its owner and mode are then set).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The executor mount for this lease at `target`, applying `init` only to a fresh dir.
    pub fn mount(&self, target: &str, init: CacheInit, readonly: bool) -> MountSpec {
        MountSpec::Cache {
            source: self.path.clone(),
            target: target.to_string(),
            init: self.fresh.then_some(init),
            readonly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_reuses_and_private_splits_when_busy() {
        let root = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(root.path());
        let a = caches.acquire("apt", Sharing::Shared).unwrap();
        assert!(a.is_fresh());
        let b = caches.acquire("apt", Sharing::Shared).unwrap();
        assert_eq!(a.path(), b.path());
        assert!(!b.is_fresh());
        let p1 = caches.acquire("go/mod", Sharing::Private).unwrap();
        let p2 = caches.acquire("go/mod", Sharing::Private).unwrap();
        assert_ne!(p1.path(), p2.path());
        drop(p1);
        let p3 = caches.acquire("go/mod", Sharing::Private).unwrap();
        assert!(p3.path().ends_with("data"));
    }
}
