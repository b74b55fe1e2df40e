//! One instruction at a time: expand what BuildKit expands, update the image config, and write
//! the history line in BuildKit's exact words (`ENV A=b`, `CMD ["sh" "-c" "x"]`,
//! `COPY a /b # buildkit`, `RUN |1 A=b /bin/sh -c x # buildkit`).

use std::time::Duration;

use super::args::PROXY_ARGS;
use super::dispatch::State;
use super::{CopyOp, Op, PlanError, RunOp, Source, Step};
use crate::dockerfile::Node;
use crate::dockerfile::instructions::{Healthcheck, Instruction, RunMount};
use crate::image::EmptyObject;

pub(crate) fn dispatch_one(
    st: &mut State<'_>,
    node: &Node,
    instr: &Instruction,
) -> Result<Step, PlanError> {
    let mut op = Op::Metadata;
    let created_by = match instr {
        Instruction::From(_) => return Err(PlanError::invalid(node, "FROM inside a stage")),
        Instruction::Env(pairs) => {
            let mut parts = Vec::new();
            let mut expanded = Vec::new();
            for (k, v) in pairs {
                let k = st.expand(node, k)?;
                let v = st.expand(node, v)?;
                parts.push(format!("{k}={v}"));
                expanded.push((k, v));
            }
            for (k, v) in expanded {
                set_env(&mut st.config.config.env, &k, &v);
            }
            format!("ENV {}", parts.join(" "))
        }
        Instruction::Label(pairs) => {
            let mut parts = Vec::new();
            for (k, v) in pairs {
                let k = st.expand(node, k)?;
                let v = st.expand(node, v)?;
                parts.push(format!("{k}={v}"));
                st.config.config.labels.insert(k, v);
            }
            format!("LABEL {}", parts.join(" "))
        }
        Instruction::Maintainer(m) => {
            st.config.author = Some(m.clone());
            format!("MAINTAINER {m}")
        }
        Instruction::Arg(a) => {
            let mut parts = Vec::new();
            for (k, default) in &a.args {
                let default = default.as_deref().map(|d| st.expand(node, d)).transpose()?;
                parts.push(match &default {
                    Some(d) => format!("{k}={d}"),
                    None => k.clone(),
                });
                let value = match args_override(st, k, default.is_some()) {
                    Some(v) => v,
                    None => default,
                };
                st.args.retain(|(name, _)| name != k);
                st.args.push((k.clone(), value));
            }
            format!("ARG {}", parts.join(" "))
        }
        Instruction::User(u) => {
            let u = st.expand(node, u)?;
            st.config.config.user = Some(u.clone());
            format!("USER {u}")
        }
        Instruction::Workdir(w) => {
            let w = st.expand(node, w)?;
            let path = normalize_workdir(&st.workdir(), &w);
            st.config.config.working_dir = Some(path.clone());
            if path != "/" {
                op = Op::Mkdir {
                    path: path.clone(),
                    user: st.config.config.user.clone().filter(|u| !u.is_empty()),
                };
            }
            format!("WORKDIR {path}")
        }
        Instruction::Expose(ports) => {
            let mut words = Vec::new();
            for p in ports {
                words.extend(st.expand(node, p)?.split_whitespace().map(str::to_string));
            }
            for w in &words {
                for spec in parse_port_spec(w).map_err(|m| PlanError::invalid(node, m))? {
                    st.config.config.exposed_ports.insert(spec, EmptyObject {});
                }
            }
            format!("EXPOSE {}", words.join(" "))
        }
        Instruction::Volume(vols) => {
            let mut out = Vec::new();
            for v in vols {
                let v = st.expand(node, v)?;
                if v.trim().is_empty() {
                    return Err(PlanError::invalid(
                        node,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                st.config.config.volumes.insert(v.clone(), EmptyObject {});
                out.push(v);
            }
            format!("VOLUME [{}]", out.join(" "))
        }
        Instruction::StopSignal(s) => {
            let s = st.expand(node, s)?;
            check_signal(&s).map_err(|m| PlanError::invalid(node, m))?;
            st.config.config.stop_signal = Some(s.clone());
            format!("STOPSIGNAL {s}")
        }
        Instruction::Shell(sh) => {
            st.config.config.shell = sh.clone();
            format!("SHELL [{}]", sh.join(" "))
        }
        Instruction::Onbuild(o) => {
            st.config.config.on_build.push(o.expression.clone());
            format!("ONBUILD {}", o.expression)
        }
        Instruction::Cmd(c) => {
            let argv = with_shell(st, &c.args, c.prepend_shell);
            st.config.config.cmd = Some(argv.clone());
            st.cmd_set = true;
            format!("CMD {}", go_quote_list(&argv))
        }
        Instruction::Entrypoint(c) => {
            let argv = with_shell(st, &c.args, c.prepend_shell);
            st.config.config.entrypoint = if argv.is_empty() {
                None
            } else {
                Some(argv.clone())
            };
            if !st.cmd_set {
                st.config.config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quote_list(&argv))
        }
        Instruction::Healthcheck(h) => {
            let hc = healthcheck_config(h);
            let msg = format!("HEALTHCHECK {}", go_quote_health(&hc));
            st.config.config.healthcheck = Some(hc);
            msg
        }
        Instruction::Copy(c) => {
            let from = match &c.from {
                Some(f) => {
                    let f = st.expand(node, f)?;
                    st.resolve_from(node, &f)?
                }
                None => Source::MainContext,
            };
            let dest = st.expand(node, &c.dest)?;
            let copy = CopyOp {
                add: false,
                from,
                sources: expand_all(st, node, &c.sources)?,
                heredocs: heredocs(st, node)?,
                dest: dest_path(&st.workdir(), &dest),
                chown: opt_expand(st, node, &c.chown)?,
                chmod: chmod(st, node, &c.chmod)?,
                link: c.link,
                parents: c.parents,
                excludes: expand_all(st, node, &c.excludes)?,
                checksum: None,
                keep_git_dir: false,
                unpack: None,
            };
            let msg = copy_message("COPY", &copy, &dest);
            op = Op::Copy(copy);
            msg
        }
        Instruction::Add(a) => {
            let dest = st.expand(node, &a.dest)?;
            let copy = CopyOp {
                add: true,
                from: Source::MainContext,
                sources: expand_all(st, node, &a.sources)?,
                heredocs: heredocs(st, node)?,
                dest: dest_path(&st.workdir(), &dest),
                chown: opt_expand(st, node, &a.chown)?,
                chmod: chmod(st, node, &a.chmod)?,
                link: a.link,
                parents: false,
                excludes: expand_all(st, node, &a.excludes)?,
                checksum: opt_expand(st, node, &a.checksum)?,
                keep_git_dir: a.keep_git_dir,
                unpack: a.unpack,
            };
            let msg = copy_message("ADD", &copy, &dest);
            op = Op::Copy(copy);
            msg
        }
        Instruction::Run(r) => {
            let argv = with_shell(st, &r.cmd.args, r.cmd.prepend_shell);
            let vars = st.vars();
            let escape = st.plan.escape;
            let mut mounts = Vec::new();
            let mut mount_sources = Vec::new();
            for spec in &r.mount_specs {
                let mut exp = |w: &str| super::expand::expand(w, &vars, escape);
                let m = RunMount::parse(spec, Some(&mut exp))
                    .map_err(|e| PlanError::invalid(node, e))?;
                mount_sources.push(match &m.from {
                    Some(f) => st.resolve_from(node, f)?,
                    None => Source::MainContext,
                });
                mounts.push(m);
            }
            let mut history_args = Vec::new();
            for (k, v) in &st.args {
                if PROXY_ARGS.contains(&k.as_str()) {
                    continue;
                }
                let env_value = vars.get(k).cloned();
                let value = env_value.or_else(|| v.clone()).unwrap_or_default();
                history_args.push(format!("{k}={value}"));
            }
            let mut parts = Vec::new();
            if !history_args.is_empty() {
                parts.push(format!("|{}", history_args.len()));
                parts.extend(history_args);
            }
            parts.extend(argv.iter().cloned());
            let run_heredocs: Vec<(String, String)> = node
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone()))
                .collect();
            let argv = if r.cmd.prepend_shell && !node.heredocs.is_empty() {
                with_shell(
                    st,
                    &[heredoc_script(&r.cmd.args.join(" "), &node.heredocs)],
                    true,
                )
            } else {
                argv
            };
            op = Op::Run(RunOp {
                argv,
                env: st.run_env(),
                cwd: st.workdir(),
                user: st.config.config.user.clone().filter(|u| !u.is_empty()),
                mounts,
                mount_sources,
                network: r.network,
                security: r.security,
                heredocs: run_heredocs,
            });
            format!("RUN {}", parts.join(" "))
        }
    };
    let layered = !matches!(op, Op::Metadata);
    let created_by = if matches!(op, Op::Copy(_) | Op::Run(_)) {
        format!("{created_by} # buildkit")
    } else {
        created_by
    };
    Ok(Step {
        line: node.start_line,
        instruction: instr.name().to_string(),
        op,
        created_by,
        empty_layer: !layered,
    })
}

fn args_override(st: &State<'_>, key: &str, has_default: bool) -> Option<Option<String>> {
    super::args::stage_arg_override(
        key,
        has_default,
        &st.plan.options.build_args,
        &st.plan.global_args,
        &st.predefined,
    )
}

fn expand_all(st: &State<'_>, node: &Node, words: &[String]) -> Result<Vec<String>, PlanError> {
    words.iter().map(|w| st.expand(node, w)).collect()
}

fn opt_expand(
    st: &State<'_>,
    node: &Node,
    w: &Option<String>,
) -> Result<Option<String>, PlanError> {
    w.as_deref().map(|w| st.expand(node, w)).transpose()
}

fn chmod(st: &State<'_>, node: &Node, w: &Option<String>) -> Result<Option<String>, PlanError> {
    let Some(m) = opt_expand(st, node, w)? else {
        return Ok(None);
    };
    crate::context::Chmod::parse(&m).map_err(|e| PlanError::invalid(node, e.to_string()))?;
    Ok(Some(m))
}

fn heredocs(st: &State<'_>, node: &Node) -> Result<Vec<(String, String)>, PlanError> {
    node.heredocs
        .iter()
        .map(|h| {
            let content = if h.expand {
                st.expand(node, &h.content)?
            } else {
                h.content.clone()
            };
            Ok((h.name.clone(), content))
        })
        .collect()
}

/// The shell script a heredoc RUN executes: a lone `<<EOF` runs the body itself as the script;
/// otherwise the command keeps its heredoc redirections and the shell feeds the bodies (the
/// shell, not the Dockerfile, expands variables in them, as with BuildKit).
fn heredoc_script(cmd: &str, heredocs: &[crate::dockerfile::Heredoc]) -> String {
    let lone = heredocs.len() == 1 && {
        let w = cmd.trim().trim_start_matches("<<").trim_start_matches('-');
        w.trim_matches(|c| c == '"' || c == '\'') == heredocs[0].name
    };
    if lone {
        return heredocs[0].content.clone();
    }
    let mut script = format!("{cmd}\n");
    for h in heredocs {
        script.push_str(&h.content);
        if !h.content.is_empty() && !h.content.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&h.name);
        script.push('\n');
    }
    script
}

/// BuildKit's COPY/ADD history: sources (heredocs as `<<NAME`) and the destination as written.
fn copy_message(name: &str, c: &CopyOp, dest: &str) -> String {
    let mut msg = name.to_string();
    for s in &c.sources {
        msg.push(' ');
        msg.push_str(s);
    }
    msg.push(' ');
    msg.push_str(dest);
    msg
}

fn with_shell(st: &State<'_>, args: &[String], prepend: bool) -> Vec<String> {
    if !prepend {
        return args.to_vec();
    }
    let mut argv = if st.config.config.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        st.config.config.shell.clone()
    };
    argv.extend(args.iter().cloned());
    argv
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |p| p.0) == key)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// Lexical `path.Clean` for absolute paths.
pub(crate) fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// BuildKit's `NormalizeWorkdir`: relative paths join the current one; the result is clean.
pub(crate) fn normalize_workdir(current: &str, new: &str) -> String {
    if new.starts_with('/') {
        clean_path(new)
    } else {
        clean_path(&format!("{current}/{new}"))
    }
}

/// COPY/ADD destination made absolute; a trailing `/` (or `.`) means "into this directory".
pub(crate) fn dest_path(workdir: &str, dest: &str) -> String {
    let abs = normalize_workdir(workdir, dest);
    let into_dir = dest.is_empty() || dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if into_dir && abs != "/" {
        format!("{abs}/")
    } else {
        abs
    }
}

/// docker's `nat.ParsePortSpec`: `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`...
pub(crate) fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {ports}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for containerPort: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "WINCH",
];

/// docker's `signal.ParseSignal`: a number, or a name with or without `SIG` (also `RTMIN+n`).
pub(crate) fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n == 0 {
            Err(format!("Invalid signal: {s}"))
        } else {
            Ok(())
        };
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
        Ok(())
    } else {
        Err(format!("Invalid signal: {s}"))
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn healthcheck_config(h: &Healthcheck) -> crate::image::Healthcheck {
    match h {
        Healthcheck::None => crate::image::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => crate::image::Healthcheck {
            test: test.clone(),
            interval: nanos(*interval),
            timeout: nanos(*timeout),
            start_period: nanos(*start_period),
            start_interval: nanos(*start_interval),
            retries: i64::from(*retries),
        },
    }
}

/// Go's `%q` of a string.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `Duration.String()`.
fn go_duration(n: i64) -> String {
    if n == 0 {
        return "0s".into();
    }
    let d = Duration::from_nanos(n.unsigned_abs());
    let total = d.as_secs_f64();
    if d < Duration::from_secs(1) {
        let ns = d.as_nanos();
        return if ns < 1_000 {
            format!("{ns}ns")
        } else if ns < 1_000_000 {
            format!("{}µs", trim_float(ns as f64 / 1e3))
        } else {
            format!("{}ms", trim_float(ns as f64 / 1e6))
        };
    }
    let h = (total / 3600.0).floor() as u64;
    let m = ((total - h as f64 * 3600.0) / 60.0).floor() as u64;
    let s = total - h as f64 * 3600.0 - m as f64 * 60.0;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_float(s)));
    out
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Go's `%q` of a `*container.HealthConfig`, as BuildKit writes it into history.
fn go_quote_health(h: &crate::image::Healthcheck) -> String {
    let retries = match h.retries {
        0 => "'\\x00'".to_string(),
        n @ 1..=31 => format!("'\\x{n:02x}'"),
        n => match char::from_u32(n as u32) {
            Some(c) if !c.is_control() => format!("'{c}'"),
            _ => format!("'\\x{n:02x}'"),
        },
    };
    format!(
        "&{{{} {} {} {} {} {}}}",
        go_quote_list(&h.test),
        go_quote(&go_duration(h.interval)),
        go_quote(&go_duration(h.timeout)),
        go_quote(&go_duration(h.start_period)),
        go_quote(&go_duration(h.start_interval)),
        retries
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_scripts() {
        let h = |name: &str, content: &str| crate::dockerfile::Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp: false,
            fd: 0,
        };
        assert_eq!(
            heredoc_script("<<EOF", &[h("EOF", "echo a\necho b\n")]),
            "echo a\necho b\n"
        );
        assert_eq!(
            heredoc_script("python3 <<PY", &[h("PY", "print(1)\n")]),
            "python3 <<PY\nprint(1)\nPY\n"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_workdir("/", "app"), "/app");
        assert_eq!(normalize_workdir("/app", "../x/./y/"), "/x/y");
        assert_eq!(normalize_workdir("/app", "/abs"), "/abs");
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "sub/"), "/app/sub/");
        assert_eq!(dest_path("/app", "f.txt"), "/app/f.txt");
        assert_eq!(dest_path("/", "/"), "/");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            parse_port_spec("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(parse_port_spec("x").is_err());
        assert!(parse_port_spec("80/foo").is_err());
    }

    #[test]
    fn signals() {
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("kill").is_ok());
        assert!(check_signal("9").is_ok());
        assert_eq!(
            check_signal("SIGFOO").unwrap_err(),
            "Invalid signal: SIGFOO"
        );
    }

    #[test]
    fn go_formatting() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\""]"#
        );
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        let h = crate::image::Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 3,
            ..Default::default()
        };
        assert_eq!(
            go_quote_health(&h),
            r#"&{["CMD-SHELL" "true"] "5s" "0s" "0s" "0s" '\x03'}"#
        );
    }
}
