//! Build contexts for tests: a temporary directory with a Dockerfile and files, written with a
//! builder so each test states its context in a few lines.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary build context directory, removed on drop.
pub struct Context {
    dir: tempfile::TempDir,
}

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-context-")
            .tempdir()
            .expect("creating a temp dir for the build context");
        Context { dir }
    }

    /// Writes `Dockerfile` with `text`.
    pub fn dockerfile(self, text: &str) -> Context {
        self.file("Dockerfile", text)
    }

    /// Writes file `path` (relative; parent directories created) with `content`, mode 0644.
    pub fn file(self, path: &str, content: impl AsRef<[u8]>) -> Context {
        let full = self.prepare(path);
        std::fs::write(&full, content)
            .unwrap_or_else(|e| panic!("writing {}: {e}", full.display()));
        self
    }

    /// Writes an executable (mode 0755) file.
    pub fn executable(self, path: &str, content: impl AsRef<[u8]>) -> Context {
        let context = self.file(path, content);
        context.mode(path, 0o755)
    }

    /// Sets the permission bits of an existing entry.
    pub fn mode(self, path: &str, mode: u32) -> Context {
        let full = self.dir.path().join(path);
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", full.display()));
        self
    }

    /// Creates directory `path` (and its parents).
    pub fn dir(self, path: &str) -> Context {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(&full)
            .unwrap_or_else(|e| panic!("creating {}: {e}", full.display()));
        self
    }

    /// Creates a symlink `path` pointing at `target` (not resolved).
    pub fn symlink(self, path: &str, target: &str) -> Context {
        let full = self.prepare(path);
        std::os::unix::fs::symlink(target, &full)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", full.display()));
        self
    }

    /// The context directory, to pass to `rbuild build`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path` inside the context.
    pub fn join(&self, path: &str) -> PathBuf {
        self.dir.path().join(path)
    }

    fn prepare(&self, path: &str) -> PathBuf {
        assert!(!path.starts_with('/'), "context paths are relative: {path}");
        let full = self.dir.path().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        full
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}
