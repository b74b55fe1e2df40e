//! Independent readers for images that rbuild produced: skopeo and the layer tars themselves,
//! so tests check rbuild's output with tools other than rbuild.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Registry, run_ok};

/// `skopeo` with the TLS/credential flags `registry` needs and a runtime dir it can use.
fn skopeo(registry: &Registry, subcommand: &str) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg(subcommand);
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("rbuild-test-xdg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    // `copy` reads from the registry (`--src-*`); `inspect` takes the bare options.
    let prefix = if subcommand == "copy" { "src-" } else { "" };
    cmd.args(registry.skopeo_args(prefix));
    cmd
}

fn inspect(registry: &Registry, reference: &str, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        skopeo(registry, "inspect")
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo inspect {reference}: {e}\n{out}"))
}

/// `skopeo inspect` of `reference` (a `127.0.0.1:PORT/repo:tag` in `registry`): Architecture,
/// Os, Layers, Env, Labels, Digest...
pub fn inspect_summary(registry: &Registry, reference: &str) -> serde_json::Value {
    inspect(registry, reference, &[])
}

/// The manifest (or index) exactly as the registry serves it.
pub fn raw_manifest(registry: &Registry, reference: &str) -> serde_json::Value {
    inspect(registry, reference, &["--raw"])
}

/// The image configuration blob (`config.Env`, `config.Cmd`, `rootfs.diff_ids`, `history`...).
pub fn image_config(registry: &Registry, reference: &str) -> serde_json::Value {
    inspect(registry, reference, &["--config"])
}

/// One entry of a layer tar, as stored (not as unpacked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path as written in the tar, without a leading `./` or trailing `/`.
    pub path: String,
    /// Tar entry type: `b'0'` regular, `b'5'` directory, `b'2'` symlink, `b'1'` hard link...
    pub kind: u8,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid and gid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Symlink or hard-link target.
    pub link: Option<String>,
    /// Content of regular files (whole file; test images are small).
    pub content: Vec<u8>,
}

/// A pulled copy of an image as an OCI layout (via `skopeo copy`), for reading its layers.
pub struct PulledImage {
    dir: tempfile::TempDir,
    manifest: serde_json::Value,
}

impl PulledImage {
    /// Copies `reference` from `registry` into a temporary OCI layout. For a multi-platform
    /// index skopeo picks this machine's platform.
    pub fn pull(registry: &Registry, reference: &str) -> PulledImage {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-pulled-")
            .tempdir()
            .expect("creating a temp dir for the pulled image");
        let layout = dir.path().join("oci");
        run_ok(
            skopeo(registry, "copy")
                .arg("--quiet")
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:latest", layout.display())),
        );
        let index = read_json(&layout.join("index.json"));
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .expect("index.json names a manifest")
            .to_string();
        let manifest = read_json(&blob_path(&layout, &digest));
        PulledImage { dir, manifest }
    }

    /// The OCI layout directory (`index.json`, `blobs/`).
    pub fn layout(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    /// The image manifest (skopeo converts Docker schema 2 to OCI when copying to a layout).
    pub fn manifest(&self) -> &serde_json::Value {
        &self.manifest
    }

    /// The image configuration.
    pub fn config(&self) -> serde_json::Value {
        let digest = self.manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        read_json(&blob_path(&self.layout(), digest))
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.manifest["layers"].as_array().map_or(0, Vec::len)
    }

    /// The entries of layer `index` (0 = base), decompressed according to its media type.
    pub fn layer(&self, index: usize) -> Vec<LayerEntry> {
        let layer = &self.manifest["layers"][index];
        let digest = layer["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("no layer {index} in {}", self.manifest));
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        read_layer(&blob_path(&self.layout(), digest), media_type)
    }

    /// The filesystem the layers add up to, by path: later layers replace earlier entries and
    /// `.wh.` whiteouts remove them (opaque directories included).
    pub fn merged(&self) -> BTreeMap<String, LayerEntry> {
        let mut files: BTreeMap<String, LayerEntry> = BTreeMap::new();
        for index in 0..self.layer_count() {
            for entry in self.layer(index) {
                let (parent, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
                let prefix = |dir: &str| {
                    if dir.is_empty() {
                        String::new()
                    } else {
                        format!("{dir}/")
                    }
                };
                if name == ".wh..wh..opq" {
                    let below = prefix(parent);
                    files.retain(|path, _| !path.starts_with(&below));
                } else if let Some(hidden) = name.strip_prefix(".wh.") {
                    let gone = format!("{}{hidden}", prefix(parent));
                    files.retain(|path, _| path != &gone && !path.starts_with(&format!("{gone}/")));
                } else {
                    files.insert(entry.path.clone(), entry);
                }
            }
        }
        files
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("malformed digest {digest}"));
    layout.join("blobs").join(algorithm).join(hex)
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Reads every entry of a (possibly gzip- or zstd-compressed) layer tar.
pub fn read_layer(path: &Path, media_type: &str) -> Vec<LayerEntry> {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).expect("zstd decoder"))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in archive
        .entries()
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    {
        let mut entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let header = entry.header().clone();
        let raw_path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let path = raw_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let link = entry
            .link_name()
            .expect("entry link name")
            .map(|l| l.to_string_lossy().into_owned());
        let mut content = Vec::new();
        if header.entry_type().is_file() {
            entry
                .read_to_end(&mut content)
                .expect("reading entry content");
        }
        entries.push(LayerEntry {
            path,
            kind: header.entry_type().as_byte(),
            mode: header.mode().expect("entry mode"),
            uid: header.uid().expect("entry uid"),
            gid: header.gid().expect("entry gid"),
            link,
            content,
        });
    }
    entries
}
