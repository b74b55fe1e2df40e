//! Planner unit tests: stages, targets, ARG scoping, expansion and config/history changes.

use std::collections::BTreeMap;

use super::*;
use crate::image::ImageConfig;

struct Images(BTreeMap<String, ImageConfig>);

impl ImageResolver for Images {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let config = self
            .0
            .get(reference)
            .cloned()
            .ok_or_else(|| format!("image {reference} not found"))?;
        Ok(ResolvedImage {
            name: reference.to_string(),
            manifest_digest: None,
            config,
        })
    }
}

fn busybox() -> Images {
    let mut c = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    c.config.env = vec!["PATH=/bin".into(), "HOME=/root".into()];
    c.config.cmd = Some(vec!["sh".into()]);
    Images([("busybox".to_string(), c)].into())
}

fn no_trigger(_: &str) -> Result<crate::dockerfile::Node, String> {
    Err("unexpected trigger".into())
}

fn opts(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    let mut o = BuildOptions::host();
    o.target_platform = "linux/amd64".parse().unwrap();
    o.build_platform = "linux/amd64".parse().unwrap();
    o.build_args = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o.target = target.map(str::to_string);
    o
}

/// A plan of `text`; the parsed file is leaked so the plan that borrows it can be returned.
fn plan(text: &str, o: BuildOptions) -> Result<Plan<'static>, PlanError> {
    Plan::new(
        Box::leak(Box::new(crate::dockerfile::parse(text).unwrap())),
        o,
    )
}

fn target_dispatch(text: &str, o: BuildOptions) -> StageDispatch {
    let p = plan(text, o).unwrap();
    let mut d = p.dispatch(&busybox(), &no_trigger).unwrap();
    d.remove(&p.target).unwrap()
}

fn history(d: &StageDispatch) -> Vec<String> {
    d.config.history[d.first_new_history..]
        .iter()
        .map(|h| h.created_by.as_deref().unwrap().to_string())
        .collect()
}

#[test]
fn stages_target_and_pruning() {
    let text = "FROM busybox AS base\nFROM base AS build\nCOPY a /a\nFROM busybox AS other\nFROM scratch\nCOPY --from=build /a /a\n";
    let p = plan(text, opts(&[], None)).unwrap();
    assert_eq!(p.target, 3);
    assert_eq!(p.order, [0, 1, 3]);
    assert_eq!(p.stages[1].base, Source::Stage(0));
    assert_eq!(p.stages[3].base, Source::Scratch);
    let p = plan(text, opts(&[], Some("OTHER"))).unwrap();
    assert_eq!(p.order, [2]);
    let p = plan(text, opts(&[], Some("1"))).unwrap();
    assert_eq!(p.order, [0, 1]);
}

#[test]
fn unknown_target_suggests() {
    let e = plan("FROM busybox AS build\n", opts(&[], Some("biuld"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "target stage \"biuld\" could not be found (did you mean build?)"
    );
    let e = plan("FROM busybox AS build\n", opts(&[], Some("zzz"))).unwrap_err();
    assert_eq!(e.to_string(), "target stage \"zzz\" could not be found");
}

#[test]
fn forward_references_are_errors() {
    let e = plan(
        "FROM busybox\nCOPY --from=later /x /x\nFROM busybox AS later\n",
        opts(&[], None),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::ForwardReference {
                line: 2,
                defined_line: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = plan("FROM busybox AS a\nFROM busybox AS A\n", opts(&[], None)).unwrap_err();
    assert!(matches!(e, PlanError::DuplicateStage { .. }), "{e}");
    let e = plan("RUN x\nFROM busybox\n", opts(&[], None)).unwrap_err();
    assert!(matches!(e, PlanError::BeforeFrom { line: 1, .. }), "{e}");
}

#[test]
fn global_args_only_in_from_unless_redeclared() {
    let text = "ARG IMG=busybox\nARG V=1\nFROM $IMG\nENV A=${V}x\nARG V\nENV B=${V}y\n";
    let d = target_dispatch(text, opts(&[], None));
    assert!(d.config.config.env.contains(&"A=x".to_string()));
    assert!(d.config.config.env.contains(&"B=1y".to_string()));
    let d = target_dispatch(text, opts(&[("V", "9")], None));
    assert!(d.config.config.env.contains(&"B=9y".to_string()));
    assert_eq!(history(&d), ["ENV A=x", "ARG V", "ENV B=9y"]);
}

#[test]
fn stage_arg_defaults_and_overrides() {
    let text = "FROM busybox\nARG A=def\nARG B=${A}-b\nLABEL a=$A b=$B\n";
    let d = target_dispatch(text, opts(&[], None));
    assert_eq!(d.config.config.labels["a"], "def");
    assert_eq!(d.config.config.labels["b"], "def-b");
    let d = target_dispatch(text, opts(&[("A", "cli")], None));
    assert_eq!(d.config.config.labels["b"], "cli-b");
    assert_eq!(
        history(&d),
        ["ARG A=def", "ARG B=cli-b", "LABEL a=cli b=cli-b"]
    );
}

#[test]
fn env_overrides_arg_and_env_sees_previous_values() {
    let text =
        "FROM busybox\nARG X=arg\nENV X=env\nLABEL x=$X\nENV abc=hello\nENV abc=bye def=$abc\n";
    let d = target_dispatch(text, opts(&[], None));
    assert_eq!(d.config.config.labels["x"], "env");
    assert!(d.config.config.env.contains(&"def=hello".to_string()));
    assert!(d.config.config.env.contains(&"abc=bye".to_string()));
}

#[test]
fn predefined_args_need_declaration_in_stage() {
    let text = "FROM busybox\nLABEL a=x$TARGETARCH\nARG TARGETARCH\nLABEL b=$TARGETARCH\n";
    let d = target_dispatch(text, opts(&[], None));
    assert_eq!(d.config.config.labels["a"], "x");
    assert_eq!(d.config.config.labels["b"], "amd64");
    let p = plan("ARG TAG=${BUILDARCH}\nFROM busybox:$TAG\n", opts(&[], None)).unwrap();
    assert_eq!(p.stages[0].base, Source::Image("busybox:amd64".into()));
}

#[test]
fn run_history_lists_args_but_not_proxies() {
    let text = "FROM busybox\nARG A=1\nARG http_proxy\nRUN echo hi\n";
    let p = plan(
        text,
        opts(
            &[("http_proxy", "http://p"), ("HTTPS_PROXY", "http://q")],
            None,
        ),
    )
    .unwrap();
    let d = p
        .dispatch(&busybox(), &no_trigger)
        .unwrap()
        .remove(&0)
        .unwrap();
    let last = d.steps.last().unwrap();
    assert_eq!(
        &*last.created_by,
        "RUN |1 A=1 /bin/sh -c echo hi # buildkit"
    );
    let Op::Run(r) = &last.op else { panic!() };
    assert!(r.env.contains("A=1"));
    assert!(r.env.contains("http_proxy=http://p"));
    assert!(r.env.contains("HTTPS_PROXY=http://q"));
    assert!(p.unused_build_args().is_empty());
}

#[test]
fn a_redeclared_arg_reaches_run_once_with_its_last_value() {
    let d = target_dispatch(
        "FROM busybox\nARG A=1\nARG B=b\nARG A=2\nRUN echo $A\n",
        opts(&[], None),
    );
    let Op::Run(r) = &d.steps.last().unwrap().op else {
        panic!()
    };
    let a: Vec<&str> = r.env.iter().filter(|e| e.starts_with("A=")).collect();
    assert_eq!(a, ["A=2"]);
    assert!(r.env.contains("B=b"));
}

#[test]
fn unused_build_args_are_reported() {
    let p = plan(
        "FROM busybox\nARG USED\n",
        opts(&[("USED", "1"), ("NOPE", "2")], None),
    )
    .unwrap();
    assert_eq!(p.unused_build_args(), ["NOPE"]);
}

#[test]
fn metadata_config_and_history() {
    let text = "FROM busybox\nWORKDIR app\nWORKDIR sub\nUSER 1000:1000\nEXPOSE 8080 53/udp\nVOLUME /data\n\
STOPSIGNAL SIGINT\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nMAINTAINER me\nONBUILD COPY . /x\n\
HEALTHCHECK --interval=5s CMD true\n";
    let d = target_dispatch(text, opts(&[], None));
    let c = &d.config.config;
    assert_eq!(c.working_dir.as_deref(), Some("/app/sub"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert!(c.exposed_ports.contains_key("8080/tcp") && c.exposed_ports.contains_key("53/udp"));
    assert!(c.volumes.contains_key("/data"));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(c.cmd.as_ref().unwrap(), &["/bin/bash", "-c", "echo hi"]);
    assert_eq!(d.config.author.as_deref(), Some("me"));
    assert_eq!(c.on_build, ["COPY . /x"]);
    assert_eq!(c.healthcheck.as_ref().unwrap().interval, 5_000_000_000);
    assert_eq!(
        history(&d),
        [
            "WORKDIR /app",
            "WORKDIR /app/sub",
            "USER 1000:1000",
            "EXPOSE 53/udp 8080",
            "VOLUME [/data]",
            "STOPSIGNAL SIGINT",
            "SHELL [/bin/bash -c]",
            "CMD [\"/bin/bash\" \"-c\" \"echo hi\"]",
            "MAINTAINER me",
            "ONBUILD COPY . /x",
            "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"5s\" \"0s\" \"0s\" \"0s\" '\\x00'}",
        ]
    );
    assert!(matches!(d.steps[0].op, Op::Mkdir { ref path, .. } if path == "/app"));
    assert!(!d.steps[0].empty_layer);
    assert!(d.steps[2].empty_layer);
}

#[test]
fn entrypoint_resets_inherited_cmd_but_not_own() {
    let d = target_dispatch("FROM busybox\nENTRYPOINT [\"/app\"]\n", opts(&[], None));
    assert_eq!(d.config.config.cmd, None);
    assert_eq!(d.config.config.entrypoint.as_ref().unwrap(), &["/app"]);
    let d = target_dispatch(
        "FROM busybox\nCMD [\"x\"]\nENTRYPOINT [\"/app\"]\n",
        opts(&[], None),
    );
    assert_eq!(d.config.config.cmd.as_ref().unwrap(), &["x"]);
}

#[test]
fn copy_ops_are_expanded_and_resolved() {
    let text = "FROM busybox AS build\nFROM scratch\nARG D=/out\nWORKDIR /w\nCOPY --from=build --chmod=0644 --chown=1:1 a b $D/\nCOPY c .\nADD --checksum=sha256:00 https://x/y ./y\n";
    let d = target_dispatch(text, opts(&[], None));
    let copies: Vec<&CopyOp> = d
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::Copy(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(copies[0].from, Source::Stage(0));
    assert_eq!(copies[0].dest, "/out/");
    assert_eq!(copies[0].chmod.as_deref(), Some("0644"));
    assert_eq!(copies[1].from, Source::MainContext);
    assert_eq!(copies[1].dest, "/w/");
    assert!(copies[2].add);
    assert_eq!(copies[2].dest, "/w/y");
    assert_eq!(history(&d)[2], "COPY a b /out/ # buildkit");
    assert_eq!(history(&d)[3], "COPY c . # buildkit");
    assert_eq!(
        d.config.config.env,
        [format!("PATH={}", dispatch::DEFAULT_PATH)]
    );
}

#[test]
fn scratch_config_defaults() {
    let d = target_dispatch("FROM scratch\nLABEL a=b\n", opts(&[], None));
    assert_eq!(d.config.config.working_dir.as_deref(), Some("/"));
    assert_eq!(d.config.architecture, "amd64");
    assert!(
        d.config
            .history
            .iter()
            .all(|h| h.comment.as_deref() == Some("buildkit.dockerfile.v0"))
    );
}

#[test]
fn onbuild_triggers_run_first_when_building_from_image() {
    let mut imgs = busybox();
    imgs.0.get_mut("busybox").unwrap().config.on_build = vec!["LABEL from=trigger".into()];
    let p = plan("FROM busybox\nLABEL own=1\n", opts(&[], None)).unwrap();
    let d = p
        .dispatch(&imgs, &super::parse_trigger)
        .unwrap()
        .remove(&0)
        .unwrap();
    assert_eq!(history(&d), ["LABEL from=trigger", "LABEL own=1"]);
    assert!(d.config.config.on_build.is_empty());
}

#[test]
fn invalid_values_name_the_line() {
    let p = plan("FROM busybox\nEXPOSE abc\n", opts(&[], None)).unwrap();
    let e = p.dispatch(&busybox(), &no_trigger).unwrap_err();
    assert_eq!(e.to_string(), "line 2: EXPOSE: invalid containerPort: abc");
    let p = plan("FROM nothere\n", opts(&[], None)).unwrap();
    let e = p.dispatch(&busybox(), &no_trigger).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: FROM nothere: image nothere not found"
    );
}

#[test]
fn dry_run_render_lists_order_and_deps() {
    let p = plan(
        "FROM busybox AS a\nFROM busybox AS b\nFROM scratch\nCOPY --from=a /x /x\n",
        opts(&[], None),
    )
    .unwrap();
    let text = p.render(None);
    assert!(text.contains("order: a -> 2"), "{text}");
    assert!(text.contains("skipped: b"), "{text}");
    assert!(text.contains("needs: a"), "{text}");
}

#[test]
fn stage_args_do_not_leak_between_stages() {
    let text = "FROM busybox AS one\nARG A=1\nLABEL a=$A\nFROM busybox AS two\nLABEL a=x$A\n";
    let p = plan(text, opts(&[], Some("two"))).unwrap();
    let d = p.dispatch(&busybox(), &no_trigger).unwrap();
    assert_eq!(d[&1].config.config.labels["a"], "x");
}

#[test]
fn child_stage_inherits_env_but_not_args() {
    let text = "FROM busybox AS one\nARG A=1\nENV E=$A\nFROM one\nLABEL e=$E a=x$A\n";
    let d = target_dispatch(text, opts(&[], None));
    assert_eq!(d.config.config.labels["e"], "1");
    assert_eq!(d.config.config.labels["a"], "x");
}

#[test]
fn declared_arg_without_value_is_empty_and_history_shows_it() {
    let text = "FROM busybox\nARG NOVAL\nRUN echo $NOVAL\n";
    let d = target_dispatch(text, opts(&[], None));
    assert_eq!(
        history(&d)[1],
        "RUN |1 NOVAL= /bin/sh -c echo $NOVAL # buildkit"
    );
    let Op::Run(r) = &d.steps[1].op else { panic!() };
    assert!(!r.env.iter().any(|e| e.starts_with("NOVAL=")));
}

#[test]
fn build_arg_for_undeclared_name_is_invisible() {
    let d = target_dispatch(
        "FROM busybox\nLABEL v=x$SECRET\n",
        opts(&[("SECRET", "s")], None),
    );
    assert_eq!(d.config.config.labels["v"], "x");
}

#[test]
fn global_arg_override_reaches_from_and_redeclaration() {
    let text = "ARG TAG=1\nFROM busybox:$TAG AS b\nARG TAG\nLABEL t=$TAG\n";
    let p = plan(text, opts(&[("TAG", "2")], None)).unwrap();
    assert_eq!(p.stages[0].base, Source::Image("busybox:2".into()));
    let mut imgs = busybox();
    let c = imgs.0["busybox"].clone();
    imgs.0.insert("busybox:2".into(), c);
    let d = p.dispatch(&imgs, &no_trigger).unwrap();
    assert_eq!(d[&0].config.config.labels["t"], "2");
}

#[test]
fn from_platform_flag_expands_with_predefined_args() {
    let p = plan("FROM --platform=$BUILDPLATFORM busybox\n", opts(&[], None)).unwrap();
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
}

#[test]
fn run_mount_values_expand_and_from_resolves_to_a_stage() {
    let text = "FROM busybox AS src\nFROM busybox\nARG DIR=/cache\nRUN --mount=type=cache,target=$DIR --mount=from=src,target=/s true\n";
    let d = target_dispatch(text, opts(&[], None));
    let Op::Run(r) = &d.steps[1].op else { panic!() };
    assert_eq!(r.mounts[0].target.as_deref(), Some("/cache"));
    assert_eq!(r.mount_sources, [Source::MainContext, Source::Stage(0)]);
}

#[test]
fn workdir_is_relative_to_previous_and_expands_env() {
    let d = target_dispatch(
        "FROM busybox\nENV BASE=/srv\nWORKDIR $BASE\nWORKDIR app/../web\n",
        opts(&[], None),
    );
    assert_eq!(d.config.config.working_dir.as_deref(), Some("/srv/web"));
}

#[test]
fn copy_from_unknown_name_is_an_image() {
    let d = target_dispatch(
        "FROM busybox\nCOPY --from=nginx:1 /etc/nginx /etc/nginx\n",
        opts(&[], None),
    );
    let Op::Copy(c) = &d.steps[0].op else {
        panic!()
    };
    assert_eq!(c.from, Source::Image("nginx:1".into()));
}

#[test]
fn named_contexts_replace_images_and_stages() {
    let mut o = opts(&[], None);
    o.context_images.insert("base".into(), "busybox".into());
    o.named_contexts.insert("assets".into());
    let p = plan("FROM base\nCOPY --from=assets /x /x\n", o).unwrap();
    assert_eq!(p.stages[0].base, Source::Image("busybox".into()));
    let d = p.dispatch(&busybox(), &no_trigger).unwrap();
    let Op::Copy(c) = &d[&0].steps[0].op else {
        panic!()
    };
    assert_eq!(c.from, Source::Context("assets".into()));
}

#[test]
fn run_environment_is_shared_until_env_or_arg_changes() {
    let d = target_dispatch(
        "FROM busybox\nRUN a\nRUN b\nENV X=1\nRUN c\nARG Y=2\nRUN d\nUSER u\nRUN e\n",
        opts(&[], None),
    );
    let runs: Vec<&RunOp> = d
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::Run(r) => Some(r),
            _ => None,
        })
        .collect();
    let envs: Vec<&std::sync::Arc<super::RunEnv>> = runs.iter().map(|r| &r.env).collect();
    assert_eq!(envs.len(), 5);
    assert!(std::sync::Arc::ptr_eq(envs[0], envs[1]));
    assert_eq!(
        envs[1].iter().collect::<Vec<_>>(),
        ["PATH=/bin", "HOME=/root"]
    );
    assert_eq!(
        envs[2].iter().collect::<Vec<_>>(),
        ["PATH=/bin", "HOME=/root", "X=1"]
    );
    assert_eq!(
        envs[3].iter().collect::<Vec<_>>(),
        ["PATH=/bin", "HOME=/root", "X=1", "Y=2"]
    );
    // USER does not change the environment, so the last two RUNs share it.
    assert!(std::sync::Arc::ptr_eq(envs[3], envs[4]));
    // Serialized exactly as a list (cache keys are computed from the serialized op).
    assert_eq!(
        serde_json::to_value(runs[2]).unwrap()["env"],
        serde_json::json!(["PATH=/bin", "HOME=/root", "X=1"])
    );
}

#[test]
fn environment_entries_match_by_whole_key() {
    use super::dispatch::env_value;
    assert_eq!(env_value("PATH=/bin", "PATH"), Some("/bin"));
    assert_eq!(env_value("A=b=c", "A"), Some("b=c"));
    assert_eq!(env_value("A=", "A"), Some(""));
    assert_eq!(env_value("A", "A"), Some(""));
    assert_eq!(env_value("AB=1", "A"), None);
    assert_eq!(env_value("A=1", "AB"), None);
    assert_eq!(env_value("B=1", "A"), None);
    assert_eq!(env_value("", "A"), None);
}
