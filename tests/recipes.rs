//! The CI recipes in docs/ci.md, run as written: their YAML code blocks are parsed, the shell
//! steps (GitHub Actions `run:` blocks, GitLab `before_script:`/`script:` lines) run with bash
//! in order, with `rbuild` on PATH and the variables the CI would set, against a local
//! registry with TLS and htpasswd auth. Each recipe runs twice, on fresh homes like fresh
//! runners: the second run gets every step from the registry cache. Steps marked
//! `# recipes-test: skip` (installing rbuild, host packages) are not run.
//!
//! docs/kubernetes.md's Job cannot be run here (no cluster; see `kubernetes_job_parses_...`
//! for what is checked instead).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::Registry;
use common::{Context, run_ok};
use serde_yaml::Value;

/// The marker a recipe puts on the line before a step (or script line) that cannot run here.
const SKIP: &str = "# recipes-test: skip";

/// The fenced code blocks of `lang` in a Markdown file.
fn code_blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_start() == format!("```{lang}") => current = Some(String::new()),
            Some(text) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(text));
                current = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The items (step names or script lines) that follow a skip marker in a YAML block.
fn skipped_items(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    (lines.iter().enumerate())
        .filter(|(_, l)| l.trim_start().starts_with(SKIP))
        .map(|(i, _)| {
            let next = lines
                .get(i + 1)
                .expect("a skip marker is followed by an item");
            let item = next.trim_start().strip_prefix("- ").unwrap_or_else(|| {
                panic!("the line after a skip marker must be a list item: {next}")
            });
            item.strip_prefix("name: ")
                .unwrap_or(item)
                .trim()
                .to_string()
        })
        .collect()
}

fn read_doc(name: &str) -> String {
    let path = common::repo_dir().join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A shell script step, what environment it gets from the recipe, and whether it is skipped.
struct Step {
    name: String,
    script: String,
    env: BTreeMap<String, String>,
}

/// A small app: a COPY and a RUN on the busybox fixture, pushed to the test registry.
fn app(registry: &Registry) -> Context {
    let base = common::fixtures::busybox(registry);
    Context::new()
        .dockerfile(&format!(
            "FROM {base}\nCOPY app.txt /app/\nRUN cat /app/app.txt > /app/copy.txt\n"
        ))
        .file("app.txt", "hello from CI\n")
}

/// Runs `script` with bash as the CI would (`-eo pipefail`), in `dir`, with `rbuild` first on
/// PATH, `env` set and `HOME` (credentials, default rbuild root) at `home`. Returns the output.
fn bash(script: &str, dir: &Path, home: &Path, env: &BTreeMap<String, String>) -> String {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rbuild"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .envs(env)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "step failed ({}):\n{script}\n--- output ---\n{text}",
        out.status
    );
    text
}

/// The ids of COPY/RUN vertices in plain output and whether each ended CACHED.
fn step_results(log: &str) -> Vec<(String, bool)> {
    let start = regex::Regex::new(r"(?m)^#(\d+) \[\d+/\d+\] ((?:COPY|RUN) .*)$").unwrap();
    start
        .captures_iter(log)
        .map(|c| {
            let cached = log.lines().any(|l| l == format!("#{} CACHED", &c[1]));
            (c[2].to_string(), cached)
        })
        .collect()
}

/// `reference` holds an rbuild build cache (a manifest with rbuild's cache config type).
fn assert_cache_exported(registry: &Registry, reference: &str) {
    let manifest = common::image::raw_manifest(registry, reference);
    assert_eq!(
        manifest["config"]["mediaType"], "application/vnd.rbuild.cache.config.v1+json",
        "{manifest}"
    );
}

/// The variables a TLS + htpasswd test registry needs beyond the CI's own: its CA (as for a
/// registry with a private CA).
fn registry_env(registry: &Registry) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "RBUILD_REGISTRY_CA".into(),
        registry.ca_cert_path().unwrap().display().to_string(),
    );
    env
}

/// The shell steps of the GitHub Actions workflow, with job and step `env:`; `${{ ... }}`
/// values are replaced from `expressions` (any other expression fails the test).
fn github_steps(yaml: &str, expressions: &BTreeMap<&str, String>) -> (Vec<Step>, usize) {
    let skipped = skipped_items(yaml);
    let doc: Value = serde_yaml::from_str(yaml).unwrap();
    let jobs = doc["jobs"].as_mapping().unwrap();
    assert_eq!(jobs.len(), 1, "one job");
    let job = jobs.values().next().unwrap();
    let env_of = |v: &Value| -> BTreeMap<String, String> {
        (v.as_mapping().into_iter().flatten())
            .map(|(k, v)| {
                let value = v.as_str().unwrap().to_string();
                let value = if value.contains("${{") {
                    expressions
                        .get(value.as_str())
                        .unwrap_or_else(|| panic!("no value for the expression {value}"))
                        .clone()
                } else {
                    value
                };
                (k.as_str().unwrap().to_string(), value)
            })
            .collect()
    };
    let job_env = env_of(&job["env"]);
    let mut steps = Vec::new();
    let mut n_skipped = 0;
    for step in job["steps"].as_sequence().unwrap() {
        let Some(script) = step["run"].as_str() else {
            assert!(step["uses"].is_string(), "a step runs or uses: {step:?}");
            continue;
        };
        let name = step["name"].as_str().unwrap_or(script).to_string();
        assert!(
            !script.contains("${{"),
            "step {name:?}: expressions belong in env:, not in the script"
        );
        if skipped.contains(&name) {
            n_skipped += 1;
            continue;
        }
        let mut env = job_env.clone();
        env.extend(env_of(&step["env"]));
        steps.push(Step {
            name,
            script: script.to_string(),
            env,
        });
    }
    (steps, n_skipped)
}

#[test]
fn github_actions_recipe_builds_pushes_and_reuses_the_registry_cache() {
    let yaml = code_blocks(&read_doc("ci.md"), "yaml")
        .into_iter()
        .find(|b| b.contains("jobs:") && b.contains("runs-on:"))
        .expect("a GitHub Actions workflow in docs/ci.md");
    let registry = Registry::start_with_auth("ci-bot", "s3cret-token");
    let (user, password) = registry.credentials().unwrap();
    let ctx = app(&registry);
    let expressions = BTreeMap::from([("${{ secrets.GITHUB_TOKEN }}", password.to_string())]);
    let (steps, skipped) = github_steps(&yaml, &expressions);
    assert_eq!(skipped, 2, "install steps are the only ones skipped");
    assert_eq!(steps.len(), 2, "login, build");
    let mut ci = registry_env(&registry);
    ci.insert("GITHUB_ACTOR".into(), user.to_string());
    ci.insert("GITHUB_REPOSITORY".into(), "Team/App".into());
    ci.insert("GITHUB_SHA".into(), "0123456789abcdef".into());
    let run = |n: usize| -> String {
        let home = tempfile::tempdir().unwrap();
        let mut log = String::new();
        for step in &steps {
            let mut env = step.env.clone();
            // The job's registry, replaced as a fork of the workflow would.
            env.insert("REGISTRY".into(), registry.addr());
            env.extend(ci.clone());
            log += &format!("=== run {n}: {}\n", step.name);
            log += &bash(&step.script, ctx.path(), home.path(), &env);
        }
        log
    };
    let first = run(1);
    let results = step_results(&first);
    assert_eq!(results.len(), 2, "{first}");
    assert!(results.iter().all(|(_, cached)| !cached), "{first}");
    let iid = std::fs::read_to_string(ctx.join("image-id.txt")).unwrap();
    let image = registry.repo("team/app");
    for tag in ["0123456789abcdef", "latest"] {
        let inspect = common::image::inspect_summary(&registry, &format!("{image}:{tag}"));
        assert!(inspect["Digest"].is_string(), "{tag}: {inspect}");
    }
    assert_cache_exported(&registry, &format!("{image}:buildcache"));
    let second = run(2);
    let results = step_results(&second);
    assert_eq!(results.len(), 2, "{second}");
    assert!(
        results.iter().all(|(_, cached)| *cached),
        "every step from the registry cache:\n{second}"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("image-id.txt")).unwrap(),
        iid,
        "the same image"
    );
}

/// GitLab's `variables:` (expanded by the shell, as GitLab expands `$VAR` in them),
/// `before_script:` and `script:` as one bash script, without the skipped lines.
fn gitlab_script(yaml: &str) -> (String, usize) {
    let skipped = skipped_items(yaml);
    let doc: Value = serde_yaml::from_str(yaml).unwrap();
    let jobs = doc.as_mapping().unwrap();
    assert_eq!(jobs.len(), 1, "one job");
    let job = jobs.values().next().unwrap();
    let mut script = String::new();
    for (k, v) in job["variables"].as_mapping().unwrap() {
        script += &format!(
            "export {}=\"{}\"\n",
            k.as_str().unwrap(),
            v.as_str().unwrap()
        );
    }
    let mut n_skipped = 0;
    for key in ["before_script", "script"] {
        for line in job[key].as_sequence().unwrap() {
            let line = line.as_str().unwrap();
            if skipped.iter().any(|s| s == line.trim()) {
                n_skipped += 1;
                continue;
            }
            script += line;
            script.push('\n');
        }
    }
    (script, n_skipped)
}

#[test]
fn gitlab_recipe_builds_pushes_and_reuses_the_registry_cache() {
    let yaml = code_blocks(&read_doc("ci.md"), "yaml")
        .into_iter()
        .find(|b| b.contains("before_script:"))
        .expect("a GitLab CI job in docs/ci.md");
    let registry = Registry::start_with_auth("gitlab-ci-token", "job-token");
    let (user, password) = registry.credentials().unwrap();
    let ctx = app(&registry);
    let (script, skipped) = gitlab_script(&yaml);
    assert_eq!(
        skipped, 2,
        "apt-get and cargo install are the only lines skipped"
    );
    let mut env = registry_env(&registry);
    env.insert("CI_REGISTRY".into(), registry.addr());
    env.insert("CI_REGISTRY_USER".into(), user.to_string());
    env.insert("CI_REGISTRY_PASSWORD".into(), password.to_string());
    env.insert("CI_REGISTRY_IMAGE".into(), registry.repo("group/app"));
    env.insert("CI_COMMIT_SHA".into(), "fedcba9876543210".into());
    env.insert("CI_COMMIT_REF_SLUG".into(), "main".into());
    let run = || {
        let home = tempfile::tempdir().unwrap();
        bash(&script, ctx.path(), home.path(), &env)
    };
    let first = run();
    let results = step_results(&first);
    assert_eq!(results.len(), 2, "{first}");
    assert!(results.iter().all(|(_, cached)| !cached), "{first}");
    let image = registry.repo("group/app");
    let digest = |tag: &str| {
        common::image::inspect_summary(&registry, &format!("{image}:{tag}"))["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let pushed = digest("fedcba9876543210");
    assert_eq!(digest("main"), pushed);
    assert_cache_exported(&registry, &format!("{image}:buildcache"));
    let second = run();
    let results = step_results(&second);
    assert_eq!(results.len(), 2, "{second}");
    assert!(
        results.iter().all(|(_, cached)| *cached),
        "every step from the registry cache:\n{second}"
    );
    assert_eq!(digest("main"), pushed, "the same image");
}

/// The Job cannot run here: there is no cluster, and podman 4.3's `kube play` (tried with
/// its pod template on this machine) would not test what the page is about: it ignores
/// `procMount: Unmasked` (the container's `/proc` keeps its 7 masked paths) and
/// `seccompProfile: {type: Unconfined}` (`Seccomp: 2` in the container), and `hostUsers:
/// false` needs a `containers` range in `/etc/subuid`, which the host does not have. What is
/// checked instead: the YAML parses, it is a Job whose builder container has exactly the
/// securityContext the page explains, `--root` is on an `emptyDir`, credentials come from a
/// dockerconfigjson secret through `DOCKER_CONFIG`, and the flags are rbuild's.
#[test]
fn kubernetes_job_parses_and_has_the_security_context_the_page_explains() {
    let page = read_doc("kubernetes.md");
    let blocks = code_blocks(&page, "yaml");
    let job: Value = blocks
        .iter()
        .map(|b| serde_yaml::from_str::<Value>(b).unwrap())
        .find(|v| v["kind"] == "Job")
        .expect("a Job in docs/kubernetes.md");
    assert_eq!(job["apiVersion"], "batch/v1");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["hostUsers"], false);
    assert_eq!(pod["restartPolicy"], "Never");
    let containers = pod["containers"].as_sequence().unwrap();
    let rbuild = containers
        .iter()
        .find(|c| c["command"][0] == "rbuild")
        .expect("the rbuild container");
    let sc = &rbuild["securityContext"];
    assert_eq!(sc["procMount"], "Unmasked");
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");
    assert_eq!(sc["appArmorProfile"]["type"], "Unconfined");
    assert_eq!(sc["allowPrivilegeEscalation"], true);
    assert!(
        sc["privileged"].is_null(),
        "the recommended pod is not privileged"
    );
    assert!(sc["capabilities"].is_null(), "no added capabilities");
    // Every setting in the table is one the Job uses.
    for setting in [
        "seccompProfile: {type: Unconfined}",
        "appArmorProfile: {type: Unconfined}",
        "procMount: Unmasked",
        "hostUsers: false",
        "allowPrivilegeEscalation",
    ] {
        assert!(page.contains(setting), "{setting}");
    }
    let args: Vec<&str> = (rbuild["args"].as_sequence().unwrap().iter())
        .map(|a| a.as_str().unwrap())
        .collect();
    let root = args
        .iter()
        .find_map(|a| a.strip_prefix("--root="))
        .expect("--root");
    let mounts = rbuild["volumeMounts"].as_sequence().unwrap();
    let volume_at = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        let name = m["name"].as_str().unwrap();
        (pod["volumes"].as_sequence().unwrap().iter())
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert!(
        volume_at(root)["emptyDir"].is_mapping(),
        "--root on an emptyDir"
    );
    let env = rbuild["env"].as_sequence().unwrap();
    let docker_config = env
        .iter()
        .find(|e| e["name"] == "DOCKER_CONFIG")
        .expect("DOCKER_CONFIG")["value"]
        .as_str()
        .unwrap();
    let secret = volume_at(docker_config);
    assert_eq!(secret["secret"]["items"][0]["key"], ".dockerconfigjson");
    assert_eq!(secret["secret"]["items"][0]["path"], "config.json");
    // The arguments are ones rbuild accepts.
    let parsed = run_ok(
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(&args[..1])
            .args(["build", "--help"]),
    );
    for flag in args
        .iter()
        .filter(|a| a.starts_with("--") && !a.starts_with("--root"))
    {
        let flag = flag.split('=').next().unwrap();
        assert!(parsed.contains(flag), "{flag} is not an rbuild build flag");
    }
}
