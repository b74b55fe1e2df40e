//! One instruction at a time: expand what BuildKit expands, update the image config, and write
//! the history line in BuildKit's exact words (`ENV A=b`, `CMD ["sh" "-c" "x"]`,
//! `COPY a /b # buildkit`, `RUN |1 A=b /bin/sh -c x # buildkit`).

use super::args::PROXY_ARGS;
use super::dispatch::State;
use super::values::{
    check_signal, dest_path, go_quote_health, go_quote_list, healthcheck_config, normalize_workdir,
    parse_port_spec,
};
use super::{CopyOp, Op, PlanError, RunOp, Source, Step};
use crate::dockerfile::instructions::{Instruction, RunMount};
use crate::dockerfile::{Node, VarLookup};
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
            let escape = st.plan.escape;
            let mut mounts = Vec::new();
            let mut mount_sources = Vec::new();
            for (i, spec) in r.mount_specs.iter().enumerate() {
                // A spec with no `$`, quote or escape character expands to itself, so the
                // mount parsed with the instruction is already the answer.
                let plain = !spec
                    .chars()
                    .any(|c| c == '$' || c == '\'' || c == '"' || c == escape);
                let m = match r.mounts.get(i) {
                    Some(m) if plain => m.clone(),
                    _ => {
                        let mut exp = |w: &str| super::expand::expand(w, st, escape);
                        RunMount::parse(spec, Some(&mut exp))
                            .map_err(|e| PlanError::invalid(node, e))?
                    }
                };
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
                let env_value = VarLookup::get(st, k);
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
    let mut created_by = created_by;
    if matches!(op, Op::Copy(_) | Op::Run(_)) {
        created_by.push_str(" # buildkit");
    }
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
}
