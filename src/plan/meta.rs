//! One instruction at a time: expand what BuildKit expands, update the image config, and write
//! the history line in BuildKit's exact words (`ENV A=b`, `CMD ["sh" "-c" "x"]`,
//! `COPY a /b # buildkit`, `RUN |1 A=b /bin/sh -c x # buildkit`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use super::args::PROXY_ARGS;
use super::dispatch::State;
use super::values::{
    check_signal, dest_path, go_quote_health, go_quote_list, healthcheck_config, normalize_workdir,
    parse_port_spec,
};
use super::{CopyOp, Op, PlanError, RunOp, Source, Step};
use crate::dockerfile::Node;
use crate::dockerfile::instructions::{Instruction, RunMount};
use crate::image::EmptyObject;

/// What COPY and RUN history lines end with.
const BUILDKIT_SUFFIX: &str = " # buildkit";

/// A history line under construction: `NAME` then space-separated parts, in one buffer (the
/// parts used to be formatted one by one and joined, a few allocations per step).
struct History {
    line: String,
    empty: bool,
}

impl History {
    /// Starts a line in `buf` (the stage's reused buffer, taken with [`State::history_buf`]).
    /// `capacity`: about how long the parts will be.
    fn new(mut line: String, name: &str, capacity: usize) -> History {
        line.clear();
        line.reserve(name.len() + 1 + capacity + BUILDKIT_SUFFIX.len());
        line.push_str(name);
        History { line, empty: true }
    }

    /// Appends `w` as one part.
    fn word(&mut self, w: &str) {
        self.line.push(' ');
        self.line.push_str(w);
        self.empty = false;
    }

    /// Appends `k=v` as one part.
    fn pair(&mut self, k: &str, v: &str) {
        self.word(k);
        self.line.push('=');
        self.line.push_str(v);
    }

    /// The line; with no parts it is `NAME ` (as joining nothing after a space gave).
    fn finish(mut self) -> String {
        if self.empty {
            self.line.push(' ');
        }
        self.line
    }
}

pub(crate) fn dispatch_one(
    st: &mut State<'_>,
    node: &Node,
    instr: &Instruction,
) -> Result<Step, PlanError> {
    let mut op = Op::Metadata;
    let created_by = match instr {
        Instruction::From(_) => return Err(PlanError::invalid(node, "FROM inside a stage")),
        Instruction::Env(pairs) => {
            // Every value is expanded before any is set: one ENV line does not see its own
            // earlier pairs (BuildKit's rule).
            let mut expanded = Vec::with_capacity(pairs.len());
            let mut h = History::new(std::mem::take(&mut st.history_buf), "ENV", 16 * pairs.len());
            for (k, v) in pairs {
                let k = st.expand_cow(node, k)?;
                let v = st.expand_cow(node, v)?;
                h.pair(&k, &v);
                expanded.push((k, v));
            }
            for (k, v) in expanded {
                set_env(&mut st.config.config.env, &k, &v);
            }
            st.env_changed();
            h.finish()
        }
        Instruction::Label(pairs) => {
            let mut h = History::new(
                std::mem::take(&mut st.history_buf),
                "LABEL",
                32 * pairs.len(),
            );
            for (k, v) in pairs {
                let k = st.expand(node, k)?;
                let v = st.expand(node, v)?;
                h.pair(&k, &v);
                st.config.config.labels.insert(k, v);
            }
            h.finish()
        }
        Instruction::Maintainer(m) => {
            st.config.author = Some(m.to_string());
            format!("MAINTAINER {m}")
        }
        Instruction::Arg(a) => {
            let mut h = History::new(
                std::mem::take(&mut st.history_buf),
                "ARG",
                16 * a.args.len(),
            );
            for (k, default) in &a.args {
                let default = default.as_deref().map(|d| st.expand(node, d)).transpose()?;
                match &default {
                    Some(d) => h.pair(k, d),
                    None => h.word(k),
                }
                let value = match args_override(st, k, default.is_some()) {
                    Some(v) => v,
                    None => default,
                };
                st.args.retain(|(name, _)| name != k);
                st.args.push((k.to_string(), value));
            }
            st.env_changed();
            h.finish()
        }
        Instruction::User(u) => {
            let u = st.expand(node, u)?;
            let msg = format!("USER {u}");
            st.config.config.user = Some(u);
            msg
        }
        Instruction::Workdir(w) => {
            let w = st.expand_cow(node, w)?;
            let path = normalize_workdir(st.workdir(), &w);
            let msg = format!("WORKDIR {path}");
            if path != "/" {
                op = Op::Mkdir {
                    path: path.clone(),
                    user: st.config.config.user.clone().filter(|u| !u.is_empty()),
                };
            }
            st.config.config.working_dir = Some(path);
            msg
        }
        Instruction::Expose(ports) => {
            let mut h = History::new(
                std::mem::take(&mut st.history_buf),
                "EXPOSE",
                8 * ports.len(),
            );
            for p in ports {
                let expanded = st.expand_cow(node, p)?;
                for w in expanded.split_whitespace() {
                    h.word(w);
                    for spec in parse_port_spec(w).map_err(|m| PlanError::invalid(node, m))? {
                        st.config.config.exposed_ports.insert(spec, EmptyObject {});
                    }
                }
            }
            h.finish()
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
            let msg = format!("STOPSIGNAL {s}");
            st.config.config.stop_signal = Some(s);
            msg
        }
        Instruction::Shell(sh) => {
            st.config.config.shell = sh.iter().map(|s| s.to_string()).collect();
            format!("SHELL [{}]", sh.join(" "))
        }
        Instruction::Onbuild(o) => {
            st.config.config.on_build.push(o.expression.to_string());
            format!("ONBUILD {}", o.expression)
        }
        Instruction::Cmd(c) => {
            let argv = with_shell(st, &c.args, c.prepend_shell);
            let msg = format!("CMD {}", go_quote_list(&argv));
            st.config.config.cmd = Some(argv);
            st.cmd_set = true;
            msg
        }
        Instruction::Entrypoint(c) => {
            let argv = with_shell(st, &c.args, c.prepend_shell);
            let msg = format!("ENTRYPOINT {}", go_quote_list(&argv));
            st.config.config.entrypoint = if argv.is_empty() { None } else { Some(argv) };
            if !st.cmd_set {
                st.config.config.cmd = None;
            }
            msg
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
                    let f = st.expand_cow(node, f)?;
                    st.resolve_from(node, &f)?
                }
                None => Source::MainContext,
            };
            let dest = st.expand_cow(node, c.dest)?;
            let copy = CopyOp {
                add: false,
                from,
                sources: expand_all(st, node, &c.sources)?,
                heredocs: heredocs(st, node)?,
                dest: dest_path(st.workdir(), &dest),
                chown: opt_expand(st, node, c.chown)?,
                chmod: chmod(st, node, c.chmod)?,
                link: c.link,
                parents: c.parents,
                excludes: expand_all(st, node, &c.excludes)?,
                checksum: None,
                keep_git_dir: false,
                unpack: None,
            };
            let msg = copy_message(st, "COPY", &copy, &dest);
            op = Op::Copy(copy);
            msg
        }
        Instruction::Add(a) => {
            let dest = st.expand_cow(node, a.dest)?;
            let copy = CopyOp {
                add: true,
                from: Source::MainContext,
                sources: expand_all(st, node, &a.sources)?,
                heredocs: heredocs(st, node)?,
                dest: dest_path(st.workdir(), &dest),
                chown: opt_expand(st, node, a.chown)?,
                chmod: chmod(st, node, a.chmod)?,
                link: a.link,
                parents: false,
                excludes: expand_all(st, node, &a.excludes)?,
                checksum: opt_expand(st, node, a.checksum)?,
                keep_git_dir: a.keep_git_dir,
                unpack: a.unpack,
            };
            let msg = copy_message(st, "ADD", &copy, &dest);
            op = Op::Copy(copy);
            msg
        }
        Instruction::Run(r) => {
            let argv = with_shell(st, &r.cmd.args, r.cmd.prepend_shell);
            let escape = st.plan.escape;
            let mut mounts = Vec::with_capacity(r.mount_specs.len());
            let mut mount_sources = Vec::with_capacity(r.mount_specs.len());
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
            // `RUN |N A=1 B=2 argv...`: the stage's ARGs (proxies left out) with their values
            // as the command sees them (ENV wins over ARG).
            let history_args = || {
                st.args
                    .iter()
                    .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            };
            let args_len: usize = history_args().map(|(k, _)| k.len() + 16).sum();
            let argv_len: usize = argv.iter().map(|a| a.len() + 1).sum();
            let mut h = History::new(
                std::mem::take(&mut st.history_buf),
                "RUN",
                4 + args_len + argv_len,
            );
            let n = history_args().count();
            if n > 0 {
                let _ = write!(h.line, " |{n}");
                h.empty = false;
                for (k, v) in history_args() {
                    let value = st.var(k).or(v.as_deref()).unwrap_or_default();
                    h.pair(k, value);
                }
            }
            for a in &argv {
                h.word(a);
            }
            let run_heredocs: Vec<(String, String)> = node
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone()))
                .collect();
            let argv = if r.cmd.prepend_shell && !node.heredocs.is_empty() {
                with_shell(
                    st,
                    &[Cow::Owned(heredoc_script(
                        &r.cmd.args.join(" "),
                        &node.heredocs,
                    ))],
                    true,
                )
            } else {
                argv
            };
            op = Op::Run(RunOp {
                argv,
                env: st.shared_run_env(),
                cwd: st.workdir().to_string(),
                user: st.config.config.user.clone().filter(|u| !u.is_empty()),
                mounts,
                mount_sources,
                network: r.network,
                security: r.security,
                heredocs: run_heredocs,
            });
            h.finish()
        }
    };
    let layered = !matches!(op, Op::Metadata);
    let mut line = created_by;
    if matches!(op, Op::Copy(_) | Op::Run(_)) {
        line.push_str(BUILDKIT_SUFFIX);
    }
    let created_by: Arc<str> = Arc::from(line.as_str());
    if line.capacity() > st.history_buf.capacity() {
        st.history_buf = line;
    }
    Ok(Step {
        line: node.start_line,
        instruction: instr.name(),
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
        st.predefined,
    )
}

fn expand_all(st: &State<'_>, node: &Node, words: &[&str]) -> Result<Vec<String>, PlanError> {
    words.iter().map(|w| st.expand(node, w)).collect()
}

fn opt_expand(st: &State<'_>, node: &Node, w: Option<&str>) -> Result<Option<String>, PlanError> {
    w.map(|w| st.expand(node, w)).transpose()
}

fn chmod(st: &State<'_>, node: &Node, w: Option<&str>) -> Result<Option<String>, PlanError> {
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
fn copy_message(st: &mut State<'_>, name: &str, c: &CopyOp, dest: &str) -> String {
    let len: usize = c.sources.iter().map(|s| s.len() + 1).sum();
    let mut h = History::new(std::mem::take(&mut st.history_buf), name, len + dest.len());
    for s in &c.sources {
        h.word(s);
    }
    h.word(dest);
    h.finish()
}

fn with_shell(st: &State<'_>, args: &[Cow<'_, str>], prepend: bool) -> Vec<String> {
    if !prepend {
        return args.iter().map(|a| a.to_string()).collect();
    }
    let mut argv = if st.config.config.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        st.config.config.shell.clone()
    };
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let mut entry = String::with_capacity(key.len() + 1 + value.len());
    entry.push_str(key);
    entry.push('=');
    entry.push_str(value);
    // The entry whose key (text up to its first `=`) is `key`.
    let plain_key = !key.contains('=');
    let same_key = |e: &String| {
        if plain_key {
            super::dispatch::env_value(e, key).is_some()
        } else {
            e == key
        }
    };
    match env.iter_mut().find(|e| same_key(e)) {
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
