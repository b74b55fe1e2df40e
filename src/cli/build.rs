//! `rbuild build`: validates every flag (refusing, with exit code 2, the ones whose feature is
//! not built yet), reads the Dockerfile (file, `-f -` or context `-`), plans, builds through
//! the solver, and hands the image to the exporters (`-o`, default: the local store).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::args::{BuildArgs, ProgressMode};
use super::progress::{Console, Summary};
use super::{CliError, Globals};
use crate::export::{OutputKind, OutputSpec};
use crate::image::Platform;
use crate::plan::{BuildOptions, parse_source_date_epoch};
use crate::progress::{Event, Reporter};
use crate::registry::{Client, ClientOptions, Progress, PushOptions, Reference};
use crate::solver::{BuildRequest, BuildResult};
use crate::store::Store;

fn usage(msg: impl Into<String>) -> anyhow::Error {
    CliError::Usage(msg.into()).into()
}

/// The Dockerfile text, a display name for errors, and its path when it is a file.
fn read_dockerfile(
    args: &BuildArgs,
) -> anyhow::Result<(String, String, Option<PathBuf>, Option<PathBuf>)> {
    let stdin_text = || -> anyhow::Result<String> {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the Dockerfile from stdin")?;
        super::diagnostic::keep_stdin_dockerfile(&s);
        Ok(s)
    };
    if args.context == "-" {
        if args.file.is_some() {
            bail!(usage(
                "--file cannot be used when the context is `-` (the Dockerfile comes from stdin)"
            ));
        }
        return Ok((stdin_text()?, "Dockerfile".into(), None, None));
    }
    let context = PathBuf::from(&args.context);
    if args.context.contains("://") || args.context.starts_with("git@") {
        bail!(super::unsupported("a remote build context (URL or git)"));
    }
    if !context.is_dir() {
        bail!(usage(format!(
            "unable to prepare context: path {:?} not found",
            args.context
        )));
    }
    match args.file.as_deref() {
        Some("-") => Ok((stdin_text()?, "Dockerfile".into(), None, Some(context))),
        Some(f) => {
            let path = PathBuf::from(f);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read Dockerfile {}", path.display()))?;
            Ok((text, f.to_string(), Some(path), Some(context)))
        }
        None => {
            let path = context.join("Dockerfile");
            let path = if path.exists() || !context.join("dockerfile").exists() {
                path
            } else {
                context.join("dockerfile")
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read Dockerfile {}", path.display()))?;
            Ok((text, path.display().to_string(), Some(path), Some(context)))
        }
    }
}

/// `--build-arg K=V`, or bare `K` taken from the environment (skipped when unset, as docker).
fn build_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some(("", _)) => bail!(usage(format!("--build-arg {a:?}: the name is empty"))),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn labels(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in args {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!(usage(format!("--label {l:?}: the key is empty")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--build-context` values: directories by name (`NAME=DIR`, and `NAME=https://…tar` unpacked
/// into a scratch directory that the returned guards keep alive), and names standing for images
/// (`NAME=docker-image://REF`, `NAME=oci-layout://PATH[:TAG][@DIGEST]`).
type NamedContexts = (
    BTreeMap<String, PathBuf>,
    BTreeMap<String, String>,
    Vec<tempfile::TempDir>,
);

fn named_contexts(args: &[String], root: &Path) -> anyhow::Result<NamedContexts> {
    use crate::context::{OCI_LAYOUT_SCHEME, OciLayoutRef};
    let mut dirs = BTreeMap::new();
    let mut images = BTreeMap::new();
    let mut downloads = Vec::new();
    for c in args {
        let Some((name, value)) = c.split_once('=') else {
            bail!(usage(format!("--build-context {c:?}: expected NAME=VALUE")));
        };
        if let Some(image) = value.strip_prefix("docker-image://") {
            Reference::parse(image).map_err(|e| usage(format!("--build-context {name}: {e}")))?;
            images.insert(name.to_string(), image.to_string());
            continue;
        }
        if value.starts_with(OCI_LAYOUT_SCHEME) {
            let layout = OciLayoutRef::parse(value)
                .map_err(|e| usage(format!("--build-context {name}: {e}")))?;
            if !layout.dir.is_dir() {
                bail!(usage(format!(
                    "--build-context {name}: {} is not a directory",
                    layout.dir.display()
                )));
            }
            // The solver's image resolver imports the layout for the stage's platform.
            images.insert(name.to_string(), layout.display());
            continue;
        }
        if crate::context::is_git_url(value) {
            bail!(super::unsupported("--build-context from a Git repository"));
        }
        if crate::context::is_remote_tarball(value) {
            let work = Store::open(root)?.scratch_dir("build-context-")?;
            let dir = crate::context::fetch_remote_context(value, work.path())
                .with_context(|| format!("--build-context {name}"))?;
            dirs.insert(name.to_string(), dir);
            downloads.push(work);
            continue;
        }
        if value.contains("://") {
            let scheme = value.split("://").next().unwrap_or_default();
            bail!(super::unsupported(&format!("--build-context {scheme}://")));
        }
        let dir = PathBuf::from(value);
        if !dir.is_dir() {
            bail!(usage(format!(
                "--build-context {name}: {value:?} is not a directory"
            )));
        }
        dirs.insert(name.to_string(), dir);
    }
    Ok((dirs, images, downloads))
}

/// `--secret id=ID[,src=FILE|,env=VAR]` (buildx syntax; `type=file|env` accepted).
fn secrets(args: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in args {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| usage(format!("--secret {spec:?}: {field:?} is not KEY=VALUE")))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" if v == "file" || v == "env" => kind = Some(v.to_string()),
                _ => bail!(usage(format!("--secret {spec:?}: unexpected key {k:?}"))),
            }
        }
        let id = id
            .or_else(|| src.clone().or_else(|| env.clone()))
            .ok_or_else(|| usage(format!("--secret {spec:?}: id= is required")))?;
        let from_env = kind.as_deref() == Some("env") || (src.is_none() && env.is_some());
        let data = if from_env {
            let var = env.or(src).unwrap_or_else(|| id.clone());
            std::env::var(&var)
                .map_err(|_| {
                    usage(format!(
                        "--secret {spec:?}: environment variable {var} is not set"
                    ))
                })?
                .into_bytes()
        } else {
            let path =
                src.ok_or_else(|| usage(format!("--secret {spec:?}: src= or env= is required")))?;
            std::fs::read(&path).with_context(|| format!("--secret {id}: reading {path}"))?
        };
        out.insert(id, data);
    }
    Ok(out)
}

/// `--ssh default` (from `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`.
fn ssh_sockets(args: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for spec in args {
        let (id, path) = match spec.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .ok_or_else(|| usage(format!("--ssh {spec}: SSH_AUTH_SOCK is not set")))?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        if path.is_file() || path.is_dir() {
            bail!(super::unsupported(
                "--ssh with key files (give an agent socket)"
            ));
        }
        out.insert(id, path);
    }
    Ok(out)
}

fn platform(args: &BuildArgs) -> anyhow::Result<Platform> {
    match args.platforms.as_slice() {
        [] => Ok(Platform::host()),
        [one] => one.parse::<Platform>().map_err(|e| usage(e.to_string())),
        _ => Err(super::unsupported("--platform with several platforms")),
    }
}

/// Refuses the flags whose features are not built yet, and checks values of the others.
fn refuse_unsupported(args: &BuildArgs) -> anyhow::Result<()> {
    if let Some(n) = &args.network
        && !matches!(n.as_str(), "default" | "none" | "host")
    {
        bail!(usage(format!(
            "--network {n:?}: expected default, none or host"
        )));
    }
    if args.jobs == Some(0) {
        bail!(usage("--jobs must be at least 1"));
    }
    Ok(())
}

fn normalise_tags(tags: &[String]) -> anyhow::Result<Vec<String>> {
    tags.iter()
        .map(|t| {
            Reference::parse(t)
                .map(|r| r.to_string())
                .map_err(|e| usage(format!("invalid tag {t:?}: {e}")))
        })
        .collect()
}

pub(super) fn run(args: BuildArgs, globals: &Globals) -> anyhow::Result<()> {
    // Ctrl-C/SIGTERM stop every sandbox and let the build clean up (see `super::main`).
    crate::exec::catch_interrupts();
    refuse_unsupported(&args)?;
    let target_platform = platform(&args)?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o).map_err(|e| usage(e.to_string())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if outputs.is_empty() {
        outputs.push(OutputSpec::parse("type=image").map_err(|e| usage(e.to_string()))?);
    }
    if args.push {
        for o in &mut outputs {
            if o.kind == OutputKind::Image {
                o.push = true;
            }
        }
    }
    let tags = normalise_tags(&args.tags)?;
    let build_args = build_args(&args.build_args)?;
    let source_date_epoch = match build_args.get("SOURCE_DATE_EPOCH").cloned().or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .filter(|v| !v.is_empty())
    }) {
        Some(v) => Some(parse_source_date_epoch(&v).map_err(usage)?),
        None => None,
    };
    let (named_contexts, context_images, _downloaded_contexts) =
        named_contexts(&args.build_contexts, &globals.root)?;
    let (text, file_name, dockerfile_path, context) = read_dockerfile(&args)?;
    let dockerfile = crate::dockerfile::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}", e.render(&file_name, &text).trim_end()))?;
    // Warnings join the progress stream so that `rawjson` stays one JSON object per line.
    let console = Console::new(args.progress, args.quiet);
    for w in &dockerfile.warnings {
        console.event(Event::Warning {
            message: w.to_string(),
        });
    }
    if let Some(syntax) = &dockerfile.directives.syntax
        && !syntax.starts_with("docker/dockerfile")
        && !syntax.starts_with("docker.io/docker/dockerfile")
    {
        // rbuild has one built-in frontend; a custom one would be silently different.
        console.event(Event::Warning {
            message: format!(
                "ignoring `# syntax={syntax}`: rbuild always uses its built-in Dockerfile frontend"
            ),
        });
    }

    let mut options = BuildOptions::host();
    options.build_args = build_args;
    options.target = args.target.clone();
    options.target_platform = target_platform;
    options.named_contexts = named_contexts.keys().cloned().collect::<BTreeSet<_>>();
    options.context_images = context_images;
    let request = BuildRequest {
        dockerfile,
        context: context.clone(),
        dockerfile_path,
        options,
        named_contexts,
        labels: labels(&args.labels)?,
        source_date_epoch,
        pull: args.pull,
        insecure_registries: args.insecure_registries.clone(),
        compression: outputs.first().map(|o| o.compression).unwrap_or_default(),
        no_cache: args.no_cache,
        secrets: secrets(&args.secrets)?,
        ssh: ssh_sockets(&args.ssh)?,
        jobs: args.jobs,
        no_cache_filter: args.no_cache_filter.iter().cloned().collect(),
        cache_from: (args.cache_from.iter())
            .map(|s| super::cache_spec::parse_cache_from(s))
            .collect::<Result<_, _>>()?,
        cache_to: (args.cache_to.iter())
            .map(|s| super::cache_spec::parse_cache_to(s))
            .collect::<Result<_, _>>()?,
        network: match args.network.as_deref() {
            Some("none") => Some(crate::dockerfile::instructions::NetworkMode::None),
            Some("host") => Some(crate::dockerfile::instructions::NetworkMode::Host),
            _ => None,
        },
    };
    let store = Store::open(&globals.root)?;
    if args.dry_run {
        print!("{}", crate::solver::dry_run(&request, &store)?);
        return Ok(());
    }
    let quiet = args.quiet || args.progress == ProgressMode::Quiet;
    let result = crate::solver::build(&request, &store, &console)?;
    for w in &result.warnings {
        console.event(Event::Warning { message: w.clone() });
    }
    // Exporting is one more vertex after the solver's, as in BuildKit's output.
    let export_id = result.vertices + 1;
    console.event(Event::Started {
        id: export_id,
        name: "exporting to image".into(),
        step: None,
    });
    let exported = export_all(
        &store,
        &result,
        &tags,
        &outputs,
        &console,
        export_id,
        &args.insecure_registries,
    )
    .and_then(|names| write_side_files(&args, &result, &tags).map(|()| names));
    let names = match exported {
        Ok(names) => names,
        Err(e) => {
            console.event(Event::Errored {
                id: export_id,
                message: format!("{e:#}"),
            });
            return Err(e);
        }
    };
    console.event(Event::Finished { id: export_id });
    if quiet {
        println!("{}", result.config_digest);
    } else {
        let (steps_run, steps_cached) = console.step_counts();
        console.summary(&Summary {
            image_id: result.config_digest.to_string(),
            manifest: result.manifest.digest.to_string(),
            tags: names,
            size: result.layers.iter().map(|l| l.size).sum(),
            layers: result.layers.len(),
            steps_run,
            steps_cached,
            seconds: console.elapsed(),
        });
    }
    Ok(())
}

/// Exports to every output; returns the names the image got.
fn export_all(
    store: &Store,
    result: &BuildResult,
    tags: &[String],
    outputs: &[OutputSpec],
    console: &Console,
    vertex: u64,
    insecure_registries: &[String],
) -> anyhow::Result<Vec<String>> {
    let status = |text: String| console.event(Event::Status { id: vertex, text });
    let mut all_names = Vec::new();
    for spec in outputs {
        let mut names: Vec<String> = tags.to_vec();
        for n in &spec.names {
            names.push(
                Reference::parse(n)
                    .map(|r| r.to_string())
                    .map_err(|e| usage(format!("name={n}: {e}")))?,
            );
        }
        let desc = crate::export::export(store, &result.manifest, &names, None, spec)?;
        if spec.kind == OutputKind::Image {
            status(format!("writing image {} done", result.config_digest));
        }
        for n in &names {
            status(format!("naming to {n} done"));
        }
        if spec.push {
            if names.is_empty() {
                bail!(usage(
                    "--push needs a name: give -t NAME or name= in --output"
                ));
            }
            let parsed = names
                .iter()
                .map(|n| Reference::parse(n))
                .collect::<Result<Vec<_>, _>>()?;
            let mut insecure = insecure_registries.to_vec();
            if spec.insecure_registry {
                // `registry.insecure=true` covers the registries this output pushes to.
                insecure.extend(parsed.iter().map(|r| r.registry().to_string()));
            }
            let client = Client::new(ClientOptions {
                insecure_registries: insecure,
                ..ClientOptions::default()
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            for (n, r) in names.iter().zip(&parsed) {
                status(format!("pushing {n}"));
                let pushed = rt.block_on(crate::registry::push_with_progress(
                    &client,
                    store,
                    &desc.digest,
                    r,
                    &PushOptions::default(),
                    Progress {
                        reporter: console,
                        vertex,
                    },
                ))?;
                // BuildKit's wording, with the blob counts `rbuild push` prints.
                status(format!(
                    "pushing layers done ({} already present, {} mounted, {} uploaded)",
                    pushed.existed, pushed.mounted, pushed.sent
                ));
                status(format!("pushing manifest for {n}@{} done", pushed.digest));
            }
        }
        for n in names {
            if !all_names.contains(&n) {
                all_names.push(n);
            }
        }
    }
    Ok(all_names)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `--iidfile` and `--metadata-file`, in buildx's shapes.
fn write_side_files(args: &BuildArgs, result: &BuildResult, tags: &[String]) -> anyhow::Result<()> {
    if let Some(p) = &args.iidfile {
        write_file(p, result.config_digest.to_string().as_bytes())?;
    }
    if let Some(p) = &args.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.config.digest": result.config_digest.to_string(),
            "containerimage.digest": result.manifest.digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": result.manifest.media_type,
                "digest": result.manifest.digest.to_string(),
                "size": result.manifest.size,
            },
        });
        if !tags.is_empty() {
            meta["image.name"] = serde_json::Value::String(tags.join(","));
        }
        write_file(p, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_build_arg_comes_from_environment() {
        // PATH is always set in the test environment.
        let m = build_args(&[
            "PATH".into(),
            "A=1".into(),
            "RBUILD_SURELY_UNSET_VAR".into(),
        ])
        .unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["PATH"], std::env::var("PATH").unwrap());
        assert!(!m.contains_key("RBUILD_SURELY_UNSET_VAR"));
        assert!(build_args(&["=x".into()]).is_err());
    }

    #[test]
    fn labels_allow_empty_values() {
        let m = labels(&["a=b".into(), "c".into()]).unwrap();
        assert_eq!(m["a"], "b");
        assert_eq!(m["c"], "");
    }
}
